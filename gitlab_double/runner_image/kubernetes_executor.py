"""The gitlab-runner DOUBLE's Kubernetes executor: each job becomes a job pod created through the
API from the runner's ``[runners.kubernetes]`` table. This is not gitlab-runner; it follows
gitlab-runner v17.11.3 (the double's default version, entrypoint.py) wherever AutoGit depends on
it and is at least as strict. The pod is built by the pure ``job_pod``; ``run_job_pod`` drives
the API server with kubernetes_asyncio. Each rule names the upstream file it comes from:

- the API server (executors/kubernetes/util.go getKubeClientConfig): ``host`` (with
  ``bearer_token``, ``ca_file``, and ``cert_file`` only with ``key_file`` and ``ca_file``), else
  the in-cluster configuration, else the default kubeconfig (guessClientConfig);
- the pod (kubernetes.go preparePodConfig): named ``runner-<short token>-project-<id>-concurrent-0``
  made RFC 1123 (helpers/dns/utils.go MakeRFC1123Compatible) plus ``-`` and 8 random characters of
  ``[a-z0-9]``, cut to 63 (generateNameForK8sResources); in ``namespace``; ``restartPolicy: Never``;
  ``serviceAccountName`` from ``service_account``; ``nodeSelector``; ``node_tolerations`` as
  tolerations (``"key=value" = "Effect"`` is Equal, a bare key Exists: getPodTolerations);
  ``affinity`` (common/config.go KubernetesAffinity, its snake_case keys as the API's camelCase);
  ``pod_termination_grace_period_seconds``; containers ``build`` (the job's image, else ``image``)
  then ``helper`` (``helper_image``, else registry.gitlab.com's gitlab-runner-helper of the
  version: getHelperImage); the ``repo`` emptyDir at the builds dir (getVolumes);
- labels (buildLabels): ``pod``, ``project.runner.gitlab.com/{id,namespace-id,name,namespace,
  root-namespace}``, ``job.runner.gitlab.com/pod``, ``manager.runner.gitlab.com/{name,id-short}``,
  every value through sanitizeLabel (util.go: characters outside ``[A-Za-z0-9._-]`` become ``_``,
  the ends trimmed of ``-_.``, cut to 63, trimmed again); ``pod_labels`` are added with their
  values' variables expanded, except keys in the runner.gitlab.com namespace, which are never
  overwritten (runnerLabelNamespacePattern);
- annotations (createPodConfigPrepareOpts): ``job.runner.gitlab.com/{id,url,sha,before_sha,ref,
  name,timeout}`` and ``project.runner.gitlab.com/id``, then ``pod_annotations`` (expanded) over them;
- the build container's resources (util.go createResourceList): ``cpu_request``/``cpu_limit``,
  ``memory_*``, ``ephemeral_storage_*``, each a resource.Quantity (an invalid one fails the job);
  its securityContext: ``privileged``, ``allow_privilege_escalation`` and NET_RAW dropped
  (defaultCapDrop); ``pull_policy`` (``always``, ``if-not-present``, ``never``: the pod's
  imagePullPolicy, internal/pull);
- ``pod_spec`` patches (kubernetes.go setupBuildPod, applyPodSpecMerge, doPodSpecMerge;
  common/config.go KubernetesPodSpec.PodSpecPatch): applied in order to the generated pod spec ONLY
  when the feature flag FF_USE_ADVANCED_POD_SPEC_CONFIGURATION is on (helpers/featureflags/flags.go,
  default off; common/build_settings.go populateFeatureFlags: the runner's ``feature_flags``
  first, else a job variable strconv.ParseBool reads); otherwise they are ignored, as by
  gitlab-runner. ``patch`` or ``patch_path`` (both: refused), YAML or JSON; ``patch_type``
  ``strategic`` (the default), ``merge`` (RFC 7386) or ``json`` (RFC 6902); another type fails
  the job ("unsupported patch type");
- the job's end: the job pod is deleted after the job whatever happened (cleanupResources).

Where the double differs, it is to keep what gitlab-runner keeps secret out of the pod spec: the
real executor attaches to the build and helper containers and writes each stage's script to them;
this double puts the stages' scripts (with the job's variables, which hold its token) in a Secret
owned by the pod and mounted at /scripts, and the containers run them (the helper gets the sources
first; the build container waits for it). The helper supports GIT_STRATEGY none or a git clone
(the helper image then needs git). Services are not modelled (a job with services fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import yaml

RUNNER_NS = "runner.gitlab.com"
POD_SPEC_FLAG = "FF_USE_ADVANCED_POD_SPEC_CONFIGURATION"
BUILD, HELPER = "build", "helper"
BUILDS_DIR = "/builds"
SCRIPTS_DIR = "/scripts"
NAME_SUFFIX_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"  # kubernetes.go chars
POLL_INTERVAL_S, POLL_TIMEOUT_S = 3, 180  # common/consts.go KubernetesPollInterval, KubernetesPollTimeout
PULL_POLICIES = {"always": "Always", "if-not-present": "IfNotPresent", "never": "Never"}  # internal/pull
_RUNNER_NS_KEY = re.compile(r"(?i)(^|.*\.)" + re.escape(RUNNER_NS) + r"(/.*|$)")  # runnerLabelNamespacePattern
# resource.Quantity's grammar (k8s.io/apimachinery/pkg/api/resource/quantity.go ParseQuantity)
_QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)((Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE][+-]?\d+)?$")


class ExecutorProblem(ValueError):
    """What gitlab-runner's Kubernetes executor refuses: the job fails (runner_system_failure)."""


# --- small rules --------------------------------------------------------------------------------


def parse_bool(raw: str) -> bool | None:
    """Go's strconv.ParseBool; None where it returns an error."""
    return {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}.get(raw)  # fmt: skip


def feature_flag(entry: dict[str, Any], variables: dict[str, str], name: str, default: bool = False) -> bool:
    """common/build_settings.go populateFeatureFlags: the runner's feature_flags take precedence;
    else a job variable ParseBool reads; else the flag's default."""
    flags = entry.get("feature_flags") or {}
    if name in flags:
        return bool(flags[name])
    parsed = parse_bool(variables.get(name, ""))
    return default if parsed is None else parsed


def sanitize_label(value: str) -> str:
    """executors/kubernetes/util.go sanitizeLabel."""
    value = re.sub(r"[^A-Za-z0-9._-]", "_", value).strip("-_.")
    return value[:63].strip("-_.")


def rfc1123(name: str) -> str:
    """helpers/dns/utils.go MakeRFC1123Compatible."""
    name = re.sub(r"^[^a-z0-9]+", "", re.sub(r"[^-a-z0-9]", "", name.lower()))
    return name[:63]


def pod_name(unique_name: str, rng: random.Random | None = None) -> str:
    """kubernetes.go generateNameForK8sResources: the pattern cut to 54, `-`, 8 random [a-z0-9]."""
    pick = rng or random.SystemRandom()
    return f"{unique_name[: 63 - 8 - 1]}-{''.join(pick.choice(NAME_SUFFIX_CHARS) for _ in range(8))}"


def expand(value: str, variables: dict[str, str]) -> str:
    """JobVariables.ExpandValue (common/variables.go, os.Expand): $NAME and ${NAME}; unknown: empty."""
    return re.sub(r"\$(\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))", lambda m: variables.get(m.group(2) or m.group(3), ""), value)


def quantity(value: str, where: str) -> str:
    if not _QUANTITY.match(value):
        raise ExecutorProblem(f"[runners.kubernetes] {where}: {value!r} is not a Kubernetes quantity (util.go createResourceList)")
    return value


def resource_list(k8s: dict[str, Any], kind: str) -> dict[str, str]:
    """createResourceList of the build container: cpu, memory, ephemeral-storage of `kind`
    (request or limit); empty values are left out."""
    out = {}
    for key, resource in (("cpu", "cpu"), ("memory", "memory"), ("ephemeral_storage", "ephemeral-storage")):
        raw = str(k8s.get(f"{key}_{kind}") or "")
        if raw:
            out[resource] = quantity(raw, f"{key}_{kind}")
    return out


def tolerations(table: dict[str, str]) -> list[dict[str, str]]:
    """kubernetes.go getPodTolerations."""
    out = []
    for key_value, effect in table.items():
        if "=" in key_value:
            key, value = key_value.split("=", 1)
            out.append({"key": key, "operator": "Equal", "value": value, "effect": effect})
        else:
            out.append({"key": key_value, "operator": "Exists", "effect": effect})
    return out


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_keys(value: Any) -> Any:
    """common/config.go KubernetesAffinity (toml snake_case) as the API's Affinity (camelCase)."""
    if isinstance(value, dict):
        return {_camel(k): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


# --- pod_spec patches -----------------------------------------------------------------------------

# Strategic merge: the PodSpec lists Kubernetes merges by a key (k8s.io/api/core/v1/types.go
# patchMergeKey); any other list is replaced by the patch's.
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "imagePullSecrets": "name", "hostAliases": "ip", "resourceClaims": "name", "env": "name",
    "volumeMounts": "mountPath", "volumeDevices": "devicePath", "ports": "containerPort", "topologySpreadConstraints": "topologyKey",
}  # fmt: skip


def strategic_merge(original: Any, patch: Any, field: str = "") -> Any:
    """k8s.io/apimachinery strategicpatch.StrategicMergePatch over a PodSpec, for what a pod_spec
    patch uses: maps merge (null deletes a key; `$patch: replace` / `delete`), lists of a merge
    key merge element by element (`$patch: delete` removes one), other lists are replaced.
    Directives this double does not model are refused (stricter than the real one)."""
    if not isinstance(patch, dict) or not isinstance(original, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise ExecutorProblem(f"pod_spec: unknown $patch directive {directive!r} in {field or 'the spec'}")
    out = copy.deepcopy(original)
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key == "$retainKeys":
            continue  # ordering and retain-keys directives: the result's content is the same
        if key.startswith("$"):
            raise ExecutorProblem(f"pod_spec: strategic-merge directive {key!r} is not modelled by this double")
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(out.get(key), list):
            out[key] = _merge_list(out[key], value, _MERGE_KEYS[key], key)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = strategic_merge(out[key], value, key)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        else:
            out[key] = _strip_directives(value)
    return out


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def _merge_list(original: list[Any], patch: list[Any], merge_key: str, field: str) -> list[Any]:
    out = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise ExecutorProblem(f"pod_spec: an element of {field} has no merge key {merge_key!r}")
        at = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                out.pop(at)
        elif at is None:
            out.append(_strip_directives(item))
        else:
            out[at] = strategic_merge(out[at], item, f"{field}[{merge_key}={item[merge_key]}]")
    return out


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386 (jsonpatch.MergePatch)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ExecutorProblem(f"pod_spec json patch: path {path!r} does not start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ExecutorProblem(f"pod_spec json patch: {path}: no such location") from None
    return node, parts[-1]


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 (jsonpatch.DecodePatch + Apply): add, remove, replace, move, copy, test; an
    operation whose path does not exist fails the job, as in evanphx/json-patch."""
    if not isinstance(operations, list):
        raise ExecutorProblem("pod_spec json patch: not a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        kind, path = op.get("op"), op.get("path", "")
        if kind not in ("add", "remove", "replace", "move", "copy", "test"):
            raise ExecutorProblem(f"pod_spec json patch: unknown op {kind!r}")
        if kind in ("move", "copy"):
            value = _get(doc, op.get("from", ""))
            if kind == "move":
                doc = _apply(doc, "remove", op.get("from", ""), None)
            doc = _apply(doc, "add", path, value)
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise ExecutorProblem(f"pod_spec json patch: test of {path} failed")
        else:
            doc = _apply(doc, kind, path, op.get("value"))
    return doc


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(doc)
    node, last = _parent(doc, parts, path)
    try:
        return copy.deepcopy(node[int(last)] if isinstance(node, list) else node[last])
    except (KeyError, IndexError, ValueError, TypeError):
        raise ExecutorProblem(f"pod_spec json patch: {path}: no such location") from None


def _apply(doc: Any, kind: str, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    node, last = _parent(doc, parts, path)
    if isinstance(node, list):
        index = len(node) if last == "-" and kind == "add" else int(last) if last.isascii() and last.isdigit() else -1
        if not 0 <= index <= len(node) - (0 if kind == "add" else 1):
            raise ExecutorProblem(f"pod_spec json patch: {path}: index out of range")
        if kind == "add":
            node.insert(index, copy.deepcopy(value))
        elif kind == "remove":
            node.pop(index)
        else:
            node[index] = copy.deepcopy(value)
    elif isinstance(node, dict):
        if kind != "add" and last not in node:
            raise ExecutorProblem(f"pod_spec json patch: {path}: no such key to {kind}")
        if kind == "remove":
            node.pop(last)
        else:
            node[last] = copy.deepcopy(value)
    else:
        raise ExecutorProblem(f"pod_spec json patch: {path}: parent is not an object or array")
    return doc


def patch_bytes(entry: dict[str, Any]) -> tuple[Any, str]:
    """common/config.go KubernetesPodSpec.PodSpecPatch: (the patch as JSON data, its type)."""
    name = entry.get("name", "")
    text = str(entry.get("patch") or "")
    if entry.get("patch_path"):
        if text:
            raise ExecutorProblem(f"pod_spec {name}: patch and patch_path are ambiguous, set one")
        try:
            with open(entry["patch_path"]) as fh:
                text = fh.read()
        except OSError as exc:
            raise ExecutorProblem(f"pod_spec {name}: reading patch_path: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExecutorProblem(f"pod_spec {name}: the patch is not YAML or JSON: {str(exc).splitlines()[0]}") from None
    return data, str(entry.get("patch_type") or "strategic")


def apply_pod_spec(spec: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """kubernetes.go applyPodSpecMerge: every patch in order."""
    for entry in patches:
        data, kind = patch_bytes(entry)
        if kind == "json":
            spec = json_patch(spec, data)
        elif kind == "merge":
            spec = merge_patch(spec, data)
        elif kind == "strategic":
            spec = strategic_merge(spec, data)
        else:
            raise ExecutorProblem(f"pod_spec {entry.get('name', '')}: unsupported patch type {kind}")
        if not isinstance(spec, dict):
            raise ExecutorProblem(f"pod_spec {entry.get('name', '')}: the patched spec is not an object")
    return spec


# --- the job pod ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobPod:
    """The pod and the Secret of its scripts."""

    pod: dict[str, Any]
    scripts: dict[str, str]
    warnings: tuple[str, ...]


def job_pod(entry: dict[str, Any], payload: dict[str, Any], *, short_token: str, version: str, scripts: dict[str, str],
            rng: random.Random | None = None) -> JobPod:  # fmt: skip
    """The job pod gitlab-runner's Kubernetes executor would create for `payload` from the runner
    `entry` ([[runners]] with its [runners.kubernetes]); `scripts`: the stages' scripts
    (get_sources, step_script), which go into the pod's Secret, never into its spec."""
    k8s: dict[str, Any] = dict(entry.get("kubernetes") or {})
    variables = {str(v.get("key")): str(v.get("value") or "") for v in payload.get("variables") or []}
    if payload.get("services"):
        raise ExecutorProblem("this double's Kubernetes executor runs no services")
    image_def = payload.get("image") or {}
    image = expand(str(image_def.get("name") or k8s.get("image") or ""), variables)
    if not image:
        raise ExecutorProblem("no image: neither the job nor [runners.kubernetes] image names one")
    job_info, git = payload.get("job_info") or {}, payload.get("git_info") or {}
    project_id = int(job_info.get("project_id") or 0)
    unique = rfc1123(f"runner-{short_token}-project-{project_id}-concurrent-0")  # common/build.go ProjectUniqueName
    name = pod_name(unique, rng)
    labels = {
        "pod": sanitize_label(unique),
        f"project.{RUNNER_NS}/id": str(project_id),
        f"project.{RUNNER_NS}/namespace-id": sanitize_label(variables.get("CI_PROJECT_NAMESPACE_ID", "")),
        f"project.{RUNNER_NS}/name": sanitize_label(str(job_info.get("project_name") or "")),
        f"project.{RUNNER_NS}/namespace": sanitize_label(variables.get("CI_PROJECT_NAMESPACE", "")),
        f"project.{RUNNER_NS}/root-namespace": sanitize_label(variables.get("CI_PROJECT_ROOT_NAMESPACE", "")),
        f"job.{RUNNER_NS}/pod": sanitize_label(unique),
        f"manager.{RUNNER_NS}/name": sanitize_label(str(entry.get("name") or "")),
        f"manager.{RUNNER_NS}/id-short": sanitize_label(short_token),
    }
    warnings = []
    for key, value in (k8s.get("pod_labels") or {}).items():
        if _RUNNER_NS_KEY.match(key):
            warnings.append(f"not setting pod label {key!r}: the {RUNNER_NS} namespace is not overwritten")
            continue
        labels[key] = sanitize_label(expand(str(value), variables))
    timeout_s = int((payload.get("runner_info") or {}).get("timeout") or 3600)
    annotations = {
        f"job.{RUNNER_NS}/id": str(payload.get("id")), f"job.{RUNNER_NS}/url": variables.get("CI_JOB_URL", ""),
        f"job.{RUNNER_NS}/sha": str(git.get("sha") or ""), f"job.{RUNNER_NS}/before_sha": str(git.get("before_sha") or ""),
        f"job.{RUNNER_NS}/ref": str(git.get("ref") or ""), f"job.{RUNNER_NS}/name": str(job_info.get("name") or ""),
        f"job.{RUNNER_NS}/timeout": _go_duration(timeout_s), f"project.{RUNNER_NS}/id": str(project_id),
    }  # fmt: skip
    annotations |= {str(k): expand(str(v), variables) for k, v in (k8s.get("pod_annotations") or {}).items()}

    security: dict[str, Any] = {"capabilities": {"drop": ["NET_RAW"]}}  # defaultCapDrop
    if k8s.get("privileged") is not None:
        security["privileged"] = bool(k8s["privileged"])
    if k8s.get("allow_privilege_escalation") is not None:
        security["allowPrivilegeEscalation"] = bool(k8s["allow_privilege_escalation"])
    policy = k8s.get("pull_policy")
    policies = [policy] if isinstance(policy, str) else list(policy or [])
    for p in policies:
        if p not in PULL_POLICIES:
            raise ExecutorProblem(f"[runners.kubernetes] pull_policy: {p!r} is not one of {', '.join(PULL_POLICIES)}")
    mounts = [{"name": "repo", "mountPath": BUILDS_DIR}, {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True}]

    def container(cname: str, cimage: str, stage: str, requests: dict[str, str], limits: dict[str, str]) -> dict[str, Any]:
        c: dict[str, Any] = {"name": cname, "image": cimage, "command": ["sh", f"{SCRIPTS_DIR}/{stage}"], "volumeMounts": mounts,
                             "securityContext": copy.deepcopy(security)}  # fmt: skip
        if requests or limits:
            c["resources"] = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
        if policies:
            c["imagePullPolicy"] = PULL_POLICIES[policies[0]]
        return c

    helper_image = expand(str(k8s.get("helper_image") or ""), variables) or f"registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v{version}"
    helper_requests = {r: quantity(str(k8s[f"helper_{k}_request"]), f"helper_{k}_request") for k, r in (("cpu", "cpu"), ("memory", "memory")) if k8s.get(f"helper_{k}_request")}  # fmt: skip
    helper_limits = {r: quantity(str(k8s[f"helper_{k}_limit"]), f"helper_{k}_limit") for k, r in (("cpu", "cpu"), ("memory", "memory")) if k8s.get(f"helper_{k}_limit")}  # fmt: skip
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container(BUILD, image, "step_script", resource_list(k8s, "request"), resource_list(k8s, "limit")),
                       container(HELPER, helper_image, "get_sources", helper_requests, helper_limits)],
        "volumes": [{"name": "repo", "emptyDir": {}}, {"name": "scripts", "secret": {"secretName": f"{name}-scripts"}}],
    }  # fmt: skip
    if k8s.get("service_account"):
        spec["serviceAccountName"] = str(k8s["service_account"])
    if k8s.get("node_selector"):
        spec["nodeSelector"] = {str(k): str(v) for k, v in k8s["node_selector"].items()}
    if k8s.get("node_tolerations"):
        spec["tolerations"] = tolerations(k8s["node_tolerations"])
    if k8s.get("affinity"):
        spec["affinity"] = camel_keys(k8s["affinity"])
    if k8s.get("pod_termination_grace_period_seconds") is not None:
        spec["terminationGracePeriodSeconds"] = int(k8s["pod_termination_grace_period_seconds"])
    if k8s.get("scheduler_name"):
        spec["schedulerName"] = str(k8s["scheduler_name"])
    if k8s.get("runtime_class_name"):
        spec["runtimeClassName"] = str(k8s["runtime_class_name"])
    if k8s.get("priority_class_name"):
        spec["priorityClassName"] = str(k8s["priority_class_name"])
    if k8s.get("image_pull_secrets"):
        spec["imagePullSecrets"] = [{"name": str(s)} for s in k8s["image_pull_secrets"]]
    if k8s.get("pod_spec"):
        if feature_flag(entry, variables, POD_SPEC_FLAG):
            spec = apply_pod_spec(spec, list(k8s["pod_spec"]))
        else:
            warnings.append(f"pod_spec is ignored: {POD_SPEC_FLAG} is off")
    namespace = str(k8s.get("namespace") or "default")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
           "spec": spec}  # fmt: skip
    return JobPod(pod, dict(scripts), tuple(warnings))


def _go_duration(seconds: int) -> str:
    """time.Duration.String() of whole seconds: 1h0m0s, 5m0s, 30s."""
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m{s}s" if h else f"{m}m{s}s" if m else f"{s}s"


def stage_scripts(exports: str, sources: str, step: str, after: str, builds_dir: str = BUILDS_DIR) -> dict[str, str]:
    """The helper gets the sources, records how that went and exits with it; the build container
    waits for that, runs the job's script, then after_script (its failure ignored), and exits with
    the script's code (97 when the sources failed: the helper's code then fails the job)."""
    status = f"{builds_dir}/.autogit-sources-status"
    get_sources = f"{exports}\n( set -e\n{sources}\n)\nrc=$?\necho $rc > {status}\nexit $rc\n"
    step_script = (f'{exports}\nwhile [ ! -e {status} ]; do sleep 0.1; done\nif [ "$(cat {status})" != 0 ]; then exit 97; fi\n'
                   f"( {step}\n)\nrc=$?\n" + (f"( {after}\n) || true\n" if after else "") + "exit $rc\n")  # fmt: skip
    return {"get_sources": get_sources, "step_script": step_script}


# --- driving the API server ---------------------------------------------------------------------------


class PodFailure(Exception):
    def __init__(self, reason: str, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.reason, self.exit_code = reason, exit_code


async def _client(k8s: dict[str, Any]) -> Any:
    """executors/kubernetes/util.go getKubeClientConfig."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    if k8s.get("host"):
        if k8s.get("cert_file") and not (k8s.get("key_file") and k8s.get("ca_file")):
            raise ExecutorProblem("ca file, cert file and key file must be specified when using file based auth")
        configuration.host = str(k8s["host"])
        if k8s.get("bearer_token"):
            configuration.api_key = {"authorization": f"Bearer {k8s['bearer_token']}"}
        configuration.ssl_ca_cert = k8s.get("ca_file") or None
        configuration.cert_file, configuration.key_file = k8s.get("cert_file") or None, k8s.get("key_file") or None
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            await config.load_kube_config(client_configuration=configuration, persist_config=False)
    return client.ApiClient(configuration)


async def run_job_pod(entry: dict[str, Any], built: JobPod, *, write: Callable[[str | bytes], None], stop: Callable[[], str | None],
                      deadline: float) -> int:  # fmt: skip
    """Create the job's scripts Secret and pod, wait for it to start, stream the build
    container's log, and return its exit code; the pod and the Secret (which it owns) are deleted
    whatever happens. `stop()` names why to stop now (aborted, canceled, timeout) or
    is None. Raises PodFailure."""
    from kubernetes_asyncio import client as k8s_client
    from kubernetes_asyncio.client.exceptions import ApiException

    k8s = dict(entry.get("kubernetes") or {})
    interval = max(1, int(k8s.get("poll_interval") or POLL_INTERVAL_S))  # GetPollInterval
    poll_timeout = int(k8s.get("poll_timeout") or POLL_TIMEOUT_S)  # GetPollTimeout
    meta = built.pod["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    api_client = await _client(k8s)
    async with api_client:
        api = k8s_client.CoreV1Api(api_client)
        # The Secret first, so that the kubelet finds it when it mounts the pod's volumes (a missing
        # one is retried with a back-off, seconds added to the start); then the pod; then the pod
        # becomes the Secret's owner, as gitlab-runner owns what it made for a job
        # (kubernetes.go setupBuildPod → setOwnerReferencesForResources: `secrets, update`).
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "stringData": built.scripts,
                  "metadata": {"name": f"{name}-scripts", "namespace": namespace, "labels": dict(meta["labels"])}}  # fmt: skip
        try:
            await api.create_namespaced_secret(namespace, cast(Any, secret))
        except ApiException as exc:
            raise PodFailure("runner_system_failure", f"creating the job's scripts Secret: {exc.status} {_api_message(exc)}") from None
        try:
            try:
                created = await api.create_namespaced_pod(namespace, cast(Any, built.pod))
                secret["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": created.metadata.uid}]  # type: ignore[index]
                await api.replace_namespaced_secret(f"{name}-scripts", namespace, cast(Any, secret))
            except ApiException as exc:
                raise PodFailure("runner_system_failure", f"creating the job pod: {exc.status} {_api_message(exc)}") from None
            write(f"Waiting for pod {namespace}/{name} to be running, status is Pending\n")
            return await _follow(api, name, namespace, write=write, stop=stop, deadline=deadline, interval=interval, poll_timeout=poll_timeout)
        finally:
            with contextlib.suppress(ApiException):  # cleanupResources: the pod goes whatever happened
                grace = k8s.get("cleanup_grace_period_seconds")
                if grace is None:
                    await api.delete_namespaced_pod(name, namespace)
                else:
                    await api.delete_namespaced_pod(name, namespace, grace_period_seconds=int(grace))
            with contextlib.suppress(ApiException):
                await api.delete_namespaced_secret(f"{name}-scripts", namespace)


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message", ""))[:300]
    except (ValueError, TypeError, AttributeError):
        return str(exc.reason)


_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


async def _follow(api: Any, name: str, namespace: str, *, write: Callable[[str | bytes], None], stop: Callable[[], str | None],
                  deadline: float, interval: int, poll_timeout: int) -> int:  # fmt: skip
    started = time.monotonic()
    running = False
    sent = {BUILD: 0, HELPER: 0}
    last_log = 0.0
    while True:
        why = stop()
        if why is not None:
            raise PodFailure(why, f"stopped: {why}")
        if time.monotonic() > deadline:
            raise PodFailure("job_execution_timeout", "execution took longer than the job timeout")
        pod = await api.read_namespaced_pod(name, namespace)
        statuses = {c.name: c for c in (pod.status.container_statuses or [])}
        for c in statuses.values():
            waiting = c.state.waiting if c.state else None
            if waiting is not None and waiting.reason in _PULL_FAILURES:
                raise PodFailure("image_pull_failure", f"container {c.name}: {waiting.reason}: {(waiting.message or '')[:300]}")
        if not running:
            if pod.status.phase in ("Running", "Succeeded", "Failed"):
                running = True
                write(f"Running on {name} via {os.environ.get('HOSTNAME', 'the runner')}...\n")
            elif time.monotonic() - started > poll_timeout:
                raise PodFailure("runner_system_failure", f"timed out waiting for pod to start (poll_timeout {poll_timeout} s)")
            else:
                await asyncio.sleep(interval)
                continue
        build = statuses.get(BUILD)
        helper = statuses.get(HELPER)
        finished = build is not None and build.state is not None and build.state.terminated is not None
        if finished or time.monotonic() - last_log >= 1.0:
            for cname in (HELPER, BUILD):
                with contextlib.suppress(Exception):  # a container not started yet has no log
                    text = await api.read_namespaced_pod_log(name, namespace, container=cname)
                    if len(text) > sent[cname]:
                        write(text[sent[cname]:])
                        sent[cname] = len(text)
            last_log = time.monotonic()
        if finished:
            assert build is not None
            if helper is not None and helper.state is not None and helper.state.terminated is not None and helper.state.terminated.exit_code != 0:
                raise PodFailure("runner_system_failure", f"getting the sources failed (exit code {helper.state.terminated.exit_code})")
            return int(build.state.terminated.exit_code)
        await asyncio.sleep(0.2)
