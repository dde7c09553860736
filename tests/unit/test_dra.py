"""agent/dra.py: a GPU job's tags → the DRA claim its pod carries. The ResourceSlices here are
shaped as the NVIDIA DRA driver publishes them (kubernetes-sigs/dra-driver-nvidia-gpu,
cmd/gpu-kubelet-plugin/deviceinfo.go and mig.go: `type`, `productName`, `cudaComputeCapability`
as a version, `memory` capacity from NVML's total); the memory figures are NVML's for each board
(docs/gpu/README.md: an H100 80GB reports 81559 MiB). The real kube-scheduler allocating these
claims is tests/k8s/test_dra_scheduler.py."""

from __future__ import annotations

from decimal import Decimal

import pytest

from autogit.agent.dra import GPU_CLASS, MIG_CLASS, ClaimPlan, NoDevice, claim_for, devices_from_slices, parse_quantity

MIB = 1024**2


def device(name: str, product: str, memory_mib: int, cc: str, kind: str = "gpu", profile: str | None = None) -> dict:
    attributes = {
        "type": {"string": kind},
        "uuid": {"string": f"GPU-{name}"},
        "productName": {"string": product},
        "brand": {"string": "Nvidia"},
        "architecture": {"string": "Hopper"},
        "cudaComputeCapability": {"version": f"{cc}.0"},
        "driverVersion": {"version": "580.159.4"},
    }
    if profile:
        attributes["profile"] = {"string": profile}
    return {"name": name, "attributes": attributes, "capacity": {"memory": {"value": str(memory_mib * MIB)}}}


def slice_of(node: str, *devices: dict, driver: str = "gpu.nvidia.com") -> dict:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "spec": {"driver": driver, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1}, "devices": list(devices)}}  # fmt: skip


SLICES = [
    slice_of("gpu-l4", device("gpu-0", "NVIDIA L4", 23034, "8.9")),
    slice_of("gpu-a100", device("gpu-0", "NVIDIA A100-SXM4-40GB", 40960, "8.0")),
    slice_of("gpu-h100", device("gpu-0", "NVIDIA H100 80GB HBM3", 81559, "9.0")),
    slice_of("gpu-mig", device("gpu-0-mig-1g10gb-0", "NVIDIA H100 80GB HBM3", 9984, "9.0", kind="mig", profile="1g.10gb")),
    slice_of("nic", {"name": "eth0", "attributes": {}}, driver="dra.net"),  # another driver: ignored
]
DEVICES, PROBLEMS = devices_from_slices(SLICES)


def only_request(plan: ClaimPlan | NoDevice) -> dict:
    assert isinstance(plan, ClaimPlan), plan
    [request] = plan.spec["spec"]["devices"]["requests"]
    return request


def test_slices_are_read_as_devices_with_the_hosts_tags() -> None:
    assert PROBLEMS == []
    by_node = {d.node: d for d in DEVICES}
    assert set(by_node) == {"gpu-l4", "gpu-a100", "gpu-h100", "gpu-mig"}
    h100 = by_node["gpu-h100"]
    assert {"gpu", "h100", "vram-80g", "vram-ge-80g", "vram-ge-40g", "cc-9.0", "cc-ge-8.9", "cuda", "nvidia"} <= h100.tags
    assert "vram-ge-96g" not in h100.tags
    mig = by_node["gpu-mig"]
    assert {"mig", "mig-1g.10gb", "vram-ge-10g"} <= mig.tags and "gpu" not in mig.tags


def test_a_40g_floor_lists_the_fitting_products_smallest_first_and_states_the_floor() -> None:
    request = only_request(plan := claim_for({"gpu", "vram-ge-40g"}, DEVICES))
    assert isinstance(plan, ClaimPlan)
    assert plan.alternatives == ["NVIDIA A100-SXM4-40GB (40 GiB)", "NVIDIA H100 80GB HBM3 (80 GiB)"]
    subrequests = request["firstAvailable"]
    assert [s["deviceClassName"] for s in subrequests] == [GPU_CLASS, GPU_CLASS]
    first = subrequests[0]["selectors"][0]["cel"]["expression"]
    # the floor itself, with tags.memory_gib's round-up rule: more than 39 GiB is a 40 GiB card
    assert "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('39Gi')) > 0" in first
    assert "productName in ['NVIDIA A100-SXM4-40GB']" in first
    assert "L4" not in str(request)


def test_one_fitting_product_is_one_exact_request_by_floors_alone() -> None:
    request = only_request(claim_for({"gpu", "vram-ge-80g", "cc-ge-9.0"}, DEVICES))
    exactly = request["exactly"]
    assert exactly["deviceClassName"] == GPU_CLASS and exactly["count"] == 1
    expression = exactly["selectors"][0]["cel"]["expression"]
    assert "compareTo(quantity('79Gi')) > 0" in expression
    assert "cudaComputeCapability.compareTo(semver('9.0.0')) >= 0" in expression
    assert "productName" not in expression  # floors alone say it: a bigger card added later fits too


def test_a_family_tag_pins_the_products_that_carry_it() -> None:
    expression = only_request(claim_for({"gpu", "h100"}, DEVICES))["exactly"]["selectors"][0]["cel"]["expression"]
    assert expression == "(device.attributes['gpu.nvidia.com'].productName in ['NVIDIA H100 80GB HBM3'])"


def test_a_mig_profile_uses_the_mig_class_and_never_a_whole_gpu() -> None:
    exactly = only_request(claim_for({"mig-1g.10gb"}, DEVICES))["exactly"]
    assert exactly["deviceClassName"] == MIG_CLASS
    assert "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'" in exactly["selectors"][0]["cel"]["expression"]
    whole = only_request(claim_for({"gpu", "vram-ge-8g"}, DEVICES))
    assert all(s["deviceClassName"] == GPU_CLASS for s in whole["firstAvailable"])


def test_a_job_no_device_fits_gets_a_reason_naming_what_is_missing() -> None:
    plan = claim_for({"gpu", "vram-ge-141g"}, DEVICES)
    assert isinstance(plan, NoDevice)
    assert "vram-ge-141g" in plan.reason and "gpu.nvidia.com" in plan.reason


def test_node_tags_are_left_to_node_affinity() -> None:
    request = only_request(
        claim_for({"gpu", "vram-ge-80g", "amd64", "big-disk"}, DEVICES, node_tags=frozenset({"amd64", "x86_64", "big-disk"}))
    )
    assert request["exactly"]["deviceClassName"] == GPU_CLASS


def test_more_products_than_first_available_may_list_are_kept_in_a_last_group() -> None:
    many = [slice_of(f"n{i}", device("gpu-0", f"NVIDIA Test {i}", 20000 + 1024 * i, "9.0")) for i in range(10)]
    devices, _ = devices_from_slices(many)
    subrequests = only_request(claim_for({"gpu"}, devices))["firstAvailable"]
    assert len(subrequests) == 8
    assert "'NVIDIA Test 7', 'NVIDIA Test 8', 'NVIDIA Test 9'" in subrequests[-1]["selectors"][0]["cel"]["expression"]


def test_a_bad_device_is_skipped_with_one_line_and_the_rest_are_read() -> None:
    broken = slice_of("odd", {"name": "gpu-9", "attributes": {"type": {"string": "gpu"}}}, device("gpu-1", "NVIDIA L4", 23034, "8.9"))
    devices, problems = devices_from_slices([broken])
    assert [d.name for d in devices] == ["gpu-1"]
    assert problems == ["ResourceSlice device odd/odd/gpu-9: no productName attribute"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("80Gi", 80 * 1024**3), ("85520809984", 85520809984), ("1e3", 1000), ("500m", Decimal("0.5")), ("16G", 16 * 10**9), ("1.5Ki", 1536)],
)
def test_quantities_parse_as_kubernetes_writes_them(text: str, value: int | Decimal) -> None:
    assert parse_quantity(text) == value


def test_a_malformed_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity("80 GiB")
