"""The test cluster itself: a real pod on the real kubelet, and kwok nodes with GPU resources
placed by the real scheduler (nodeSelector on GPU Feature Discovery labels + a GPU limit)."""

from __future__ import annotations

import json
import time
from typing import Any

from k8s.cluster import NODE_NAME, Cluster
from k8s.images import BUSYBOX_IMAGE
from k8s.nodes import FAKE_TOLERATION, TEST_LABEL, many_nodes, nvidia_node


def _pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": command} | spec.pop("container", {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container], "terminationGracePeriodSeconds": 1} | spec}  # fmt: skip


def _wait_pod(cluster: Cluster, ns: str, name: str, predicate: Any, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = cluster.kubectl_json("get", "pod", name, "-n", ns)
        if predicate(pod):
            return pod
        assert time.monotonic() < deadline, f"pod {name}: {json.dumps(pod.get('status'))[:1500]}"
        time.sleep(0.3)


def test_a_real_pod_runs_on_the_real_kubelet(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    pod = _pod("hello", ["sh", "-c", "echo hello from $(uname -m) in $(cat /etc/hostname)"])
    k8s_cluster.kubectl("create", "-n", k8s_namespace, "-f", "-", input=json.dumps(pod))
    done = _wait_pod(k8s_cluster, k8s_namespace, "hello", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["spec"]["nodeName"] == NODE_NAME  # the fake nodes are tainted: the real kubelet ran it
    assert done["status"]["podIP"].startswith("10.244.")  # an address from the CNI bridge
    # logs travel apiserver → kubelet: the whole control path is real
    assert k8s_cluster.kubectl("logs", "-n", k8s_namespace, "hello").stdout.strip() == "hello from x86_64 in hello"


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    """In-cluster clients (the chart's agent, the runner's Kubernetes executor) find the API
    server as KUBERNETES_SERVICE_HOST:PORT, the `kubernetes` Service (cluster.py routes it)."""
    # busybox's TLS client cannot talk to Go's TLS 1.3 server (the agent's image can: the chart
    # test), so plain HTTP: Go's TLS listener answers it with its own 400, which names HTTPS.
    script = 'printf "GET /version HTTP/1.0\\r\\n\\r\\n" | nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT'
    k8s_cluster.kubectl("create", "-n", k8s_namespace, "-f", "-", input=json.dumps(_pod("in-cluster", ["sh", "-c", script])))
    done = _wait_pod(k8s_cluster, k8s_namespace, "in-cluster", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"))
    out = k8s_cluster.kubectl("logs", "-n", k8s_namespace, "in-cluster").stdout
    assert done["status"]["phase"] == "Succeeded", out
    assert "Client sent an HTTP request to an HTTPS server" in out, out


def test_a_kwok_gpu_node_gets_the_pod_that_asks_for_its_gpus(k8s_cluster: Cluster, k8s_namespace: str, fake_nodes: Any) -> None:
    suffix = k8s_namespace[2:]
    h100, l4 = f"kwok-h100-{suffix}", f"kwok-l4-{suffix}"
    fake_nodes(nvidia_node(h100, count=8),
               nvidia_node(l4, product="NVIDIA-L4", memory_mib=23034, count=1, compute=(8, 9), family="ada-lovelace"))  # fmt: skip
    wants_h100 = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "tolerations": [FAKE_TOLERATION]}
    limits = {"resources": {"limits": {"nvidia.com/gpu": "2"}}}
    k8s_cluster.kubectl("create", "-n", k8s_namespace, "-f", "-", input=json.dumps(_pod("train", ["sleep", "3600"], container=limits, **wants_h100)))
    placed = _wait_pod(k8s_cluster, k8s_namespace, "train", lambda p: p["status"].get("phase") == "Running")
    assert placed["spec"]["nodeName"] == h100

    too_many = {"resources": {"limits": {"nvidia.com/gpu": "7"}}}  # 8 - 2 held = 6 left
    k8s_cluster.kubectl("create", "-n", k8s_namespace, "-f", "-", input=json.dumps(_pod("greedy", ["sleep", "1"], container=too_many, **wants_h100)))
    pending = _wait_pod(k8s_cluster, k8s_namespace, "greedy",
                        lambda p: any(c["type"] == "PodScheduled" and c["status"] == "False" for c in p["status"].get("conditions", [])))  # fmt: skip
    reason = next(c["message"] for c in pending["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "Insufficient nvidia.com/gpu" in reason, reason
    assert pending["status"]["phase"] == "Pending"


def test_hundreds_of_fake_nodes_become_ready(k8s_cluster: Cluster, fake_nodes: Any) -> None:
    names = fake_nodes(*many_nodes(300, prefix="kwok-many"))
    deadline = time.monotonic() + 180
    while True:
        nodes = k8s_cluster.kubectl_json("get", "nodes", "-l", f"{TEST_LABEL}=fake")["items"]
        ready = {n["metadata"]["name"] for n in nodes if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))}
        if set(names) <= ready:
            break
        assert time.monotonic() < deadline, f"{len(set(names) - ready)} of {len(names)} fake nodes not Ready"
        time.sleep(1)
    gpus = {n["metadata"]["name"]: n["status"]["allocatable"].get("nvidia.com/gpu") for n in nodes if n["metadata"]["name"] in names}
    assert sum(1 for g in gpus.values() if g) == 75  # every fourth node, from the second on
