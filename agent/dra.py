"""GPU fit by Dynamic Resource Allocation (resource.k8s.io/v1): a job's GPU tags → a claim.

Pure functions, no I/O. On Kubernetes a GPU job does not name a node: its pod carries a
ResourceClaimTemplate whose CEL selectors state what the job's tags ask for, and the
kube-scheduler allocates a device that satisfies them (ADR-015). The tag vocabulary is the
host's (agent/tags.py, ADR-006), so the same `.gitlab-ci.yml` asks for the same hardware on a
host and in a cluster:

- `vram-ge-<N>g` → `memory` capacity above N-1 GiB (tags.memory_gib rounds a device's memory
  *up*: an H100 80GB reports 79.6 GiB and is an 80 GiB card; the selector keeps that rule);
- `vram-<N>g` → memory in (N-1, N] GiB;
- `cc-ge-X.Y` / `cc-X.Y` → `cudaComputeCapability` (a semver attribute) ≥ / = X.Y.0;
- `mig`, `mig-<profile>` → the MIG DeviceClass, `profile == '<profile>'`; `gpu` → whole GPUs;
- any other GPU tag (a family such as `h100`) → the product names seen in the cluster's
  ResourceSlices whose devices carry it (CEL cannot compute our family rule; the agent can).

Where more than one product fits, the claim lists them as prioritized alternatives
(`firstAvailable`), the smallest memory first: ADR-004's smallest-that-fits rule, so big
boards stay free for the jobs that need them.

Names follow the NVIDIA DRA driver (kubernetes-sigs/dra-driver-nvidia-gpu, formerly
NVIDIA/k8s-dra-driver-gpu, at 22407113785e78c7763b4637689a201eb39c6199):
deployments/helm/dra-driver-nvidia-gpu/templates/deviceclass-gpu.yaml and deviceclass-mig.yaml
(DeviceClasses `gpu.nvidia.com`, `mig.nvidia.com`, selecting on the `type` attribute);
cmd/gpu-kubelet-plugin/deviceinfo.go (attributes `type`, `uuid`, `productName`, `brand`,
`architecture`, `cudaComputeCapability` and `driverVersion` as versions; capacity `memory`);
cmd/gpu-kubelet-plugin/mig.go (MIG devices: `profile`, `parentUUID`, capacity `memory`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .inventory.kubernetes import parse_quantity, unit_resource
from .model import Gpu, GpuVendor
from .tags import gpu_tags

__all__ = [
    "CLAIM_NAME",
    "DRIVER",
    "GPU_CLASS",
    "MIG_CLASS",
    "MAX_ALTERNATIVES",
    "ClaimPlan",
    "DraDevice",
    "DraSupport",
    "GpuPath",
    "NoDevice",
    "Undecided",
    "claim_for",
    "claim_patch",
    "claim_template",
    "devices_from_slices",
    "gpu_path",
    "parse_quantity",
]

DRIVER = "gpu.nvidia.com"
GPU_CLASS = "gpu.nvidia.com"
MIG_CLASS = "mig.nvidia.com"
# resource.k8s.io/v1 DeviceRequest.firstAvailable holds at most 8 subrequests
# (k8s.io/api/resource/v1/types.go, FirstAvailableDeviceRequestMaxSize).
MAX_ALTERNATIVES = 8
_GIB = 1024**3
_MIB = 1024**2

@dataclass(frozen=True, slots=True)
class DraDevice:
    """One device of the NVIDIA driver's ResourceSlices, with the node it is on."""

    node: str
    pool: str
    name: str
    kind: str  # the `type` attribute: 'gpu' or 'mig' (others, e.g. 'vfio', are not ours)
    product: str
    memory_bytes: int
    compute_capability: str | None  # 'X.Y'
    profile: str | None = None
    driver_version: str | None = None

    def as_gpu(self) -> Gpu:
        """The host inventory's Gpu for this device, so that tags.gpu_tags gives it the same tags."""
        return Gpu(
            id=f"{self.node}/{self.pool}/{self.name}",
            vendor=GpuVendor.NVIDIA,
            model=self.product,
            memory_mb=self.memory_bytes // _MIB,
            compute_capability=self.compute_capability,
            driver_version=self.driver_version,
            mig_mode=False,
            mig_parent=f"{self.node}/{self.pool}" if self.kind == "mig" else None,
            mig_profile=self.profile,
        )

    @property
    def tags(self) -> frozenset[str]:
        return gpu_tags(self.as_gpu())


def _attribute(attributes: Mapping[str, Any], name: str) -> Any:
    """A device attribute's value, whichever of string/int/bool/version it is; unqualified
    names are the driver's own (resource.k8s.io/v1: 'the domain is the driver name')."""
    raw = attributes.get(name, attributes.get(f"{DRIVER}/{name}"))
    if not isinstance(raw, Mapping):
        return None
    for key in ("string", "version", "int", "bool"):
        if key in raw:
            return raw[key]
    return None


def _capacity(capacity: Mapping[str, Any], name: str) -> str | None:
    raw = capacity.get(name, capacity.get(f"{DRIVER}/{name}"))
    return raw.get("value") if isinstance(raw, Mapping) else None


def devices_from_slices(slices: Iterable[Mapping[str, Any]]) -> tuple[list[DraDevice], list[str]]:
    """The NVIDIA driver's GPU and MIG devices in a list of ResourceSlice objects (as the API
    returns them), and one line per device that could not be read (it is skipped; the rest
    are used: one bad row never hides the others)."""
    devices: list[DraDevice] = []
    problems: list[str] = []
    for item in slices:
        spec = item.get("spec") or {}
        if spec.get("driver") != DRIVER:
            continue
        node = spec.get("nodeName") or ""
        pool = (spec.get("pool") or {}).get("name") or ""
        for raw in spec.get("devices") or []:
            name = str(raw.get("name", "?"))
            try:
                devices.append(_device(node, pool, name, raw))
            except (ValueError, TypeError, KeyError) as exc:
                problems.append(f"ResourceSlice device {node}/{pool}/{name}: {exc}")
    return devices, problems


def _device(node: str, pool: str, name: str, raw: Mapping[str, Any]) -> DraDevice:
    attributes = raw.get("attributes") or {}
    kind = _attribute(attributes, "type")
    if kind not in ("gpu", "mig"):
        raise ValueError(f"attribute type is {kind!r}, not 'gpu' or 'mig'")
    product = _attribute(attributes, "productName")
    if not isinstance(product, str) or not product:
        raise ValueError("no productName attribute")
    memory = _capacity(raw.get("capacity") or {}, "memory")
    if memory is None:
        raise ValueError("no memory capacity")
    version = _attribute(attributes, "cudaComputeCapability")
    cc = None
    if isinstance(version, str) and (m := re.match(r"^(\d+)\.(\d+)", version)):
        cc = f"{int(m.group(1))}.{int(m.group(2))}"
    profile = _attribute(attributes, "profile") if kind == "mig" else None
    driver = _attribute(attributes, "driverVersion")
    return DraDevice(node, pool, name, kind, product, int(parse_quantity(memory)), cc,
                     profile if isinstance(profile, str) else None, driver if isinstance(driver, str) else None)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """What a GPU job's pod asks DRA for: the ResourceClaimTemplate's `spec` (one request, named
    `gpu`), and, for people, the alternatives in the order the scheduler tries them."""

    spec: dict[str, Any]
    alternatives: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NoDevice:
    """No device in the cluster's ResourceSlices carries the job's GPU tags."""

    reason: str


def _gib(n: int) -> str:
    return f"quantity('{n}Gi')"


def _floors(tags: frozenset[str]) -> list[str]:
    """The CEL terms that state the tags' floors and exact classes."""
    cap = f"device.capacity['{DRIVER}'].memory"
    cc = f"device.attributes['{DRIVER}'].cudaComputeCapability"
    terms: list[str] = []
    for tag in sorted(tags):
        if m := re.fullmatch(r"vram-ge-(\d+)g", tag):
            # memory_gib rounds up: a device is on step N when it has more than N-1 GiB.
            terms.append(f"{cap}.compareTo({_gib(int(m.group(1)) - 1)}) > 0")
        elif m := re.fullmatch(r"vram-(\d+)g", tag):
            n = int(m.group(1))
            terms.append(f"{cap}.compareTo({_gib(n - 1)}) > 0 && {cap}.compareTo({_gib(n)}) <= 0")
        elif m := re.fullmatch(r"cc-ge-(\d+)\.(\d+)", tag):
            terms.append(f"{cc}.compareTo(semver('{m.group(1)}.{m.group(2)}.0')) >= 0")
        elif m := re.fullmatch(r"cc-(\d+)\.(\d+)", tag):
            terms.append(f"{cc}.compareTo(semver('{m.group(1)}.{m.group(2)}.0')) == 0")
        elif m := re.fullmatch(r"mig-(.+)", tag):
            terms.append(f"device.attributes['{DRIVER}'].profile == '{m.group(1)}'")
    return terms


def _stated(tag: str) -> bool:
    """Tags whose meaning _floors states in CEL itself (the rest are pinned by product)."""
    return bool(re.fullmatch(r"vram-(ge-)?\d+g|cc-(ge-)?\d+\.\d+|mig-.+|mig|gpu|nvidia|cuda", tag))


def _cel(terms: Sequence[str]) -> list[dict[str, Any]]:
    return [{"cel": {"expression": " && ".join(f"({t})" for t in terms)}}] if terms else []


def claim_for(job_tags: Iterable[str], devices: Sequence[DraDevice], node_tags: frozenset[str] = frozenset()) -> ClaimPlan | NoDevice:
    """The claim for a GPU job: every device whose tags (tags.gpu_tags, the host's rule) cover
    the job's GPU tags (its tags less the node's: architecture and extra tags, which node
    affinity serves) may be allocated; which ones is stated in CEL, by floors where the tags
    are floors and by product names otherwise, smallest memory first."""
    wanted = frozenset(job_tags) - node_tags
    mig = "mig" in wanted or any(t.startswith("mig-") for t in wanted)
    fitting = [d for d in devices if wanted <= d.tags and (d.kind == "mig") == mig]
    if not fitting:
        kind = "MIG instance" if mig else "GPU"
        return NoDevice(f"no {kind} in the cluster's ResourceSlices ({DRIVER}) carries {', '.join(sorted(wanted)) or 'the job’s tags'}")
    device_class = MIG_CLASS if mig else GPU_CLASS
    floors = _floors(wanted)
    # Smallest memory first; one alternative per product (the DRA driver names e.g. 'NVIDIA H100 80GB HBM3').
    products: dict[str, int] = {}
    for d in sorted(fitting, key=lambda d: (d.memory_bytes, d.product)):
        products.setdefault(d.product, d.memory_bytes)
    names = list(products)
    pinned = any(not _stated(t) for t in wanted)  # a family tag: only the products that carry it
    alternatives = [f"{name} ({_whole_gib(products[name])} GiB)" for name in names]
    if len(names) == 1:
        request: dict[str, Any] = {"name": "gpu", "exactly": {"deviceClassName": device_class, "count": 1}}
        if selectors := _cel(floors + ([_product_in(names)] if pinned else [])):
            request["exactly"]["selectors"] = selectors
    else:
        # More products than firstAvailable may list: the last subrequest takes the rest, in no order.
        groups = (
            [[n] for n in names]
            if len(names) <= MAX_ALTERNATIVES
            else [[n] for n in names[: MAX_ALTERNATIVES - 1]] + [names[MAX_ALTERNATIVES - 1 :]]
        )
        request = {
            "name": "gpu",
            "firstAvailable": [
                {"name": f"p{i}", "deviceClassName": device_class, "count": 1, "selectors": _cel([*floors, _product_in(group)])}
                for i, group in enumerate(groups)
            ],
        }
    return ClaimPlan(spec={"spec": {"devices": {"requests": [request]}}}, alternatives=alternatives)


def _product_in(names: Sequence[str]) -> str:
    quoted = ", ".join("'" + n.replace("\\", "\\\\").replace("'", "\\'") + "'" for n in names)
    return f"device.attributes['{DRIVER}'].productName in [{quoted}]"


def _whole_gib(memory_bytes: int) -> int:
    return -(-memory_bytes // _GIB)


# --- which path a GPU runner's job pods take: a DRA claim, or the extended resource -----------

CLAIM_NAME = "gpu"  # the pod's resourceClaims entry, and the build container's claim


@dataclass(frozen=True, slots=True)
class DraSupport:
    """What the API server said about DRA, as read (agent/runtime/dra_support.py).

    `served`: resource.k8s.io/v1 is served (None: the discovery could not be read);
    `classes`: the DeviceClasses listed (None: they could not be read); `problem`: why
    something is None, one line. Unknown is never absent: None is not False."""

    served: bool | None
    classes: frozenset[str] | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Undecided:
    """DRA support is unknown (an error reading it): neither path is taken now."""

    reason: str


GpuPath = Literal["dra", "extended-resource"]


def gpu_path(support: DraSupport, gpu: Gpu) -> GpuPath | Undecided:
    """How a runner's job pods get `gpu`: a DRA claim where the cluster serves resource.k8s.io/v1
    and has the NVIDIA driver's DeviceClass for this kind of device (`mig.nvidia.com` for a MIG
    instance, `gpu.nvidia.com` for a whole GPU), else the device plugin's extended resource
    and node affinity (agent/runtime/kubernetes.py placement). AMD and Intel devices are not
    mapped to DRA (ADR-015): always the extended resource. What could not be read decides
    nothing: falling back to extended resources on a cluster whose GPUs only DRA hands out
    would leave every job pending. A GPU the planner took from a node's extended resource
    (`<node>/<resource>#<n>`, agent/inventory/kubernetes.py) is held as that resource."""
    if gpu.vendor is not GpuVendor.NVIDIA or unit_resource(gpu.id) is not None:
        # a unit of a node's device-plugin resource (the cluster inventory offered it as such)
        return "extended-resource"
    if support.served is None:
        return Undecided(f"whether the API server serves resource.k8s.io/v1 is unknown: {support.problem or 'not read'}")
    if not support.served:
        return "extended-resource"
    if support.classes is None:
        return Undecided(f"the cluster's DeviceClasses could not be read: {support.problem or 'not read'}")
    wanted = MIG_CLASS if gpu.mig_profile else GPU_CLASS
    return "dra" if wanted in support.classes else "extended-resource"


def claim_template(name: str, namespace: str, labels: Mapping[str, str], plan: ClaimPlan) -> dict[str, Any]:
    """The ResourceClaimTemplate (resource.k8s.io/v1) a runner's job pods name: one claim per
    pod, made from it by the resourceclaim controller and deleted with the pod. Its `spec` is a
    ResourceClaimTemplateSpec, whose own `spec` is the claim's: ClaimPlan.spec as it is."""
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)}, "spec": plan.spec}  # fmt: skip


def claim_patch(template: str) -> dict[str, Any]:
    """The strategic-merge patch of a job pod's spec that makes it hold the claim: the pod's
    `resourceClaims` entry from the template, and the build container's `resources.claims`
    (gitlab-runner names its build container `build`; its `pod_spec` patches are applied to the
    PodSpec with strategicpatch.StrategicMergePatch: executors/kubernetes/kubernetes.go,
    doPodSpecMerge). Both lists merge by `name`, so the patch adds to what the runner built."""
    return {
        "resourceClaims": [{"name": CLAIM_NAME, "resourceClaimTemplateName": template}],
        "containers": [{"name": "build", "resources": {"claims": [{"name": CLAIM_NAME}]}}],
    }
