"""The cluster's hardware kept in memory (ADR-016): Nodes and Pods by informers (k8s_watch), read
by each reconcile pass without an API call.

Two informers on one ApiClient of their own (watches hold their connections):
- Nodes matching `runner.kubernetes.node_selector` (every node when empty): their labels and
  allocatable resources are the hardware (kubernetes.node_hardware);
- Pods of every namespace that have not ended (`status.phase!=Succeeded,status.phase!=Failed`):
  what they request on their node is what is not free (capacity = allocatable minus what runs),
  and the agent's own manager and job pods among them are the operator's view of its runners.

A node added, removed, relabelled, cordoned, made ready or unready, or whose allocatable
changed, calls `on_node_change` with one line; the daemon publishes it and wakes the reconciler,
as udev hotplug does on a host. Heartbeats change nothing the models read and wake nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api

from ..config import KubernetesRuntimeConfig
from ..state import ClusterNode, ClusterPod, ClusterReport
from .k8s_watch import ApiCounter, Informer
from .kubernetes import Node, NodeHardware, Pod, node_hardware

__all__ = ["ClusterInventory", "cluster_report", "describe_node_change", "report"]

# The labels the runtime puts on its pods (agent/runtime/kubernetes.py, k8s_runtime.py; ADR-013).
_OWNER, _RUNNER, _JOB_OF = "autogit.io/agent", "autogit.io/runner", "autogit.io/job-of"
POD_FILTER = "status.phase!=Succeeded,status.phase!=Failed"


def _node_key(raw: dict[str, Any]) -> str:
    return str(raw.get("metadata", {}).get("name", ""))


def _pod_key(raw: dict[str, Any]) -> str:
    meta = raw.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def describe_node_change(name: str, before: Node | None, after: Node | None) -> str:
    """One line for the event stream: what changed on a node, as the inventory reads it."""
    if after is None:
        return f"node {name} removed"
    arch = after.metadata.labels.get("kubernetes.io/arch", "arch unknown")
    if before is None:
        return f"node {name} added ({arch})"
    changed = [what for what, differs in (
        ("labels", before.metadata.labels != after.metadata.labels),
        ("allocatable", before.status.allocatable != after.status.allocatable),
        ("conditions", before.status.conditions != after.status.conditions),
        ("schedulability", before.spec != after.spec),
    ) if differs]  # fmt: skip
    return f"node {name} changed ({', '.join(changed) or 'fields'})"


class ClusterInventory:
    """Nodes and Pods by informers; `hardware()` from memory, None while unknown."""

    def __init__(self, k8s: KubernetesRuntimeConfig, configure: Callable[[], Awaitable[Configuration]], hostname: str, *,
                 on_node_change: Callable[[str], None] | None = None, watch_timeout: int = 300) -> None:  # fmt: skip
        self.k8s = k8s
        self.hostname = hostname
        self._configure = configure
        self.on_node_change = on_node_change
        self.watch_timeout = watch_timeout
        self.api = ApiCounter()
        self._client: ApiClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.nodes: Informer[Node] | None = None
        self.pods: Informer[Pod] | None = None
        self._derived: tuple[tuple[int, int], list[NodeHardware]] | None = None
        self._reported: tuple[tuple[int, int], ClusterReport] | None = None

    async def start(self) -> None:
        """Build the client and start both informers (returns at once; `known` once listed)."""
        self._client = ApiClient(await self._configure())
        self.api.attach(self._client)
        core = CoreV1Api(self._client)
        stale, timeout = self.k8s.inventory_stale_after, self.k8s.request_timeout
        self.nodes = Informer("nodes", partial(core.list_node, label_selector=self.k8s.node_selector), Node, _node_key,
                              on_change=self._node_changed, watch_timeout=self.watch_timeout, stale_after=stale, request_timeout=timeout)  # fmt: skip
        self.pods = Informer("pods", partial(core.list_pod_for_all_namespaces, field_selector=POD_FILTER), Pod, _pod_key,
                             watch_timeout=self.watch_timeout, stale_after=stale, request_timeout=timeout)  # fmt: skip
        self._tasks = [asyncio.create_task(self.nodes.run(), name="informer-nodes"), asyncio.create_task(self.pods.run(), name="informer-pods")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    async def wait_known(self, timeout: float) -> bool:
        """Until both informers have listed (at start, so the first pass plans on the cluster)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.why_unknown() is not None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return self.why_unknown() is None

    def _node_changed(self, name: str, before: Node | None, after: Node | None) -> None:
        if self.on_node_change is not None and self.nodes is not None and self.nodes.synced:
            self.on_node_change(describe_node_change(name, before, after))

    # --- reads (memory only) ------------------------------------------------------------------------
    def why_unknown(self) -> str | None:
        if self.nodes is None or self.pods is None:
            return "the cluster inventory has not started"
        reasons = [r for r in (self.nodes.why_unknown(), self.pods.why_unknown()) if r]
        return "; ".join(reasons) or None

    def hardware(self) -> list[NodeHardware] | None:
        """Every selected node's tags, GPU profiles and free room, from memory; None while unknown
        (never an empty cluster). Recomputed only when an informer's objects changed."""
        if self.why_unknown() is not None:
            return None
        assert self.nodes is not None and self.pods is not None
        key = (self.nodes.generation, self.pods.generation)
        if self._derived is None or self._derived[0] != key:
            nodes = sorted(self.nodes.items.values(), key=lambda n: n.metadata.name)
            self._derived = (key, node_hardware(nodes, list(self.pods.items.values())))
        return self._derived[1]

    def report(self) -> ClusterReport:
        """report(), rebuilt only when an informer's objects changed (the request counts are always fresh)."""
        key = (self.nodes.generation if self.nodes else -1, self.pods.generation if self.pods else -1)
        if self._reported is None or self._reported[0] != key or self._reported[1].known != (self.why_unknown() is None):
            self._reported = (key, report(self))
        counts = {f"{verb} {path}": n for (verb, path), n in sorted(self.api.counts.items())}
        return self._reported[1].model_copy(update={"api_requests": counts, "unknown_reason": self.why_unknown()})


def _runner_pods(pods: list[Pod], hostname: str) -> list[ClusterPod]:
    """The agent's manager pods, each with its job pods (labels of ADR-013), by runner."""
    out = []
    for pod in pods:
        labels = pod.metadata.labels
        if labels.get(_OWNER) != hostname:
            continue
        runner = labels.get(_JOB_OF) or labels.get(_RUNNER)
        if runner is None:
            continue
        role = "job" if _JOB_OF in labels else "manager"
        out.append(ClusterPod(runner=runner, pod=pod.metadata.name, role=role, phase=pod.status.phase, node=pod.spec.nodeName))
    return sorted(out, key=lambda p: (p.runner, p.role != "manager", p.pod))


def report(inventory: ClusterInventory) -> ClusterReport:
    """What `status`, the socket API and the TUI show, from the inventory's memory."""
    pods = list(inventory.pods.items.values()) if inventory.pods is not None else []
    refused = sorted({**(inventory.nodes.problems if inventory.nodes else {}), **(inventory.pods.problems if inventory.pods else {})}.values())
    return cluster_report(inventory.hardware(), pods, inventory.hostname, why_unknown=inventory.why_unknown(),
                          node_selector=inventory.k8s.node_selector, api_counts=inventory.api.counts, problems=refused)  # fmt: skip


def cluster_report(hardware: list[NodeHardware] | None, pods: list[Pod], hostname: str, *, why_unknown: str | None = None,
                   node_selector: str = "", api_counts: dict[tuple[str, str], int] | None = None,
                   problems: list[str] | None = None) -> ClusterReport:  # fmt: skip
    """Each node's hardware and GPUs (allocatable, used by its pods, free), the agent's runner
    pods, whether the inventory is known, and the API requests it made. Pure."""
    nodes = []
    for h in hardware or []:
        gpu = next((g.gpu for g in h.gpus if g.gpu is not None), None)
        nodes.append(ClusterNode(
            name=h.node, arch=h.arch, ready=h.schedulable, gpu_product=gpu.model if gpu and gpu.model else None,
            gpu_resources=[g.resource for g in h.gpus], gpus_allocatable=sum(g.allocatable for g in h.gpus),
            gpus_used=sum(g.used for g in h.gpus), gpus_free=sum(g.free for g in h.gpus),
            tags=sorted(set(h.tags).union(*(g.tags for g in h.gpus))), problems=list(h.problems),
        ))  # fmt: skip
    return ClusterReport(
        known=why_unknown is None and hardware is not None, unknown_reason=why_unknown, node_selector=node_selector, nodes=nodes,
        runner_pods=_runner_pods(pods, hostname), api_requests={f"{verb} {path}": n for (verb, path), n in sorted((api_counts or {}).items())},
        problems=list(problems or []),
    )  # fmt: skip
