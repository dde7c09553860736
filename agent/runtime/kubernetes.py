"""`runner.runtime: kubernetes` (ADR-013): runners as gitlab-runner managers with the Kubernetes
executor, one pod each, whose job pods the cluster's scheduler places on a node whose hardware
matches the job (agent/inventory/kubernetes.py reads the nodes).

This module holds, so far, how a job's tags become its pod's scheduling constraints
(`placement`), and what the Helm chart grants (charts/autogit/templates/rbac.yaml; the
chart test holds the two equal): the API verbs the agent uses, and those gitlab-runner's
Kubernetes executor needs for its job pods with default features (gitlab-runner
docs/executors/kubernetes/_index.md, "Configure runner API permissions"). The runtime that
assembles these objects is agent/runtime/k8s_runtime.py.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from ..dra import claim_patch
from ..inventory.kubernetes import GpuProfile

__all__ = [
    "AGENT_CLUSTER_RULES", "AGENT_RULES", "POD_SPEC_FEATURE_FLAG", "RUNNER_RULES", "Placement", "Rule",
    "CA_KEY", "CONFIG_DIR", "kubernetes_section", "manager_pod", "placement", "runner_secret", "with_gpu_claim",
]  # fmt: skip


class Rule(NamedTuple):
    """One RBAC PolicyRule: API group ('' is core), resources, verbs."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]


# Cluster-wide: the nodes' labels and allocatable resources are the hardware inventory; the pods
# of every namespace that have not ended are what is not free on each node (capacity =
# allocatable minus what runs), both by list and watch (agent/inventory/cluster.py, ADR-016); the
# DeviceClasses and ResourceSlices say whether GPUs are handed out by DRA, and which (dra_support.py).
AGENT_CLUSTER_RULES: tuple[Rule, ...] = (
    Rule("", ("nodes",), ("get", "list", "watch")),
    Rule("", ("pods",), ("list", "watch")),
    Rule("resource.k8s.io", ("deviceclasses", "resourceslices"), ("list",)),
)

# In the runners' namespace, exactly the calls of agent/runtime/k8s_runtime.py: runner manager
# pods (created, listed with their job pods, annotated with when a stop was asked for, deleted,
# as are job pods a runner left); the graceful and forceful stops as SIGQUIT/SIGTERM through
# pods/exec (ADR-013 says why not a deletion); each runner's config.toml, which holds its
# token, only in a Secret (read back for the token when it was not listed yet).
AGENT_RULES: tuple[Rule, ...] = (
    Rule("", ("pods",), ("list", "create", "delete", "patch")),
    # A websocket exec is a GET upgrade: RBAC checks `get`, and since Kubernetes 1.35
    # (AuthorizePodWebsocketUpgradeCreatePermission, on by default) `create` too. Found by the
    # chart's HA test (tests/k8s/test_chart_ha.py): with `create` alone every drain was a 403.
    Rule("", ("pods/exec",), ("create", "get")),
    Rule("", ("secrets",), ("get", "list", "create", "delete")),
    # a GPU runner's ResourceClaimTemplate where DRA hands out GPUs (agent/dra.py, ADR-015)
    Rule("resource.k8s.io", ("resourceclaimtemplates",), ("list", "create", "delete")),
)

# The runner managers' ServiceAccount: gitlab-runner's Kubernetes executor with its default
# feature flags (no autoscaler, no namespace per job, no PDBs, no suspendable environments).
RUNNER_RULES: tuple[Rule, ...] = (
    Rule("", ("pods",), ("create", "delete", "get", "list", "watch")),
    Rule("", ("pods/attach", "pods/exec"), ("create", "delete", "get", "patch")),
    Rule("", ("pods/log",), ("get", "list")),
    Rule("", ("secrets",), ("create", "delete", "get", "update")),
    Rule("", ("serviceaccounts",), ("get",)),
    Rule("", ("services",), ("create", "get")),
)


# --- placement: a job's tags as scheduling constraints of its pod (ADR-013) --------------------

_ARCH_LABEL = "kubernetes.io/arch"
_NVIDIA_MEMORY = "nvidia.com/gpu.memory"
_NVIDIA_MAJOR, _NVIDIA_MINOR = "nvidia.com/gpu.compute.major", "nvidia.com/gpu.compute.minor"
_NVIDIA_PRODUCT = "nvidia.com/gpu.product"


class Placement(NamedTuple):
    """Where a job pod may run and what it holds: node selector, required node-affinity terms
    (ORed; the expressions of one term ANDed), and the container's limits. Never a host path."""

    node_selector: dict[str, str]
    terms: tuple[tuple[dict[str, object], ...], ...]
    limits: dict[str, str]

    def pod_spec(self, tolerations: list[dict[str, str]] | None = None) -> dict[str, object]:
        """The pod-spec fragment (nodeSelector, affinity, tolerations) for these constraints."""
        spec: dict[str, object] = {}
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        if self.terms:
            spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(term)} for term in self.terms]}}}  # fmt: skip
        if tolerations:
            spec["tolerations"] = tolerations
        return spec


def _floor(tags: frozenset[str], prefix: str) -> str | None:
    values = [t.removeprefix(prefix) for t in tags if t.startswith(prefix)]
    return max(values, key=lambda v: tuple(int(x) for x in v.rstrip("g").split(".")), default=None)


def placement(tags: frozenset[str], arch: str | None, gpu: GpuProfile | None, products: frozenset[str] = frozenset()) -> Placement:
    """The constraints that keep a job pod on nodes whose hardware carries `tags`.

    `arch`: the architecture the job needs (from its arch tag; None: any). `gpu`: the GPU
    profile (agent/inventory/kubernetes.py) the planner chose, whose extended resource the pod
    holds one of; the node's own labels then say the rest, so the scheduler can take any node
    with the same hardware: a memory floor `vram-ge-<N>g` is `nvidia.com/gpu.memory Gt
    (N-1)*1024` (GFD's MiB; a GPU carries floor N when its size rounded up to whole GiB reaches
    N), a compute-capability floor `cc-ge-X.Y` is "major > X, or major = X and minor >= Y", and
    tags no label orders (family, product, driver) become `nvidia.com/gpu.product In products`,
    `products` being the product labels of the nodes that carry all the tags.
    """
    selector = {_ARCH_LABEL: arch} if arch else {}
    if gpu is None:
        return Placement(selector, (), {})
    limits = {gpu.resource: "1"}
    common: list[dict[str, object]] = []
    nvidia_whole = gpu.resource == "nvidia.com/gpu"
    if nvidia_whole and (floor := _floor(tags, "vram-ge-")) is not None:
        common.append({"key": _NVIDIA_MEMORY, "operator": "Gt", "values": [str((int(floor.rstrip("g")) - 1) * 1024)]})
    if nvidia_whole and products:
        common.append({"key": _NVIDIA_PRODUCT, "operator": "In", "values": sorted(products)})
    terms: tuple[tuple[dict[str, object], ...], ...] = (tuple(common),) if common else ()
    if gpu.resource.startswith("nvidia.com/") and (cc := _floor(tags, "cc-ge-")) is not None:
        major, minor = (int(x) for x in cc.split("."))
        higher: dict[str, object] = {"key": _NVIDIA_MAJOR, "operator": "Gt", "values": [str(major)]}
        # A label value cannot be negative ("-1" is refused by the API server): minor >= 0 is "Exists".
        at_least_minor: dict[str, object] = (
            {"key": _NVIDIA_MINOR, "operator": "Gt", "values": [str(minor - 1)]} if minor > 0 else {"key": _NVIDIA_MINOR, "operator": "Exists"}
        )
        same: tuple[dict[str, object], ...] = ({"key": _NVIDIA_MAJOR, "operator": "In", "values": [str(major)]}, at_least_minor)
        terms = ((*common, higher), (*common, *same))
    return Placement(selector, terms, limits)


# --- the runner's [runners.kubernetes] section ------------------------------------------------

# gitlab-runner needs this flag to apply `pod_spec` patches (docs/executors/kubernetes/_index.md,
# "Overwrite generated pod specifications"); the GPU limit travels in one.
POD_SPEC_FEATURE_FLAG = "FF_USE_ADVANCED_POD_SPEC_CONFIGURATION"


# How often gitlab-runner looks at a job pod that has not started (common/config.go
# GetPollInterval; its default, common/consts.go KubernetesPollInterval, is 3 s): each look it
# misses is up to that much added to a job's start.
POLL_INTERVAL_S = 1


def kubernetes_section(where: Placement, *, namespace: str, service_account: str, image: str, labels: dict[str, str],
                       tolerations: dict[str, str] | None = None, cpu: str | None = None, memory: str | None = None,
                       helper_image: str | None = None, pull_policy: str | None = None) -> dict[str, object]:  # fmt: skip
    """The `[runners.kubernetes]` table of one runner's config.toml (keys of gitlab-runner's
    common/config.go KubernetesConfig, checked by the gitlab-runner double's table): its job pods
    in `namespace` under `service_account`, placed by `where`, never privileged. `tolerations`:
    gitlab-runner's form, `"key=value" = "Effect"`. A GPU limit is a strategic-merge patch of the
    build container, so the device plugin, not the runner, hands the device over (the caller
    turns POD_SPEC_FEATURE_FLAG on: without it gitlab-runner ignores pod_spec). `helper_image`:
    the job pods' helper container (gitlab-runner's default is on registry.gitlab.com);
    `pull_policy`: always, if-not-present or never, the job pods' imagePullPolicy."""
    section: dict[str, object] = {
        "namespace": namespace, "service_account": service_account, "image": image, "privileged": False,
        "allow_privilege_escalation": False, "pod_labels": dict(labels), "node_selector": dict(where.node_selector),
        "poll_interval": POLL_INTERVAL_S,
    }  # fmt: skip
    if helper_image:
        section["helper_image"] = helper_image
    if pull_policy:
        section["pull_policy"] = [pull_policy]
    if tolerations:
        section["node_tolerations"] = dict(tolerations)
    if cpu:
        section["cpu_request"] = section["cpu_limit"] = cpu
    if memory:
        section["memory_request"] = section["memory_limit"] = memory
    if where.terms:
        terms = [{"match_expressions": [dict(e) for e in term]} for term in where.terms]
        section["affinity"] = {"node_affinity": {"required_during_scheduling_ignored_during_execution": {"node_selector_terms": terms}}}
    if where.limits:
        patch = {"containers": [{"name": "build", "resources": {"limits": dict(where.limits)}}]}
        section["pod_spec"] = [{"name": "autogit-gpu", "patch_type": "strategic", "patch": json.dumps(patch, sort_keys=True)}]
    return section


def with_gpu_claim(section: dict[str, object], template: str) -> dict[str, object]:
    """`section` whose job pods hold a DRA claim made from ResourceClaimTemplate `template`
    (agent/dra.py claim_patch), as one more strategic `pod_spec` patch (gitlab-runner applies
    them in order; FF_USE_ADVANCED_POD_SPEC_CONFIGURATION must be on). Used instead of the
    extended-resource limit, never with it."""
    patch = {"name": "autogit-gpu-claim", "patch_type": "strategic", "patch": json.dumps(claim_patch(template), sort_keys=True)}
    existing = section.get("pod_spec")
    return section | {"pod_spec": [*(existing if isinstance(existing, list) else []), patch]}


# --- one runner's objects: its config Secret and its manager pod -------------------------------

RUNNER_LABEL = "autogit.io/runner"
OWNER_LABEL = "autogit.io/agent"
CONFIG_KEY = "config.toml"


CA_KEY = "ca.crt"
CONFIG_DIR = "/etc/gitlab-runner"  # where the manager pod's init step copies the Secret's files


def runner_secret(name: str, namespace: str, config_toml: str, owner: str, ca_pem: str | None = None) -> dict[str, object]:
    """The Secret holding one runner's config.toml, the only place its token is written, and
    GitLab's private CA beside it when there is one (config.toml's tls-ca-file names it)."""
    data = {CONFIG_KEY: config_toml} | ({CA_KEY: ca_pem} if ca_pem else {})
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": f"{name}-config", "namespace": namespace, "labels": {RUNNER_LABEL: name, OWNER_LABEL: owner}},
        "stringData": data,
    }  # fmt: skip


def manager_pod(name: str, namespace: str, *, image: str, service_account: str, owner: str, annotations: dict[str, str],
                grace_seconds: int, files: tuple[str, ...] = (CONFIG_KEY,)) -> dict[str, object]:  # fmt: skip
    """One runner's manager pod: gitlab-runner with the Kubernetes executor, its config.toml
    from the runner's Secret. gitlab-runner writes beside its config (its system id), so an init
    step copies the file into a memory-backed emptyDir; the token is never an environment
    variable, an argument or an annotation. The manager holds no GPU and is never privileged: the
    job pods it creates hold the GPU through their extended-resource limit. `files`: the Secret's
    keys copied beside config.toml (CA_KEY too when GitLab has a private CA)."""
    config_dir = CONFIG_DIR
    restricted = {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {RUNNER_LABEL: name, OWNER_LABEL: owner}, "annotations": dict(annotations)},
        "spec": {
            # the runners' ServiceAccount mounts no token by default (the chart's), so that job pods
            # get none; the manager alone needs one, to create its job pods (in-cluster config)
            "serviceAccountName": service_account, "automountServiceAccountToken": True,
            "restartPolicy": "Never", "terminationGracePeriodSeconds": grace_seconds,
            "enableServiceLinks": False, "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{
                "name": "config", "image": image, "command": ["cp", *(f"/run/secrets/runner/{f}" for f in files), f"{config_dir}/"],
                "volumeMounts": [{"name": "secret", "mountPath": "/run/secrets/runner", "readOnly": True},
                                 {"name": "config", "mountPath": config_dir}],
                "securityContext": restricted,
            }],
            "containers": [{
                "name": "runner", "image": image, "args": ["run", "--config", f"{config_dir}/{CONFIG_KEY}", "--working-directory", "/tmp"],
                "volumeMounts": [{"name": "config", "mountPath": config_dir}],
                "securityContext": restricted,
            }],
            "volumes": [
                {"name": "secret", "secret": {"secretName": f"{name}-config", "defaultMode": 0o400}},
                {"name": "config", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            ],
        },
    }  # fmt: skip
