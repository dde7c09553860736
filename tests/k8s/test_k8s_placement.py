"""Hardware read from the real API server's Node objects, and job pods placed by the real
scheduler with the constraints `placement` derives from the job's tags: a job with a memory
floor lands only on a node whose GPU reaches it, a compute-capability floor likewise, a MIG
slice through its own resource, arm64 on arm64; capacity counts what runs."""

from __future__ import annotations

import json
import time
from typing import Any

from k8s.cluster import Cluster
from k8s.images import BUSYBOX_IMAGE
from k8s.nodes import FAKE_TOLERATION, TEST_LABEL, arm64_node, nvidia_node

from autogit.agent.inventory.kubernetes import Node, Pod, node_hardware, unservable
from autogit.agent.runtime.kubernetes import placement
from autogit.agent.tags import arch_of_tag


def hardware(cluster: Cluster, suffix: str) -> list[Any]:
    nodes = [Node.model_validate(n) for n in cluster.kubectl_json("get", "nodes", "-l", f"{TEST_LABEL}=fake")["items"] if n["metadata"]["name"].endswith(suffix)]
    pods = [Pod.model_validate(p) for p in cluster.kubectl_json("get", "pods", "-A")["items"]]
    return node_hardware(nodes, pods)


def job_pod(name: str, tags: frozenset[str], hw: list[Any]) -> dict[str, Any]:
    """The pod a runner would create for a job: the smallest GPU profile that carries its tags."""
    arch = next((a for t in tags if (a := arch_of_tag(t))), None)
    gpu = None
    if not any(tags <= h.tags for h in hw):  # no node serves it without a GPU
        fits = sorted((g for h in hw for g in h.gpus if tags <= g.tags and g.free > 0), key=lambda g: (g.memory_mb, g.node))
        gpu = fits[0]
    where = placement(tags, arch, gpu)
    container: dict[str, Any] = {"name": "job", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
    if where.limits:
        container["resources"] = {"limits": where.limits}
    spec = {"containers": [container], "restartPolicy": "Never", "terminationGracePeriodSeconds": 1} | where.pod_spec([FAKE_TOLERATION])
    # keep job pods off the real node: this test is about the fake hardware
    spec.setdefault("nodeSelector", {})[TEST_LABEL] = "fake"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def node_of(cluster: Cluster, ns: str, name: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        pod = cluster.kubectl_json("get", "pod", name, "-n", ns)
        if pod["spec"].get("nodeName"):
            return str(pod["spec"]["nodeName"])
        assert time.monotonic() < deadline, f"{name} unscheduled: {json.dumps(pod['status'])[:800]}"
        time.sleep(0.3)


def test_jobs_land_only_on_nodes_whose_hardware_carries_their_tags(k8s_cluster: Cluster, k8s_namespace: str, fake_nodes: Any) -> None:
    s = k8s_namespace[2:]
    fake_nodes(
        nvidia_node(f"l4-{s}", product="NVIDIA-L4", memory_mib=23034, count=4, compute=(8, 9), family="ada-lovelace"),
        nvidia_node(f"l40s-{s}", product="NVIDIA-L40S", memory_mib=46068, count=1, compute=(8, 9), family="ada-lovelace"),
        nvidia_node(f"h100-{s}", count=2),
        nvidia_node(f"a100-{s}", product="NVIDIA-A100-SXM4-80GB", memory_mib=81920, count=1, compute=(8, 0), family="ampere",
                    mig={"1g.10gb": (7, 9728)}),  # fmt: skip
        arm64_node(f"arm-{s}"),
    )
    hw = hardware(k8s_cluster, s)
    assert len(hw) == 5
    cases = {
        "floor40": (frozenset({"gpu", "vram-ge-40g"}), {f"l40s-{s}", f"h100-{s}", f"a100-{s}"}),
        "cc90": (frozenset({"gpu", "cc-ge-9.0"}), {f"h100-{s}"}),
        "slice": (frozenset({"mig-1g.10gb"}), {f"a100-{s}"}),
        "arm": (frozenset({"arm64"}), {f"arm-{s}"}),
        "small": (frozenset({"gpu", "vram-ge-16g"}), {f"l4-{s}", f"l40s-{s}", f"h100-{s}", f"a100-{s}"}),
    }
    for name, (tags, _) in cases.items():
        k8s_cluster.kubectl("create", "-n", k8s_namespace, "-f", "-", input=json.dumps(job_pod(name, tags, hw)))
    for name, (tags, allowed) in cases.items():
        node = node_of(k8s_cluster, k8s_namespace, name)
        assert node in allowed, f"{name} {sorted(tags)} landed on {node}"
        assert tags <= next(h for h in hw if h.node == node).tags | frozenset().union(*(g.tags for g in next(h for h in hw if h.node == node).gpus))

    # what runs is counted: the pods above hold their GPUs
    after = {h.node: h for h in hardware(k8s_cluster, s)}
    assert sum(g.used for h in after.values() for g in h.gpus) == 4
    assert {g.resource: g.free for g in after[f"a100-{s}"].gpus}["nvidia.com/mig-1g.10gb"] == 6

    why = unservable(frozenset({"gpu", "vram-ge-96g"}), list(after.values()))
    assert why is not None and why.missing_tags == ("vram-ge-96g",)


def test_a_floor_never_falls_to_a_smaller_gpu_when_the_big_ones_are_full(k8s_cluster: Cluster, k8s_namespace: str, fake_nodes: Any) -> None:
    s = k8s_namespace[2:]
    fake_nodes(nvidia_node(f"l4-{s}", product="NVIDIA-L4", memory_mib=23034, count=8, compute=(8, 9)), nvidia_node(f"h100-{s}", count=1))
    hw = hardware(k8s_cluster, s)
    tags = frozenset({"gpu", "vram-ge-40g"})
    first, second = job_pod("first", tags, hw), job_pod("second", tags, hw)
    for pod in (first, second):
        k8s_cluster.kubectl("create", "-n", k8s_namespace, "-f", "-", input=json.dumps(pod))
    assert node_of(k8s_cluster, k8s_namespace, "first") == f"h100-{s}"
    deadline = time.monotonic() + 20
    while True:  # the second waits for the H100 rather than taking an L4 with eight free GPUs
        pod = k8s_cluster.kubectl_json("get", "pod", "second", "-n", k8s_namespace)
        cond = next((c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"), None)
        if cond and cond["status"] == "False":
            break
        assert time.monotonic() < deadline, pod["status"]
        time.sleep(0.3)
    assert not pod["spec"].get("nodeName")
    assert "Insufficient nvidia.com/gpu" in cond["message"] and "node affinity" in cond["message"], cond["message"]
