"""kwok fake nodes with the labels and allocatable resources real clusters publish, for
hardware one machine cannot have (arm64 nodes, GPU nodes, hundreds of nodes).

The labels are what the projects that set them write (each cited where it is built):
- NVIDIA GPU Feature Discovery (NVIDIA/k8s-device-plugin docs/gpu-feature-discovery/README.md):
  `nvidia.com/gpu.product` (spaces as '-'), `gpu.memory` (MiB per GPU), `gpu.count`,
  `gpu.compute.major`/`minor`, `gpu.family`, `cuda.driver.major`, `mig.strategy`, and for the
  mixed strategy `nvidia.com/mig-<profile>.count`/`.memory`, the resource `nvidia.com/mig-<profile>`;
- the AMD device plugin's node labeller (ROCm/k8s-device-plugin): `amd.com/gpu.family`,
  `amd.com/gpu.vram` ("191G"), `amd.com/gpu.device-id`, `amd.com/gpu.product-name`; resource `amd.com/gpu`;
- Intel's GPU plugin (intel/intel-device-plugins-for-kubernetes): resource `gpu.intel.com/i915`,
  NFD label `gpu.intel.com/family`.
Every fake node carries kwok's annotation (kwok manages it) and a NoSchedule taint, so only
pods that say so land there.
"""

from __future__ import annotations

from typing import Any

FAKE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
FAKE_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
TEST_LABEL = "autogit.test/k8s"


def fake_node(name: str, *, arch: str = "amd64", labels: dict[str, str] | None = None, resources: dict[str, str] | None = None,
              cpu: str = "32", memory: str = "256Gi") -> dict[str, Any]:  # fmt: skip
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "500Gi"} | (resources or {})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/arch": arch, "kubernetes.io/os": "linux", "kubernetes.io/hostname": name, "type": "kwok",
                       TEST_LABEL: "fake"} | (labels or {}),  # fmt: skip
        },
        "spec": {"taints": [FAKE_TAINT]},
        "status": {
            "allocatable": allocatable,
            "capacity": allocatable,
            "nodeInfo": {"architecture": arch, "operatingSystem": "linux", "kubeletVersion": "fake", "kernelVersion": "fake",
                         "osImage": "kwok", "containerRuntimeVersion": "kwok", "kubeProxyVersion": "fake", "machineID": "",
                         "systemUUID": "", "bootID": ""},  # fmt: skip
        },
    }


def nvidia_node(name: str, *, product: str = "NVIDIA-H100-80GB-HBM3", memory_mib: int = 81559, count: int = 8,
                compute: tuple[int, int] = (9, 0), family: str = "hopper", driver_major: int = 580, arch: str = "amd64",
                mig: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:  # fmt: skip
    """A node with `count` NVIDIA GPUs as GFD labels it. `mig`: the mixed strategy, profile →
    (instances on the node, MiB per instance); the whole GPUs then count only those not split."""
    labels = {
        "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": str(memory_mib),
        "nvidia.com/gpu.count": str(count), "nvidia.com/gpu.compute.major": str(compute[0]),
        "nvidia.com/gpu.compute.minor": str(compute[1]), "nvidia.com/gpu.family": family,
        "nvidia.com/cuda.driver.major": str(driver_major), "nvidia.com/mig.strategy": "mixed" if mig else "none",
    }  # fmt: skip
    resources = {"nvidia.com/gpu": str(count)}
    for profile, (instances, mib) in (mig or {}).items():
        labels[f"nvidia.com/mig-{profile}.count"] = str(instances)
        labels[f"nvidia.com/mig-{profile}.memory"] = str(mib)
        resources[f"nvidia.com/mig-{profile}"] = str(instances)
    return fake_node(name, arch=arch, labels=labels, resources=resources)


def amd_node(name: str, *, vram: str = "191G", count: int = 8, family: str = "AI", device_id: str = "74a1",
             product: str = "AMD_Instinct_MI300X") -> dict[str, Any]:  # fmt: skip
    labels = {"amd.com/gpu.family": family, "amd.com/gpu.vram": vram, "amd.com/gpu.device-id": device_id,
              "amd.com/gpu.product-name": product}  # fmt: skip
    return fake_node(name, labels=labels, resources={"amd.com/gpu": str(count)})


def intel_node(name: str, *, count: int = 1, family: str = "A_Series") -> dict[str, Any]:
    return fake_node(name, labels={"gpu.intel.com/family": family}, resources={"gpu.intel.com/i915": str(count)})


def arm64_node(name: str) -> dict[str, Any]:
    return fake_node(name, arch="arm64")


def many_nodes(count: int, prefix: str = "kwok-many") -> list[dict[str, Any]]:
    """`count` nodes of mixed hardware: a quarter arm64, a quarter NVIDIA (H100, L4, A100 with
    MIG in turn), a tenth AMD, the rest plain amd64."""
    nodes: list[dict[str, Any]] = []
    for i in range(count):
        name = f"{prefix}-{i:04d}"
        if i % 4 == 1:
            nodes.append(arm64_node(name))
        elif i % 4 == 2:
            nodes.append([
                nvidia_node(name),
                nvidia_node(name, product="NVIDIA-L4", memory_mib=23034, count=1, compute=(8, 9), family="ada-lovelace"),
                nvidia_node(name, product="NVIDIA-A100-SXM4-80GB", memory_mib=81920, count=2, compute=(8, 0), family="ampere",
                            mig={"1g.10gb": (7, 9728)}),
            ][(i // 4) % 3])  # fmt: skip
        elif i % 10 == 3:
            nodes.append(amd_node(name))
        else:
            nodes.append(fake_node(name))
    return nodes
