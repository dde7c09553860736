"""Which path a GPU runner's job pods take on Kubernetes (ADR-015): a DRA claim where the
cluster serves resource.k8s.io/v1 and has the NVIDIA driver's DeviceClass, else the extended
resource; unknown support decides nothing. And the [runners.kubernetes] section each path
renders: the claim as a strategic `pod_spec` patch (gitlab-runner's doPodSpecMerge), never
together with the extended-resource limit. The patch applied by the real strategic-merge code
and allocated by the real scheduler: tests/k8s/test_dra_claims.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from autogit.agent.config import RunnerConfig
from autogit.agent.dra import CLAIM_NAME, GPU_CLASS, MIG_CLASS, ClaimPlan, DraSupport, Undecided, claim_patch, claim_template, gpu_path
from autogit.agent.errors import InvalidConfiguration
from autogit.agent.model import Gpu, GpuVendor, RunnerKind
from autogit.agent.runtime import RunnerSpec
from autogit.agent.runtime.k8s_runtime import KubernetesRuntime, ManagedPod
from autogit.agent.runtime.kubernetes import POD_SPEC_FEATURE_FLAG, with_gpu_claim

# Planner ids: a DRA device `<node>/<pool>/<device>` (agent/dra.py), a node's extended-resource unit
# `<node>/<resource>#<n>` (agent/inventory/kubernetes.py).
H100 = Gpu(id="gpu-node-1/gpu-node-1/gpu-0", vendor=GpuVendor.NVIDIA, model="NVIDIA H100 80GB HBM3", memory_mb=81559, compute_capability="9.0")
MIG = Gpu(id="gpu-node-2/gpu-node-2/gpu-0-mig-1g.10gb-0", vendor=GpuVendor.NVIDIA, model="NVIDIA A100 SXM4 80GB", memory_mb=9728,
          mig_parent="gpu-node-2", mig_profile="1g.10gb")  # fmt: skip
MI300 = Gpu(id="amd-node/amd.com/gpu#0", vendor=GpuVendor.AMD, model="AMD Instinct MI300X", memory_mb=196608)
BOTH = frozenset({GPU_CLASS, MIG_CLASS})


@pytest.mark.parametrize(
    ("support", "gpu", "expected"),
    [
        (DraSupport(True, BOTH), H100, "dra"),
        (DraSupport(True, BOTH), MIG, "dra"),
        (DraSupport(True, frozenset({GPU_CLASS})), MIG, "extended-resource"),  # no MIG class: MIG slices are not DRA's here
        (DraSupport(True, frozenset({MIG_CLASS})), H100, "extended-resource"),
        (DraSupport(True, frozenset({"gpu.example.com"})), H100, "extended-resource"),  # another driver's class is not ours
        (DraSupport(False, frozenset()), H100, "extended-resource"),  # resource.k8s.io/v1 not served
        (DraSupport(True, BOTH), MI300, "extended-resource"),  # AMD's DRA driver is not mapped
        (DraSupport(None, None, "API server unreachable"), MI300, "extended-resource"),  # DRA is never AMD's path: nothing to know
        # a unit of a node's device-plugin resource, as the cluster inventory offered it: held that way
        (DraSupport(True, BOTH), H100.model_copy(update={"id": "gpu-node-1/nvidia.com/gpu#0"}), "extended-resource"),
    ],
)
def test_the_path_follows_what_the_api_server_serves(support: DraSupport, gpu: Gpu, expected: str) -> None:
    assert gpu_path(support, gpu) == expected


@pytest.mark.parametrize(
    "support",
    [DraSupport(None, None, "listing: 503"), DraSupport(True, None, "listing DeviceClasses: the API server refused `list deviceclasses`")],
    ids=["discovery-unreadable", "classes-unreadable"],
)
def test_unknown_support_is_not_absent_support(support: DraSupport) -> None:
    decided = gpu_path(support, H100)
    assert isinstance(decided, Undecided) and support.problem is not None and support.problem in decided.reason


def spec(gpu: Gpu | None, tags: list[str]) -> RunnerSpec:
    return RunnerSpec(name="r1", gitlab_id=7, token=SecretStr("glrt-t1_SECRET"), url="https://gitlab.example.com", tags=tags,
                      run_untagged=False, kind=RunnerKind.NATIVE, platform="linux/amd64", cpus=2, memory_mb=1024, gpu=gpu)  # fmt: skip


def runtime() -> KubernetesRuntime:
    return KubernetesRuntime(RunnerConfig.model_validate({"runtime": "kubernetes", "kubernetes": {"namespace": "ci"}}), "agent-a")


def patches(section: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(p["patch"]) for p in section.get("pod_spec", [])]


def test_the_dra_path_renders_the_claim_patch_and_no_extended_resource() -> None:
    runner = runtime().render_config(spec(H100, ["amd64", "gpu", "nvidia", "vram-ge-40g"]), claim_template="r1-gpu")["runners"][0]
    section = runner["kubernetes"]
    assert patches(section) == [claim_patch("r1-gpu")]
    assert patches(section)[0] == {"resourceClaims": [{"name": CLAIM_NAME, "resourceClaimTemplateName": "r1-gpu"}],
                                   "containers": [{"name": "build", "resources": {"claims": [{"name": CLAIM_NAME}]}}]}  # fmt: skip
    assert "nvidia.com/gpu" not in json.dumps(section) and "affinity" not in section  # the claim places the pod
    assert section["node_selector"] == {"kubernetes.io/arch": "amd64"}
    assert runner["feature_flags"] == {POD_SPEC_FEATURE_FLAG: True}  # gitlab-runner applies pod_spec only with it


def test_the_extended_resource_path_renders_the_limit_and_node_affinity() -> None:
    unit = H100.model_copy(update={"id": "gpu-node-1/nvidia.com/gpu#0"})
    runner = runtime().render_config(spec(unit, ["amd64", "gpu", "nvidia", "h100", "vram-ge-40g"]))["runners"][0]
    section = runner["kubernetes"]
    assert patches(section) == [{"containers": [{"name": "build", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}]
    [term] = section["affinity"]["node_affinity"]["required_during_scheduling_ignored_during_execution"]["node_selector_terms"]
    assert {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": [str(39 * 1024)]} in term["match_expressions"]
    assert {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]} in term["match_expressions"]
    assert "resourceClaims" not in json.dumps(section) and runner["feature_flags"] == {POD_SPEC_FEATURE_FLAG: True}


def test_a_mig_slice_holds_its_own_resource() -> None:
    unit = MIG.model_copy(update={"id": "gpu-node-2/nvidia.com/mig-1g.10gb#0"})
    section = runtime().render_config(spec(unit, ["amd64", "mig", "mig-1g.10gb", "nvidia"]))["runners"][0]["kubernetes"]
    assert patches(section) == [{"containers": [{"name": "build", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}]}]


def test_a_gpu_named_by_neither_path_is_refused() -> None:
    dra_device = Gpu(id="gpu-node-1/gpu-node-1/gpu-0", vendor=GpuVendor.NVIDIA, model="NVIDIA H100 80GB HBM3", memory_mb=81559)
    with pytest.raises(InvalidConfiguration) as refused:
        runtime().render_config(spec(dra_device, ["amd64", "gpu"]))  # a DRA device without a claim: no extended resource to ask
    assert refused.value.field == "runner.runtime" and "gpu-node-1/gpu-node-1/gpu-0" in str(refused.value)


def test_the_template_holds_the_claim_spec_one_level_down() -> None:
    plan = ClaimPlan(spec={"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": GPU_CLASS, "count": 1}}]}}})
    template = claim_template("r1-gpu", "ci", {"autogit.io/runner": "r1"}, plan)
    # ResourceClaimTemplate.spec is a ResourceClaimTemplateSpec {metadata, spec: ResourceClaimSpec}
    assert template["spec"]["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] == GPU_CLASS
    assert template["metadata"] == {"name": "r1-gpu", "namespace": "ci", "labels": {"autogit.io/runner": "r1"}}


def test_the_claim_patch_is_added_after_the_patches_already_there() -> None:
    section: dict[str, object] = {"pod_spec": [{"name": "other", "patch_type": "strategic", "patch": "{}"}]}
    merged = with_gpu_claim(section, "t")
    assert [p["name"] for p in merged["pod_spec"]] == ["other", "autogit-gpu-claim"]
    assert section["pod_spec"] != merged["pod_spec"]  # the caller's section is not changed


def test_a_gpu_runner_records_the_unit_it_holds_and_is_listed_holding_it() -> None:
    rt = runtime()
    unit = H100.model_copy(update={"id": "gpu-node-1/nvidia.com/gpu#3"})
    pod = rt._pod(spec(unit, ["amd64", "gpu"]))
    assert pod["metadata"]["annotations"]["autogit.io/gpu"] == "gpu-node-1/nvidia.com/gpu#3"
    listed = rt._view(ManagedPod.model_validate(pod), {})
    assert listed.gpus == ["gpu-node-1/nvidia.com/gpu#3"]  # the planner does not hand that unit out twice
    section = rt.render_config(spec(unit, ["amd64", "gpu"]))["runners"][0]["kubernetes"]
    assert patches(section) == [{"containers": [{"name": "build", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}]
    assert rt._view(ManagedPod.model_validate(rt._pod(spec(None, ["amd64"]))), {}).gpus == []
