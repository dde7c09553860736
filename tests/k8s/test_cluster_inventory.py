"""The watch-based cluster inventory (agent/inventory/cluster.py, ADR-016) on the real API server:
kwok nodes of this test's own label appear, change and disappear in memory as the API server
says; a pod's GPU request takes the node's free GPUs; the real reconciler re-plans a GPU job
within one pass of the node's arrival and departure, woken by the watch; and N passes make no
LIST: the requests are counted at the client's REST transport (ApiCounter), so what is counted
is what the API server received."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from k8s.cluster import Cluster
from k8s.nodes import FAKE_TOLERATION, nvidia_node
from k8s.test_leader_election import Relay, _via
from pydantic import SecretStr

from autogit.agent.api import schema
from autogit.agent.api.client import format_cluster
from autogit.agent.api.openapi import openapi_document
from autogit.agent.api.server import ApiServer
from autogit.agent.config import AgentConfig, ApiConfig
from autogit.agent.gitlab.adapter import GitLabAdapter
from autogit.agent.inventory.cluster import ClusterInventory
from autogit.agent.inventory.cpu import observe_cpu
from autogit.agent.inventory.kubernetes import NodeHardware
from autogit.agent.metrics import AgentMetrics
from autogit.agent.model import Host, WaitReason
from autogit.agent.reconciler import Reconciler
from autogit.agent.runtime import build_runtime
from autogit.agent.runtime.k8s_runtime import KubernetesRuntime
from autogit.agent.state import AgentPhase, AgentState
from autogit.gitlab_double.gitlab_sim import GitLabSimulator

VIEW_LABEL = "autogit.test/view"  # this file's nodes only: the agent's node_selector selects it
_DOC = openapi_document()
STATUS_SCHEMA = jsonschema_rs.Draft202012Validator({"$ref": "#/components/schemas/StatusResponse", "components": _DOC["components"]})


@pytest.fixture
def mark() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def own_nodes(k8s_cluster: Cluster, mark: str) -> Iterator[Callable[..., str]]:
    """Create kwok nodes carrying `<VIEW_LABEL>=<mark>`; all of them deleted afterwards."""
    created: list[str] = []

    def create(node: dict[str, Any]) -> str:
        node["metadata"]["labels"][VIEW_LABEL] = mark
        created.append(node["metadata"]["name"])
        k8s_cluster.kubectl("create", "-f", "-", input=json.dumps(node))
        return str(node["metadata"]["name"])

    yield create
    k8s_cluster.kubectl("delete", "nodes", "-l", f"{VIEW_LABEL}={mark}", "--wait=false", check=False)


def _config(cluster: Cluster, namespace: str, mark: str, gitlab_url: str = "http://127.0.0.1:1") -> AgentConfig:
    return AgentConfig.model_validate({
        "hostname": f"v{mark}",
        "gitlab": {"url": gitlab_url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 0.5, "request_timeout": 3, "max_retries": 0},
        "scaling": {"max_runners": 4, "runner_cpus": 0, "runner_memory_mb": 0, "reserved_cpus": 0, "reserved_memory_mb": 0},
        "fleet": {"enabled": False},
        "runner": {"runtime": "kubernetes", "drain_timeout": 600,
                   "kubernetes": {"namespace": namespace, "kubeconfig": str(cluster.kubeconfig), "node_selector": f"{VIEW_LABEL}={mark}"}},
    })  # fmt: skip


def _inventory(config: AgentConfig, runtime: KubernetesRuntime, on_change: Callable[[str], None]) -> ClusterInventory:
    return ClusterInventory(config.runner.kubernetes, runtime.api_configuration, config.hostname or "", on_node_change=on_change)


async def _until(what: str, done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        assert asyncio.get_running_loop().time() < deadline, f"waited {timeout:.0f} s for {what}"
        await asyncio.sleep(0.05)


def _node(inventory: ClusterInventory, name: str) -> NodeHardware | None:
    return next((h for h in inventory.hardware() or [] if h.node == name), None)


async def test_nodes_appear_change_and_go_in_memory_and_pods_take_their_gpus(
    k8s_cluster: Cluster, k8s_namespace: str, own_nodes: Callable[..., str], mark: str
) -> None:
    config = _config(k8s_cluster, k8s_namespace, mark)
    runtime = build_runtime(config, f"v{mark}", Host(arch="amd64", cpus=1, memory_mb=1))
    assert isinstance(runtime, KubernetesRuntime)
    lines: list[str] = []
    inventory = _inventory(config, runtime, lines.append)
    # Unknown before the first list: never an empty cluster.
    assert inventory.hardware() is None and not inventory.report().known
    await inventory.start()
    try:
        assert await inventory.wait_known(30), inventory.why_unknown()
        assert inventory.hardware() == []  # listed: none of this test's nodes yet (the selector hides everyone else's)

        name = own_nodes(nvidia_node(f"view-{mark}-gpu", count=8))
        await _until("the node added", lambda: _node(inventory, name) is not None)
        node = _node(inventory, name)
        assert node is not None
        [h100] = node.gpus
        assert {"gpu", "nvidia", "vram-ge-80g", "cc-ge-9.0", "amd64"} <= h100.tags and (h100.allocatable, h100.free) == (8, 8)
        assert any(line == f"node {name} added (amd64)" for line in lines), lines

        k8s_cluster.kubectl("label", "node", name, "--overwrite", "nvidia.com/gpu.product=NVIDIA-L4", "nvidia.com/gpu.memory=23034",
                            "nvidia.com/gpu.compute.major=8", "nvidia.com/gpu.compute.minor=9")  # fmt: skip
        await _until("the relabel seen", lambda: "vram-ge-80g" not in _gpu_tags(inventory, name))
        assert "cc-ge-8.9" in _gpu_tags(inventory, name) and not {"cc-ge-9.0", "vram-ge-40g"} & _gpu_tags(inventory, name)
        assert f"node {name} changed (labels)" in lines

        # Capacity is allocatable minus what runs: a pod bound to the node holding 3 GPUs.
        # It is labelled as a job pod of this agent's runner r1 (ADR-013's labels): the operator's view lists it.
        labels = {"autogit.io/agent": f"v{mark}", "autogit.io/job-of": "r1"}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holds-gpus", "namespace": k8s_namespace, "labels": labels},
               "spec": {"nodeName": name, "tolerations": [FAKE_TOLERATION],
                        "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "3"}}}]}}  # fmt: skip
        k8s_cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
        await _until("the pod's GPUs counted", lambda: _free(inventory, name) == 5)
        [view] = inventory.report().runner_pods
        assert (view.runner, view.pod, view.role, view.node) == ("r1", "holds-gpus", "job", name) and view.phase in ("Pending", "Running")
        [reported] = inventory.report().nodes
        assert (reported.gpus_allocatable, reported.gpus_used, reported.gpus_free, reported.ready) == (8, 3, 5, True), reported
        k8s_cluster.kubectl("delete", "pod", "holds-gpus", "-n", k8s_namespace, "--grace-period=0", "--force", "--wait=true")
        await _until("the pod's GPUs free again", lambda: _free(inventory, name) == 8)

        k8s_cluster.kubectl("delete", "node", name, "--wait=true")
        await _until("the node gone", lambda: _node(inventory, name) is None)
        assert f"node {name} removed" in lines
        # Everything above came from one LIST of each kind and the watches that followed it.
        assert inventory.api.total("list") == 2, inventory.api.counts
    finally:
        await inventory.close()
        await runtime.close()


def _gpu_tags(inventory: ClusterInventory, name: str) -> frozenset[str]:
    node = _node(inventory, name)
    return frozenset().union(*(g.tags for g in node.gpus)) if node else frozenset()


def _free(inventory: ClusterInventory, name: str) -> int | None:
    node = _node(inventory, name)
    return sum(g.free for g in node.gpus) if node else None


async def _cli(*args: str) -> str:
    """`autogit-agent <args>` as an operator runs it (a process of its own), while this loop serves the socket."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "autogit.agent.cli", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_reconciler_replans_a_gpu_job_within_one_pass_of_a_node_change_and_passes_make_no_list(
    k8s_cluster: Cluster, k8s_namespace: str, own_nodes: Callable[..., str], mark: str, tmp_path: Path
) -> None:
    sim = GitLabSimulator(host="127.0.0.1")
    await sim.start()
    config = _config(k8s_cluster, k8s_namespace, mark, sim.url)
    cpu = observe_cpu()
    host = Host(hostname=f"v{mark}", arch=cpu.arch, cpus=cpu.cpus, memory_mb=cpu.memory_mb)
    runtime = build_runtime(config, f"v{mark}", host)
    assert isinstance(runtime, KubernetesRuntime)
    state = AgentState()
    inventory = _inventory(config, runtime, lambda line: state.wake.set())
    # A follower (leader election's gate): it observes, plans and publishes, and acts on nothing,
    # so the test reads the plan the pass made without runner pods being created.
    reconciler = Reconciler(config, state, runtime, GitLabAdapter(config.gitlab, SecretStr(sim.private_token)), lambda: host,
                            may_act=lambda: False, cluster=inventory)  # fmt: skip
    sock = tmp_path / "agent.sock"
    api = ApiServer(state, ApiConfig(socket=sock, group="root", admin_group="root"), AgentMetrics(), hostname=f"v{mark}")
    await api.start(socket_activation=False)

    async def one_pass_after_wake() -> None:
        state.wake.clear()
        await asyncio.wait_for(state.wake.wait(), 30)  # the watch woke the loop, as hotplug does
        await reconciler.reconcile_once(full_poll=False)

    try:
        # Unknown (not started) is not "no nodes": the pass plans nothing and says why.
        job = sim.add_job(project_id=1, tags=["gpu", "vram-ge-40g"], script=["true"])
        assert await reconciler.reconcile_once(full_poll=True) is None
        assert state.phase is AgentPhase.DEGRADED and state.cluster is not None and not state.cluster.known
        await inventory.start()
        assert await inventory.wait_known(30), inventory.why_unknown()

        plan = await reconciler.reconcile_once(full_poll=True)
        assert plan is not None and not plan.start
        [wait] = [w for w in plan.waiting if w.job == job.id]
        assert wait.reason is WaitReason.NO_MATCHING_HARDWARE and wait.missing_tags == ["gpu", "vram-ge-40g"], wait
        assert "no node of the cluster" in wait.detail
        # The operator's view: why it waits, and a known cluster with none of this test's nodes.
        text = await _cli("status", "--socket", str(sock))
        assert f"job {job.id} [gpu, vram-ge-40g] waits: no-matching-hardware: no node of the cluster has hardware for tags" in text, text
        assert f"cluster: 0 node(s) matching {VIEW_LABEL}={mark}, 0 ready; GPUs 0 allocatable, 0 used, 0 free" in text, text

        name = own_nodes(nvidia_node(f"view-{mark}-h100", count=2))
        await one_pass_after_wake()
        plan = state.plan
        assert plan is not None
        [start] = plan.start
        assert start.for_jobs == [job.id] and start.gpu is not None and start.gpu.startswith(f"{name}/nvidia.com/gpu#"), start
        assert state.cluster is not None and [n.name for n in state.cluster.nodes] == [name]
        doc = json.loads(await _cli("status", "--json", "--socket", str(sock)))
        STATUS_SCHEMA.validate(doc)
        [node] = doc["cluster"]["nodes"]
        assert (node["name"], node["arch"], node["gpu_product"], node["gpus_allocatable"], node["gpus_free"]) == (
            name, "amd64", "NVIDIA H100 80GB HBM3", 2, 2)
        assert doc["cluster"]["known"] and doc["cluster"]["api_requests"]["list /api/v1/nodes"] == 1
        text = await _cli("status", "--socket", str(sock))
        assert "cluster: 1 node(s)" in text and "GPUs 2 allocatable, 0 used, 2 free" in text and name in text, text

        k8s_cluster.kubectl("delete", "node", name, "--wait=true")
        await one_pass_after_wake()
        plan = state.plan
        assert plan is not None and not plan.start and [w.job for w in plan.waiting] == [job.id]

        lists = inventory.api.total("list")
        for _ in range(20):
            await reconciler.reconcile_once(full_poll=False)
        assert lists == 2 and inventory.api.total("list") == 2, inventory.api.counts  # N passes, no LIST
    finally:
        await api.stop()
        await inventory.close()
        await runtime.close()
        await sim.stop()


async def test_an_unreachable_api_server_leaves_the_inventory_unknown_never_empty(tmp_path: Path, k8s_cluster: Cluster) -> None:
    """The cluster's own kubeconfig with its server moved to a closed port: the informers fail
    and back off; the inventory stays unknown and says why."""
    kubeconfig = json.loads(k8s_cluster.kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    config = AgentConfig.model_validate({"runner": {"runtime": "kubernetes", "kubernetes": {"kubeconfig": str(path), "request_timeout": 2}}})
    runtime = build_runtime(config, "unreachable", Host(arch="amd64", cpus=1, memory_mb=1))
    assert isinstance(runtime, KubernetesRuntime)
    inventory = _inventory(config, runtime, lambda line: None)
    await inventory.start()
    try:
        assert not await inventory.wait_known(1.5)
        assert inventory.hardware() is None
        why = inventory.why_unknown()
        assert why is not None and "not listed yet" in why and "unreachable" in why, why
        report = inventory.report()
        assert not report.known and report.nodes == [] and report.unknown_reason == why
        assert format_cluster(schema.ClusterReport.model_validate(report)) == [
            f"cluster: UNKNOWN ({why}): nothing is planned until the nodes are listed"]
    finally:
        await inventory.close()
        await runtime.close()


async def test_an_expired_resource_version_is_listed_again(k8s_cluster: Cluster, k8s_namespace: str, own_nodes: Callable[..., str], mark: str) -> None:
    """A watch renewed from a resourceVersion the API server no longer keeps gets 410 Gone: the
    informer lists again (a second LIST) and carries on watching; a node created after that is
    seen, so nothing was lost."""
    config = _config(k8s_cluster, k8s_namespace, mark)
    runtime = build_runtime(config, f"v{mark}", Host(arch="amd64", cpus=1, memory_mb=1))
    assert isinstance(runtime, KubernetesRuntime)
    inventory = ClusterInventory(config.runner.kubernetes, runtime.api_configuration, f"v{mark}", watch_timeout=1)
    await inventory.start()
    try:
        assert await inventory.wait_known(30), inventory.why_unknown()
        assert inventory.nodes is not None and inventory.nodes.lists == 1
        k8s_cluster.compact_etcd()  # revision 1 is gone from etcd (nodes are not cached: cluster.py)
        nodes = inventory.nodes

        def cut_off() -> bool:
            # As if the agent had been cut off since the cluster's start; set again until a watch
            # starts from it, since an event in the watch in flight moves the version on.
            if nodes.lists < 2:
                nodes.resource_version = "1"
            # `lists` counts a LIST when it starts: the version is the new one once it answered.
            return nodes.lists == 2 and nodes.resource_version != "1"

        await _until("the LIST after 410 Gone", cut_off)
        assert inventory.nodes.known and inventory.nodes.resource_version != "1"
        name = own_nodes(nvidia_node(f"view-{mark}-late", count=1))
        await _until("the node created after the re-list", lambda: _node(inventory, name) is not None)
    finally:
        await inventory.close()
        await runtime.close()


async def test_a_watch_cut_off_past_the_bound_makes_the_inventory_unknown(k8s_cluster: Cluster, k8s_namespace: str, mark: str,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    """Listed and watching, then the API server cut off (a TCP relay that stops relaying, as a
    partition: nothing refused, nothing arrives): once the watch's client deadline passes and
    the failures outlast inventory_stale_after, the inventory is unknown, never empty."""
    relay = Relay(k8s_cluster.state.api_port)
    config = _config(k8s_cluster, k8s_namespace, mark)
    k8s = config.runner.kubernetes.model_copy(update={"kubeconfig": _via(k8s_cluster.kubeconfig, relay.port, tmp_path / "via.kubeconfig"),
                                                      "request_timeout": 2.0, "inventory_stale_after": 1.0})  # fmt: skip
    runtime = KubernetesRuntime(config.runner.model_copy(update={"kubernetes": k8s}), f"v{mark}")
    inventory = ClusterInventory(k8s, runtime.api_configuration, f"v{mark}", watch_timeout=2)
    await inventory.start()
    try:
        assert await inventory.wait_known(30), inventory.why_unknown()
        assert inventory.hardware() == []
        relay.cut()
        await _until("the inventory unknown", lambda: inventory.hardware() is None, timeout=30)
        why = inventory.why_unknown()
        assert why is not None and "no list or watch has succeeded" in why, why
        assert not inventory.report().known
    finally:
        await inventory.close()
        await runtime.close()
        relay.close()
