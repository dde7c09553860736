"""Hardware read from Kubernetes Node objects (agent/inventory/kubernetes.py): the same tags a
host's GPU of the same model yields, capacity as allocatable minus what runs, and reasons that
name the missing hardware. The nodes are built by tests/k8s/nodes.py, the same builders that
create the kwok nodes of the real test cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from k8s.nodes import amd_node, arm64_node, fake_node, intel_node, nvidia_node

from autogit.agent.inventory.kubernetes import Node, Pod, cluster_host, node_hardware, parse_quantity, unit_resource, unservable
from autogit.agent.model import Gpu, GpuVendor, Host, Job, Observation, Policy
from autogit.agent.planner import decide
from autogit.agent.tags import arch_tags, gpu_tags


def ready(node: dict[str, Any], status: str = "True") -> Node:
    node["status"]["conditions"] = [{"type": "Ready", "status": status, "reason": "KubeletReady", "lastHeartbeatTime": "2026-12-06T20:00:00Z"}]
    return Node.model_validate(node)


def pod(name: str, node: str | None, phase: str, limits: dict[str, str], init: dict[str, str] | None = None) -> Pod:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "x", "resources": {"limits": limits}}]}
    if node:
        spec["nodeName"] = node
    if init:
        spec["initContainers"] = [{"name": "init", "resources": {"requests": init}}]
    return Pod.model_validate({"metadata": {"name": name, "namespace": "ci", "uid": "u"}, "spec": spec, "status": {"phase": phase}})


def test_an_h100_node_yields_exactly_the_tags_of_a_host_h100() -> None:
    [hw] = node_hardware([ready(nvidia_node("n1", count=8))], [])
    [gpu] = hw.gpus
    host = Gpu(id="GPU-1", vendor=GpuVendor.NVIDIA, model="NVIDIA H100 80GB HBM3", memory_mb=81559, compute_capability="9.0",
               driver_version="580.95.05")  # fmt: skip
    assert gpu.tags == gpu_tags(host) | arch_tags("amd64")
    assert {"gpu", "nvidia", "cuda", "h100", "vram-80g", "vram-ge-40g", "cc-9.0", "cc-ge-8.0", "nvidia-driver-580", "x86_64"} <= gpu.tags
    assert "vram-ge-96g" not in gpu.tags and "mig" not in gpu.tags
    assert (gpu.resource, gpu.allocatable, gpu.free) == ("nvidia.com/gpu", 8, 8)
    assert hw.tags == frozenset({"amd64", "x86_64"}) and hw.schedulable


def test_a_memory_floor_is_served_only_by_a_node_whose_gpu_reaches_it() -> None:
    l4 = ready(nvidia_node("l4", product="NVIDIA-L4", memory_mib=23034, count=1, compute=(8, 9)))
    h100 = ready(nvidia_node("h100"))
    job = frozenset({"gpu", "vram-ge-40g"})
    why = unservable(job, node_hardware([l4, ready(arm64_node("arm"))], []))
    assert why is not None and why.missing_tags == ("vram-ge-40g",)
    assert "vram-ge-40g" in why.detail
    assert unservable(job, node_hardware([l4, h100], [])) is None
    fits = [g.node for h in node_hardware([l4, h100], []) for g in h.gpus if job <= g.tags]
    assert fits == ["h100"]


def test_mig_mixed_strategy_slices_are_gpus_of_their_own_without_the_gpu_tag() -> None:
    node = ready(nvidia_node("a100", product="NVIDIA-A100-SXM4-80GB", memory_mib=81920, count=2, compute=(8, 0),
                             mig={"1g.10gb": (7, 9728), "3g.40gb": (2, 40192)}))  # fmt: skip
    [hw] = node_hardware([node], [])
    by_resource = {g.resource: g for g in hw.gpus}
    slice_ = by_resource["nvidia.com/mig-1g.10gb"]
    assert {"mig", "mig-1g.10gb", "vram-10g", "vram-ge-8g", "a100", "cc-ge-8.0"} <= slice_.tags
    assert "gpu" not in slice_.tags and "vram-ge-12g" not in slice_.tags
    assert slice_.allocatable == 7
    assert "mig-3g.40gb" in by_resource["nvidia.com/mig-3g.40gb"].tags
    assert "gpu" in by_resource["nvidia.com/gpu"].tags  # the boards not split
    why = unservable(frozenset({"gpu", "mig-1g.10gb"}), [hw])
    assert why is not None and "a MIG instance carries `mig` instead" in why.detail


def test_mig_single_strategy_reads_the_profile_from_the_product() -> None:
    node = ready(nvidia_node("a100", product="NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", memory_mib=4864, count=56, compute=(8, 0)))
    [gpu] = node_hardware([node], [])[0].gpus
    assert {"mig", "mig-1g.5gb", "vram-5g", "a100"} <= gpu.tags and "gpu" not in gpu.tags
    assert gpu.allocatable == 56


def test_amd_intel_and_arm64_nodes() -> None:
    amd, intel, arm = node_hardware([ready(amd_node("mi")), ready(intel_node("arc")), ready(arm64_node("arm"))], [])
    # the labeller's whole GiB, as AMD's own example shows an MI300X: one step under a host's 192
    assert {"gpu", "amd", "rocm", "mi300x", "vram-191g", "vram-ge-180g"} <= amd.gpus[0].tags and "vram-ge-192g" not in amd.gpus[0].tags
    assert {"gpu", "intel", "oneapi"} <= intel.gpus[0].tags
    assert not {"igpu", "dgpu"} & intel.gpus[0].tags  # the plugin does not say: neither is claimed
    assert arm.tags == frozenset({"arm64", "aarch64"}) and arm.gpus == ()
    assert unservable(frozenset({"arm64"}), [amd, intel, arm]) is None


def test_capacity_is_allocatable_minus_what_runs() -> None:
    node = ready(nvidia_node("n", count=8))
    pods = [
        pod("running", "n", "Running", {"nvidia.com/gpu": "2", "cpu": "1500m", "memory": "1Gi"}),
        pod("starting", "n", "Pending", {"nvidia.com/gpu": "1"}, init={"cpu": "4"}),  # bound, not yet running: holds
        pod("done", "n", "Succeeded", {"nvidia.com/gpu": "4"}),  # finished: holds nothing
        pod("unscheduled", None, "Pending", {"nvidia.com/gpu": "4"}),  # on no node yet
        pod("elsewhere", "other", "Running", {"nvidia.com/gpu": "4"}),
    ]
    [hw] = node_hardware([node], pods)
    assert (hw.gpus[0].used, hw.gpus[0].free) == (3, 5)
    assert hw.cpu_free == Decimal(32) - Decimal("1.5") - Decimal(4)  # the init container's 4 CPUs outweigh its main's 0
    assert hw.memory_free == 256 * 2**30 - 2**30


def test_a_gpu_whose_memory_is_not_labelled_carries_no_floor() -> None:
    raw = nvidia_node("n")
    del raw["metadata"]["labels"]["nvidia.com/gpu.memory"]
    [hw] = node_hardware([ready(raw)], [])
    assert not {t for t in hw.gpus[0].tags if t.startswith("vram")}
    why = unservable(frozenset({"gpu", "vram-ge-8g"}), [hw])
    assert why is not None and why.missing_tags == ("vram-ge-8g",)


def test_a_bad_label_is_reported_and_the_rest_still_read() -> None:
    raw = nvidia_node("n")
    raw["metadata"]["labels"]["nvidia.com/gpu.compute.major"] = "nine"
    raw["status"]["allocatable"]["example.com/thing"] = "lots"
    hw = node_hardware([ready(raw), ready(arm64_node("arm"))], [])
    assert any("nvidia.com/gpu.compute.major='nine'" in p for p in hw[0].problems)
    assert any("example.com/thing" in p for p in hw[0].problems)
    assert "vram-ge-80g" in hw[0].gpus[0].tags and not {t for t in hw[0].gpus[0].tags if t.startswith("cc-")}
    assert hw[1].tags == frozenset({"arm64", "aarch64"})


@pytest.mark.parametrize(("status", "cordoned", "schedulable"), [("True", False, True), ("False", False, False), ("Unknown", False, False), ("True", True, False)])
def test_only_a_ready_uncordoned_node_is_schedulable(status: str, cordoned: bool, schedulable: bool) -> None:
    raw = fake_node("n")
    raw["spec"]["unschedulable"] = cordoned
    assert node_hardware([ready(raw, status)], [])[0].schedulable is schedulable


def test_a_node_without_an_arch_label_claims_no_arch() -> None:
    raw = fake_node("n")
    del raw["metadata"]["labels"]["kubernetes.io/arch"]
    [hw] = node_hardware([ready(raw)], [])
    assert hw.arch is None and hw.tags == frozenset()
    assert unservable(frozenset({"amd64"}), [hw]) is not None


@pytest.mark.parametrize(("text", "value"), [("2", 2), ("500m", Decimal("0.5")), ("256Gi", 256 * 2**30), ("1k", 1000), ("1e3", 1000), ("0.5Mi", 2**19)])
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1.2.3", "5Gb", "1e3Mi", "Gi"])
def test_malformed_quantities_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_the_cluster_as_the_planners_host_offers_each_free_gpu_unit_of_a_ready_node_once() -> None:
    """cluster_host (ADR-016): free units only (allocatable minus what runs), none of a node
    that is not Ready or is cordoned, other architectures as the planner's foreign ones, and a
    job planned onto a unit whose tags are a host GPU's of that model."""
    h100, l4 = ready(nvidia_node("h100", count=2)), ready(nvidia_node("l4", product="NVIDIA-L4", memory_mib=23034, count=1, compute=(8, 9)))
    cordoned = nvidia_node("cordoned", count=4)
    cordoned["spec"]["unschedulable"] = True
    hardware = node_hardware([h100, l4, ready(cordoned), ready(arm64_node("arm")), ready(nvidia_node("down", count=4), "False")],
                             [pod("busy", "h100", "Running", {"nvidia.com/gpu": "1"})])  # fmt: skip
    agent = Host(hostname="agent", arch="amd64", cpus=1, memory_mb=1)
    host = cluster_host(agent, hardware)
    assert sorted(g.id for g in host.gpus) == ["h100/nvidia.com/gpu#0", "l4/nvidia.com/gpu#0"]
    assert host.emulated == ["arm64"] and host.arch == "amd64" and host.cpus == 32 * 3 and host.memory_mb == 256 * 1024 * 3
    assert unit_resource("h100/nvidia.com/gpu#0") == ("h100", "nvidia.com/gpu") and unit_resource("GPU-0") is None
    # the DRA driver's devices the daemon adds (`<node>/<pool>/<device>`) stay; a host's own GPU does not
    dra = Gpu(id="b200/b200/gpu-0", vendor=GpuVendor.NVIDIA, model="NVIDIA B200", memory_mb=183359)
    own = Gpu(id="GPU-1234", vendor=GpuVendor.NVIDIA, model="NVIDIA T4", memory_mb=15360)
    with_dra = cluster_host(agent.model_copy(update={"gpus": [dra, own]}), hardware)
    assert sorted(g.id for g in with_dra.gpus) == ["b200/b200/gpu-0", "h100/nvidia.com/gpu#0", "l4/nvidia.com/gpu#0"]
    now = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
    jobs = [Job(id=1, project_id=1, tags=["gpu", "vram-ge-40g"], created_at=now), Job(id=2, project_id=1, tags=["gpu", "vram-ge-40g"], created_at=now)]
    plan = decide(Observation(host=host, jobs=jobs, policy=Policy(max_runners=4, runner_cpus=0, runner_memory_mb=0), now=now))
    [start] = plan.start
    assert start.gpu == "h100/nvidia.com/gpu#0" and start.for_jobs == [1]  # the L4 is too small; the busy H100 unit is not offered
    [wait] = plan.waiting
    assert wait.job == 2
