"""The gitlab-runner double's Kubernetes executor (gitlab_double/runner_image/kubernetes_executor.py):
the job pod it builds from a runner's [runners.kubernetes] (the one AutoGit's Kubernetes runtime
writes, and hand-written ones), each rule as gitlab-runner v17.11.3's executors/kubernetes/ has
it: default labels and annotations, sanitizeLabel, pod_labels never overwriting the
runner.gitlab.com namespace, resources, affinity, tolerations, the job's image, and pod_spec
patches only with FF_USE_ADVANCED_POD_SPEC_CONFIGURATION (strategic, merge, json); and the double
refusing a [runners.kubernetes] key or type gitlab-runner would not read."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from pydantic import SecretStr

from autogit.agent.config import RunnerConfig
from autogit.agent.inventory.kubernetes import GpuProfile
from autogit.agent.model import RunnerKind
from autogit.agent.runtime import RunnerSpec
from autogit.agent.runtime.k8s_runtime import JOB_OF_LABEL, KubernetesRuntime, label_value
from autogit.agent.runtime.kubernetes import POD_SPEC_FEATURE_FLAG, kubernetes_section, placement
from autogit.agent.runtime.runner_config import short_tokens
from unit.test_runner_config import runner_double

HERE = Path(__file__).resolve().parents[2] / "gitlab_double" / "runner_image" / "kubernetes_executor.py"
_spec = importlib.util.spec_from_file_location("kubernetes_executor", HERE)
assert _spec is not None and _spec.loader is not None
kx = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = kx
_spec.loader.exec_module(kx)

TOKEN = "glrt-t1_t9Wkyj-HGRkqQ-VWTGAr"
SCRIPTS = {"get_sources": "true", "step_script": "echo hi"}


def payload(**changes: Any) -> dict[str, Any]:
    variables = {"CI_PROJECT_NAMESPACE": "autogit", "CI_PROJECT_NAMESPACE_ID": "1", "CI_PROJECT_ROOT_NAMESPACE": "autogit",
                 "CI_JOB_URL": "http://gitlab/autogit/p/-/jobs/42", "CI_JOB_TOKEN": "job-secret", "TEAM": "gpu team"}  # fmt: skip
    base: dict[str, Any] = {
        "id": 42, "token": "job-secret", "job_info": {"project_id": 7, "name": "train", "project_name": "My Project!"},
        "git_info": {"sha": "a" * 40, "before_sha": "0" * 40, "ref": "main"}, "runner_info": {"timeout": 3600},
        "variables": [{"key": k, "value": v} for k, v in variables.items()], "image": None, "services": [],
    }  # fmt: skip
    return base | changes


def agent_entry(**kubernetes: Any) -> dict[str, Any]:
    """The [[runners]] entry AutoGit's Kubernetes runtime writes, through TOML and back."""
    config = RunnerConfig.model_validate({"runtime": "kubernetes", "helper_image": "local/helper:1", "kubernetes": {"namespace": "ci"} | kubernetes})
    spec = RunnerSpec(name="r1", gitlab_id=7, token=SecretStr(TOKEN), url="https://gitlab.example.com", tags=["arm64"], run_untagged=False,
                      kind=RunnerKind.NATIVE, platform="linux/arm64", cpus=2, memory_mb=1024)  # fmt: skip
    doc = tomllib.loads(tomli_w.dumps(KubernetesRuntime(config, "agent-a").render_config(spec)))
    runner_double.validate(doc)  # the double starts on it: every key and type is gitlab-runner's
    return dict(doc["runners"][0])


def build(entry: dict[str, Any], job: dict[str, Any] | None = None) -> Any:
    return kx.job_pod(entry, job or payload(), short_token=runner_double.short_token(str(entry.get("token", TOKEN))), version="17.11.3",
                      scripts=SCRIPTS, rng=random.Random(1))  # fmt: skip


def test_the_pod_from_the_agents_config_is_placed_labelled_and_sized_as_written() -> None:
    built = build(agent_entry())
    pod, spec = built.pod, built.pod["spec"]
    meta = pod["metadata"]
    short = runner_double.short_token(TOKEN)
    assert meta["namespace"] == "ci"
    # ProjectUniqueName made RFC 1123 (t1_t9Wkyj → t1t9wkyj), then `-` and 8 random characters
    assert meta["name"].startswith("runner-t1t9wkyj-project-7-concurrent-0-") and short == "t1_t9Wkyj" and len(meta["name"]) == 47
    assert meta["labels"][JOB_OF_LABEL] == "r1" and meta["labels"]["autogit.io/agent"] == "agent-a"
    assert meta["labels"]["manager.runner.gitlab.com/id-short"] == kx.sanitize_label(short)
    assert meta["labels"]["manager.runner.gitlab.com/name"] == "r1"
    assert meta["labels"]["project.runner.gitlab.com/name"] == "My_Project"  # sanitizeLabel: '!' → '_', trimmed
    assert meta["annotations"]["job.runner.gitlab.com/id"] == "42" and meta["annotations"]["job.runner.gitlab.com/timeout"] == "1h0m0s"
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "autogit-runner"
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    build_c, helper = spec["containers"]
    assert (build_c["name"], helper["name"], helper["image"]) == ("build", "helper", "local/helper:1")
    assert build_c["image"] == "debian:bookworm-slim" and build_c["imagePullPolicy"] == "IfNotPresent"
    assert build_c["resources"] == {"requests": {"cpu": "2", "memory": "1024Mi"}, "limits": {"cpu": "2", "memory": "1024Mi"}}
    assert build_c["securityContext"] == {"capabilities": {"drop": ["NET_RAW"]}, "privileged": False, "allowPrivilegeEscalation": False}
    assert "job-secret" not in json.dumps(pod)  # the job token lives in the scripts' Secret only
    assert built.scripts == SCRIPTS


@pytest.mark.parametrize("token", [TOKEN, "glrt-abc_def-ghijklmnop", "8azf1mwj_rest", "GR1348941abcdefghijk", "glrt-t2_-_-x"])
def test_the_agents_label_value_is_gitlab_runners_sanitize_label(token: str) -> None:
    """The agent finds a runner's job pods by the cleaned short token (k8s_runtime.label_value):
    it must be exactly what gitlab-runner labels them with (util.go sanitizeLabel)."""
    for short in short_tokens(token):
        assert label_value(short) == kx.sanitize_label(short)


def test_the_jobs_image_wins_and_affinity_and_tolerations_take_the_apis_form() -> None:
    entry = agent_entry()
    gpu = GpuProfile(node="n", resource="nvidia.com/gpu", tags=frozenset({"vram-ge-40g"}), allocatable=1, used=0, memory_mb=40960)
    where = placement(frozenset({"vram-ge-40g", "cc-ge-8.0"}), "amd64", gpu)
    entry["kubernetes"] = kubernetes_section(where, namespace="ci", service_account="sa", image="img:1", labels={},
                                             tolerations={"nvidia.com/gpu=present": "NoSchedule", "dedicated": "NoExecute"})  # fmt: skip
    built = build(entry, payload(image={"name": "job/image:$TEAM_TAG"}, variables=[{"key": "TEAM_TAG", "value": "2"}]))
    spec = built.pod["spec"]
    assert spec["containers"][0]["image"] == "job/image:2"  # expanded, the job's image over [runners.kubernetes] image
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
                                   {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]  # fmt: skip
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": list(t)} for t in where.terms]
    # pod_spec without the feature flag: ignored, as by gitlab-runner, and said so
    assert "nvidia.com/gpu" not in spec["containers"][0].get("resources", {}).get("limits", {})
    assert any(POD_SPEC_FEATURE_FLAG in w for w in built.warnings)


def gpu_entry(flag: bool | None, patches: list[dict[str, str]] | None = None) -> dict[str, Any]:
    entry = agent_entry()
    if patches is None:
        patches = [{"name": "gpu", "patch_type": "strategic", "patch": json.dumps({"containers": [{"name": "build", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]})}]
    entry["kubernetes"]["pod_spec"] = patches
    if flag is not None:
        entry["feature_flags"] = {POD_SPEC_FEATURE_FLAG: flag}
    return entry


def test_pod_spec_applies_only_with_the_feature_flag_the_runners_flag_first() -> None:
    limits = lambda built: built.pod["spec"]["containers"][0]["resources"]["limits"]  # noqa: E731
    assert "nvidia.com/gpu" not in limits(build(gpu_entry(None)))
    assert limits(build(gpu_entry(True))) == {"cpu": "2", "memory": "1024Mi", "nvidia.com/gpu": "1"}  # merged into the build container
    by_variable = payload(variables=[{"key": POD_SPEC_FEATURE_FLAG, "value": "true"}])
    assert limits(build(gpu_entry(None), by_variable))["nvidia.com/gpu"] == "1"  # a job variable turns it on...
    assert "nvidia.com/gpu" not in limits(build(gpu_entry(False), by_variable))  # ...unless the runner says no
    unreadable = payload(variables=[{"key": POD_SPEC_FEATURE_FLAG, "value": "yes"}])  # strconv.ParseBool refuses "yes"
    assert "nvidia.com/gpu" not in limits(build(gpu_entry(None), unreadable))


def test_a_dra_claim_patch_adds_the_claim_and_keeps_both_containers() -> None:
    patch = {"resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "a100-40g"}],
             "containers": [{"name": "build", "resources": {"claims": [{"name": "gpu"}]}}]}  # fmt: skip
    spec = build(gpu_entry(True, [{"name": "dra", "patch": json.dumps(patch)}])).pod["spec"]
    assert spec["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "a100-40g"}]
    assert [c["name"] for c in spec["containers"]] == ["build", "helper"]
    assert spec["containers"][0]["resources"]["claims"] == [{"name": "gpu"}] and spec["containers"][0]["image"] == "debian:bookworm-slim"


def test_merge_and_json_patches_and_what_fails_the_job() -> None:
    merge = build(gpu_entry(True, [{"name": "m", "patch_type": "merge", "patch": "hostname: job\nnodeSelector: null\n"}])).pod["spec"]
    assert merge["hostname"] == "job" and "nodeSelector" not in merge  # RFC 7386: null deletes
    replaced = build(gpu_entry(True, [{"name": "m", "patch_type": "merge", "patch": '{"containers": [{"name": "x", "image": "y"}]}'}]))
    assert [c["name"] for c in replaced.pod["spec"]["containers"]] == ["x"]  # a merge patch replaces lists
    ops = [{"op": "add", "path": "/containers/0/env", "value": [{"name": "A", "value": "1"}]}, {"op": "remove", "path": "/nodeSelector"}]
    spec = build(gpu_entry(True, [{"name": "j", "patch_type": "json", "patch": json.dumps(ops)}])).pod["spec"]
    assert spec["containers"][0]["env"] == [{"name": "A", "value": "1"}] and "nodeSelector" not in spec
    for bad, why in [
        ({"name": "t", "patch_type": "xml", "patch": "{}"}, "unsupported patch type xml"),
        ({"name": "a", "patch": "{}", "patch_path": "/etc/hostname"}, "ambiguous"),
        ({"name": "j", "patch_type": "json", "patch": '[{"op": "remove", "path": "/nope"}]'}, "no such key"),
        ({"name": "s", "patch": '{"containers": [{"image": "no-name"}]}'}, "merge key 'name'"),
    ]:
        with pytest.raises(kx.ExecutorProblem, match=why):
            build(gpu_entry(True, [bad]))


def test_pod_labels_never_overwrite_the_runner_namespace_and_bad_quantities_fail() -> None:
    entry = agent_entry()
    entry["kubernetes"]["pod_labels"] = {"manager.runner.gitlab.com/id-short": "forged", "runner.gitlab.com/x": "y", "team": "$TEAM"}
    built = build(entry)
    labels = built.pod["metadata"]["labels"]
    assert labels["manager.runner.gitlab.com/id-short"] != "forged" and "runner.gitlab.com/x" not in labels
    assert labels["team"] == "gpu_team"  # expanded, then sanitizeLabel
    assert len(built.warnings) == 2
    entry["kubernetes"]["cpu_limit"] = "two"
    with pytest.raises(kx.ExecutorProblem, match="cpu_limit: 'two' is not a Kubernetes quantity"):
        build(entry)
    with pytest.raises(kx.ExecutorProblem, match="no image"):
        build({"name": "r", "token": TOKEN, "kubernetes": {"namespace": "ci"}})


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ('pod_labels = "x"', "does not decode into Go map[string]string"),
        ("poll_interval = \"1s\"", "does not decode into Go int"),
        ("node_selectors = {}", "not a gitlab-runner"),  # a misspelt key
        ('[[runners.kubernetes.pod_spec]]\nname = "p"\npatch_kind = "json"', "not a gitlab-runner"),
    ],
)
def test_the_double_refuses_kubernetes_keys_gitlab_runner_would_not_read(table: str, why: str) -> None:
    doc = tomllib.loads(f'[[runners]]\nname = "r"\nexecutor = "kubernetes"\n[runners.kubernetes]\nnamespace = "ci"\n{table}\n')
    with pytest.raises(runner_double.ConfigProblem, match=re.escape(why)):
        runner_double.validate(doc)


def _stage(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, cwd=tmp_path)


def test_the_stage_scripts_order_the_helper_before_the_build_and_keep_the_scripts_code(tmp_path: Path) -> None:
    builds = str(tmp_path)
    scripts = kx.stage_scripts("export GREETING='hi there'", "echo sources", 'echo "$GREETING"\nexit 3', "echo after\nexit 9", builds)
    helper = _stage(scripts["get_sources"], tmp_path)
    assert helper.returncode == 0 and helper.stdout == "sources\n"
    build = _stage(scripts["step_script"], tmp_path)
    assert build.returncode == 3 and build.stdout == "hi there\nafter\n"  # after_script runs; its own failure is ignored
    (tmp_path / ".autogit-sources-status").unlink()
    failing = kx.stage_scripts("", "false\necho not reached", "echo never", "", builds)
    helper = _stage(failing["get_sources"], tmp_path)
    assert helper.returncode == 1 and "not reached" not in helper.stdout  # set -e: the helper's code is the failure
    build = _stage(failing["step_script"], tmp_path)
    assert build.returncode == 97 and "never" not in build.stdout
