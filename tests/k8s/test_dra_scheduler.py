"""GPU fit by DRA against the real kube-scheduler (issue 22 item 2): kwok nodes with
ResourceSlices published through the API as the NVIDIA DRA driver would publish them (no DRA
driver is served here: tests/unit/test_dra.py cites where each attribute comes from), the
driver's two DeviceClasses as its Helm chart writes them, and the claims agent/dra.py builds
from a job's tags. The scheduler's DRA plugin allocates from ResourceSlices alone; the kubelet
would call the driver only to prepare an allocated device, and kwok's fake kubelet calls
nothing, so the whole allocation path here is the real one."""

from __future__ import annotations

import json
import time
from typing import Any

from k8s.nodes import FAKE_TOLERATION, fake_node

from autogit.agent.dra import ClaimPlan, NoDevice, claim_for, devices_from_slices

MIB = 1024**2
DRIVER = "gpu.nvidia.com"


def device_class(name: str, kind: str) -> dict[str, Any]:
    # deployments/helm/dra-driver-nvidia-gpu/templates/deviceclass-{gpu,mig}.yaml (NVIDIA/k8s-dra-driver-gpu
    # 22407113); extendedResourceName is left out: it needs the DRAExtendedResource gate.
    return {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": name},
            "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == '{kind}'"}}]}}  # fmt: skip


def resource_slice(node: str, product: str, memory_mib: int, cc: str) -> dict[str, Any]:
    attributes = {
        "type": {"string": "gpu"}, "uuid": {"string": f"GPU-{node}"}, "productName": {"string": product},
        "brand": {"string": "Nvidia"}, "architecture": {"string": "test"}, "cudaComputeCapability": {"version": f"{cc}.0"},
        "driverVersion": {"version": "580.159.4"},
    }  # fmt: skip
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node}-gpu", "labels": {"autogit.test/k8s": "dra"}},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "gpu-0", "attributes": attributes, "capacity": {"memory": {"value": f"{memory_mib}Mi"}}}],
        },  # fmt: skip
    }


def gpu_pod(name: str, namespace: str, template: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "tolerations": [FAKE_TOLERATION],
            "nodeSelector": {"autogit.test/dra": "yes"},
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template}],
            "containers": [{"name": "job", "image": "autogit-test/none:1", "resources": {"claims": [{"name": "gpu"}]}}],
        },
    }


def _wait(check, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()) is not None:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _unschedulable(cluster, ns: str, pod: str) -> str | None:
    status = cluster.kubectl_json("get", "pod", pod, "-n", ns)["status"]
    for cond in status.get("conditions", []):
        if cond["type"] == "PodScheduled" and cond["status"] == "False" and cond.get("reason") == "Unschedulable":
            return str(cond.get("message", ""))
    return None


def test_the_scheduler_allocates_the_devices_the_claim_states_smallest_first(k8s_cluster, k8s_namespace, fake_nodes) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    l4, a100, h100 = (f"dra-{kind}-{ns}" for kind in ("l4", "a100", "h100"))
    fake_nodes(*(fake_node(n, labels={"autogit.test/dra": "yes"}) for n in (l4, a100, h100)))
    slices = [
        resource_slice(l4, "NVIDIA L4", 23034, "8.9"),
        resource_slice(a100, "NVIDIA A100-SXM4-40GB", 40960, "8.0"),
        resource_slice(h100, "NVIDIA H100 80GB HBM3", 81559, "9.0"),
    ]
    classes = [device_class("gpu.nvidia.com", "gpu"), device_class("mig.nvidia.com", "mig")]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": classes + slices}))
    try:
        # What the agent reads back from the API is what it plans with.
        listed = cluster.kubectl_json("get", "resourceslices", "-l", "autogit.test/k8s=dra")["items"]
        devices, problems = devices_from_slices([s for s in listed if s["spec"]["nodeName"] in (l4, a100, h100)])
        assert problems == [] and len(devices) == 3

        plan = claim_for({"gpu", "vram-ge-40g"}, devices)
        assert isinstance(plan, ClaimPlan)
        assert plan.alternatives == ["NVIDIA A100-SXM4-40GB (40 GiB)", "NVIDIA H100 80GB HBM3 (80 GiB)"]
        template = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                    "metadata": {"name": "vram-ge-40g", "namespace": ns}, "spec": plan.spec}  # fmt: skip
        cluster.apply(template)

        # Three 40 GiB-floor jobs, one after the other: the A100 (first alternative), then the
        # H100 (the next), then none is left: Pending, with the scheduler's reason. Never the L4.
        bound: list[str] = []
        for job in ("job-a", "job-b"):
            cluster.apply(gpu_pod(job, ns, "vram-ge-40g"))
            bound.append(_wait(lambda job=job: cluster.kubectl_json("get", "pod", job, "-n", ns)["spec"].get("nodeName"), f"{job} bound"))
        assert bound == [a100, h100]
        allocated = sorted(
            (r["pool"], r["device"], r.get("request"))
            for c in cluster.kubectl_json("get", "resourceclaims", "-n", ns)["items"]
            for r in c["status"]["allocation"]["devices"]["results"]
        )
        assert allocated == [(a100, "gpu-0", "gpu/p0"), (h100, "gpu-0", "gpu/p1")]

        cluster.apply(gpu_pod("job-c", ns, "vram-ge-40g"))
        message = _wait(lambda: _unschedulable(cluster, ns, "job-c"), "job-c unschedulable")
        assert "claim" in message.lower(), message
        assert not cluster.kubectl_json("get", "pod", "job-c", "-n", ns)["spec"].get("nodeName")

        # A floor no device meets is not asked for: the agent's wait reason names the tag.
        none = claim_for({"gpu", "vram-ge-141g"}, devices)
        assert isinstance(none, NoDevice) and "vram-ge-141g" in none.reason
    finally:
        cluster.kubectl("delete", "pods", "--all", "-n", ns, "--wait=true", "--timeout=60s", check=False, timeout=90)
        cluster.kubectl("delete", "resourceslices", "-l", "autogit.test/k8s=dra", check=False)
        cluster.kubectl("delete", "deviceclass", "gpu.nvidia.com", "mig.nvidia.com", check=False)
