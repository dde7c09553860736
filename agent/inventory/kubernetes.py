"""Hardware from a Kubernetes cluster's Node objects, in the tag vocabulary of a host
(agent/tags.py, docs/runners/tags.md, ADR-006). Pure: the caller lists Nodes and Pods.

What each node says, and who writes it:
- `kubernetes.io/arch` (the kubelet): the architecture tags (`amd64`+`x86_64`, `arm64`+`aarch64`);
- NVIDIA GPU Feature Discovery (NVIDIA/k8s-device-plugin docs/gpu-feature-discovery/README.md):
  `nvidia.com/gpu.product` (the model, spaces written '-'), `nvidia.com/gpu.memory` (MiB per GPU),
  `nvidia.com/gpu.compute.major`/`minor`, `nvidia.com/cuda.driver.major`, `nvidia.com/mig.strategy`.
  Strategy `single`: `nvidia.com/gpu` counts MIG instances and the product ends in
  `-MIG-<profile>`. Strategy `mixed`: each profile is a resource `nvidia.com/mig-<profile>` with
  `nvidia.com/mig-<profile>.memory` (MiB);
- the AMD device plugin and its labeller (ROCm/k8s-device-plugin): resource `amd.com/gpu`,
  `amd.com/gpu.product-name`, `amd.com/gpu.vram` (whole GiB, e.g. `192G`);
- Intel's GPU plugin: resource `gpu.intel.com/i915` (or `gpu.intel.com/xe`), NFD's
  `gpu.intel.com/family`.

A GPU resource of a node is one *GPU profile*: the tags one unit of it yields (exactly what a
host's GPU of that model yields: `gpu` or `mig`+`mig-<profile>`, vendor, stack, family, memory
class and floors, compute capability and floors, driver major) plus the node's architecture
tags; capacity is the node's allocatable minus what its running pods hold. Unknown is never read
as absent: a GPU node whose labels do not say its memory simply has no `vram-*` tags, so a job
with a floor waits with the reason naming the tag, rather than landing on a card too small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, Field

from ..model import Gpu, GpuVendor, Host
from ..tags import arch_tags, gpu_tags

__all__ = [
    "GPU_RESOURCES",
    "GpuProfile",
    "Node",
    "NodeHardware",
    "Pod",
    "Unservable",
    "cluster_host",
    "gpu_unit_id",
    "node_hardware",
    "parse_quantity",
    "unit_resource",
    "unservable",
]


class _Wire(BaseModel):
    # Kubernetes objects carry far more than we read; a field we do not know is not an error.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ObjectMeta(_Wire):
    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Taint(_Wire):
    key: str
    value: str | None = None
    effect: str


class NodeSpec(_Wire):
    unschedulable: bool = False
    taints: list[Taint] = Field(default_factory=list)


class NodeCondition(_Wire):
    type: str
    status: str


class NodeStatus(_Wire):
    allocatable: dict[str, str] = Field(default_factory=dict)
    conditions: list[NodeCondition] = Field(default_factory=list)


class Node(_Wire):
    """A core/v1 Node as the API serves it (the fields read here)."""

    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)


class ResourceRequirements(_Wire):
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class Container(_Wire):
    name: str
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)


class PodSpec(_Wire):
    nodeName: str | None = None
    containers: list[Container] = Field(default_factory=list)
    initContainers: list[Container] = Field(default_factory=list)


class PodStatus(_Wire):
    phase: str | None = None


class Pod(_Wire):
    """A core/v1 Pod (the fields read here: where it runs and what it holds)."""

    metadata: ObjectMeta
    spec: PodSpec = Field(default_factory=PodSpec)
    status: PodStatus = Field(default_factory=PodStatus)


# Extended resources that are GPUs, by vendor. `nvidia.com/mig-<profile>` is matched apart.
GPU_RESOURCES: dict[str, GpuVendor] = {
    "nvidia.com/gpu": GpuVendor.NVIDIA,
    "amd.com/gpu": GpuVendor.AMD,
    "gpu.intel.com/i915": GpuVendor.INTEL,
    "gpu.intel.com/xe": GpuVendor.INTEL,
}
_MIG_RESOURCE = re.compile(r"^nvidia\.com/mig-(\d+g\.\d+gb)$")
_MIG_IN_PRODUCT = re.compile(r"-MIG-(\d+g\.\d+gb)$")
_SUFFIXES = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource.Quantity ('500m', '256Gi', '2', '1e3') as a number; ValueError if malformed."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number, suffix = match.groups()
    if "e" in number.lower() and suffix:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    try:
        return Decimal(number) * _SUFFIXES[suffix]
    except InvalidOperation as exc:
        raise ValueError(f"not a Kubernetes quantity: {text!r}") from exc


@dataclass(frozen=True, slots=True)
class GpuProfile:
    """One GPU resource of one node: the tags a unit of it yields, and how many are free."""

    node: str
    resource: str  # the extended resource a job's pod asks for, e.g. nvidia.com/mig-1g.10gb
    tags: frozenset[str]
    allocatable: int
    used: int
    memory_mb: int  # per unit, 0 unknown: orders the smallest that fits first
    gpu: Gpu | None = None  # one unit as the planner's Gpu (cluster_host numbers the free ones)

    @property
    def free(self) -> int:
        return max(0, self.allocatable - self.used)


@dataclass(frozen=True, slots=True)
class NodeHardware:
    """What one node offers a job: its tags without a GPU, its GPU profiles, its free room."""

    node: str
    arch: str | None  # None: the node does not say (no `kubernetes.io/arch`)
    tags: frozenset[str]
    gpus: tuple[GpuProfile, ...]
    schedulable: bool  # Ready and not cordoned
    cpu_free: Decimal
    memory_free: Decimal  # bytes
    taints: tuple[Taint, ...]
    problems: tuple[str, ...] = ()  # labels or quantities that could not be read, one line each


def _held(pods: list[Pod]) -> dict[str, dict[str, Decimal]]:
    """Per node, the resources its non-terminated pods hold (the scheduler's own sum: the
    containers' requests, or the limits where an extended resource gives only those, and
    at least the largest init container's)."""
    held: dict[str, dict[str, Decimal]] = {}
    for pod in pods:
        if not pod.spec.nodeName or pod.status.phase in ("Succeeded", "Failed"):
            continue
        total: dict[str, Decimal] = {}
        for container in pod.spec.containers:
            for name, value in _requests(container).items():
                total[name] = total.get(name, Decimal(0)) + value
        for container in pod.spec.initContainers:
            for name, value in _requests(container).items():
                total[name] = max(total.get(name, Decimal(0)), value)
        node = held.setdefault(pod.spec.nodeName, {})
        for name, value in total.items():
            node[name] = node.get(name, Decimal(0)) + value
    return held


def _requests(container: Container) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for source in (container.resources.limits, container.resources.requests):  # requests win where both say
        for name, text in source.items():
            try:
                out[name] = parse_quantity(text)
            except ValueError:
                continue  # the API server validated it; a value we cannot read holds nothing we can count
    return out


def _int_label(labels: dict[str, str], key: str, problems: list[str], node: str) -> int | None:
    if key not in labels:
        return None
    try:
        return int(labels[key])
    except ValueError:
        problems.append(f"node {node}: label {key}={labels[key]!r} is not a whole number; ignored")
        return None


def _nvidia(node: str, labels: dict[str, str], resource: str, problems: list[str]) -> Gpu:
    product = labels.get("nvidia.com/gpu.product", "")
    profile: str | None = None
    memory = _int_label(labels, "nvidia.com/gpu.memory", problems, node)
    if match := _MIG_RESOURCE.match(resource):  # mixed strategy: the slice's own labels
        profile = match.group(1)
        memory = _int_label(labels, f"nvidia.com/mig-{profile}.memory", problems, node)
    elif match := _MIG_IN_PRODUCT.search(product):  # single strategy: nvidia.com/gpu counts slices
        profile = match.group(1)
        product = product[: match.start()]
    major = _int_label(labels, "nvidia.com/gpu.compute.major", problems, node)
    minor = _int_label(labels, "nvidia.com/gpu.compute.minor", problems, node)
    driver = labels.get("nvidia.com/cuda.driver.major") or labels.get("nvidia.com/cuda.driver-version.major")
    return Gpu(
        id=f"{node}/{resource}", vendor=GpuVendor.NVIDIA, model=product.replace("-", " "), memory_mb=memory or 0,
        compute_capability=f"{major}.{minor}" if major is not None and minor is not None else None,
        driver_version=driver if driver and driver.isdigit() else None,
        mig_parent=node if profile else None, mig_profile=profile,
    )  # fmt: skip


def _amd(node: str, labels: dict[str, str], resource: str, problems: list[str]) -> Gpu:
    vram = labels.get("amd.com/gpu.vram") or labels.get("beta.amd.com/gpu.vram") or ""
    memory = 0
    if vram:
        if vram.endswith("G") and vram[:-1].isdigit():
            memory = int(vram[:-1]) * 1024
        else:
            problems.append(f"node {node}: label amd.com/gpu.vram={vram!r} is not '<GiB>G'; ignored")
    model = (labels.get("amd.com/gpu.product-name") or "").replace("_", " ")
    return Gpu(id=f"{node}/{resource}", vendor=GpuVendor.AMD, model=model, memory_mb=memory)


def _intel(node: str, labels: dict[str, str], resource: str) -> Gpu:
    model = labels.get("gpu.intel.com/family", "").replace("_", " ")
    return Gpu(id=f"{node}/{resource}", vendor=GpuVendor.INTEL, model=model, memory_mb=0)


def _gpu_resource_tags(gpu: Gpu) -> frozenset[str]:
    tags = gpu_tags(gpu)
    if gpu.vendor is GpuVendor.INTEL:
        tags -= {"dgpu"}  # the plugin does not say integrated or discrete: neither is claimed
    return tags


def node_hardware(nodes: list[Node], pods: list[Pod]) -> list[NodeHardware]:
    """Each node's tags, GPU profiles and free room, in the nodes' order."""
    held = _held(pods)
    out = []
    for node in nodes:
        name, labels = node.metadata.name, node.metadata.labels
        problems: list[str] = []
        arch = labels.get("kubernetes.io/arch")
        base = arch_tags(arch) if arch else frozenset()
        node_held = held.get(name, {})
        allocatable: dict[str, Decimal] = {}
        for resource, text in node.status.allocatable.items():
            try:
                allocatable[resource] = parse_quantity(text)
            except ValueError:
                problems.append(f"node {name}: allocatable {resource}={text!r} is not a quantity; ignored")
        gpus = []
        for resource, amount in sorted(allocatable.items()):
            vendor = GPU_RESOURCES.get(resource) or (GpuVendor.NVIDIA if _MIG_RESOURCE.match(resource) else None)
            if vendor is None or amount <= 0:
                continue
            if vendor is GpuVendor.NVIDIA:
                gpu = _nvidia(name, labels, resource, problems)
            elif vendor is GpuVendor.AMD:
                gpu = _amd(name, labels, resource, problems)
            else:
                gpu = _intel(name, labels, resource)
            gpus.append(GpuProfile(name, resource, _gpu_resource_tags(gpu) | base, int(amount), int(node_held.get(resource, 0)), gpu.memory_mb, gpu))
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        out.append(NodeHardware(
            node=name, arch=arch, tags=base, gpus=tuple(gpus), schedulable=ready and not node.spec.unschedulable,
            cpu_free=allocatable.get("cpu", Decimal(0)) - node_held.get("cpu", Decimal(0)),
            memory_free=allocatable.get("memory", Decimal(0)) - node_held.get("memory", Decimal(0)),
            taints=tuple(node.spec.taints), problems=tuple(problems),
        ))  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class Unservable:
    """Why no node can serve a job's tags: the tags no node carries (together)."""

    missing_tags: tuple[str, ...]
    detail: str


def unservable(tags: frozenset[str], hardware: list[NodeHardware]) -> Unservable | None:
    """None if some node's tags, or some node's GPU profile's, include all of `tags`; else the
    reason, naming the missing hardware the way the host planner does (docs/runners/tags.md)."""
    profiles = [h.tags for h in hardware] + [g.tags for h in hardware for g in h.gpus]
    if any(tags <= p for p in profiles):
        return None
    anywhere = frozenset().union(*profiles)
    never = sorted(tags - anywhere)
    if never:
        return Unservable(tuple(never), f"no node of the cluster has hardware for tags {never}")
    best = min(profiles, key=lambda p: len(tags - p))
    missing = sorted(tags - best)
    detail = f"no single node (or GPU of one) carries all of {sorted(tags)}; the closest lacks {missing}"
    if "gpu" in tags and any(t == "mig" or t.startswith("mig-") for t in tags):
        detail += " (`gpu` asks for a whole GPU; a MIG instance carries `mig` instead)"
    return Unservable(tuple(missing), detail)


# --- the cluster as the planner's host (ADR-016) -----------------------------------------------


def gpu_unit_id(node: str, resource: str, index: int) -> str:
    """The planner's id of one free unit of a node's GPU resource: `<node>/<resource>#<i>` (a
    node name never holds '/')."""
    return f"{node}/{resource}#{index}"


def unit_resource(unit_id: str) -> tuple[str, str] | None:
    """(node, extended resource) of a gpu_unit_id; None if `unit_id` is not one."""
    node, _, rest = unit_id.partition("/")
    resource, hash_, index = rest.rpartition("#")
    if not node or not hash_ or not resource or not index.isdigit():
        return None
    return node, resource


def _is_dra_device(gpu_id: str) -> bool:
    """A DRA device's planner id (DraDevice.as_gpu: `<node>/<pool>/<device>`, a pool may hold
    '/' too); a host GPU's id (NVML's UUID, a PCI address) has none, a node's resource unit
    ends in `#<n>`."""
    return "/" in gpu_id and unit_resource(gpu_id) is None


def cluster_host(agent: Host, hardware: list[NodeHardware]) -> Host:
    """The cluster as the planner's Host: the agent's own architecture is native, every other
    architecture of a schedulable node is a foreign one (the planner's `emulated` kind: the
    scheduler places its runner natively on such a node, no QEMU involved); each free unit of a
    schedulable node's GPU resource is one GPU (allocatable minus what the node's pods hold), so a
    job is planned onto the cluster's free hardware and waits, with the hardware named, where
    none is free or none exists; the CPU and memory budget is the schedulable nodes' free room."""
    ready = [h for h in hardware if h.schedulable]
    gpus = [p.gpu.model_copy(update={"id": gpu_unit_id(p.node, p.resource, i)})
            for h in ready for p in h.gpus if p.gpu is not None for i in range(p.free)]  # fmt: skip
    # the DRA driver's devices the daemon added (`<node>/<pool>/<device>`, agent/dra.py): a
    # cluster hands a GPU out by DRA or by its device plugin, never both
    gpus += [g for g in agent.gpus if _is_dra_device(g.id)]
    archs = sorted({h.arch for h in ready if h.arch and h.arch != agent.arch})
    cpus = int(sum((h.cpu_free for h in ready), Decimal(0)))
    memory_mb = int(sum((h.memory_free for h in ready), Decimal(0)) / 2**20)
    return agent.model_copy(update={"emulated": archs, "gpus": gpus, "cpus": max(1, cpus), "memory_mb": max(1, memory_mb)})
