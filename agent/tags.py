"""Which runner tags a host's hardware yields (pure functions; documented in docs/runners/tags.md).

A *profile* is the largest tag set one kind of runner on this host could carry: the native
architecture, each usable emulated architecture, each GPU. A job can be served here only if
its tags are a subset of one profile (GitLab's rule: job tags ⊆ runner tags).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import Gpu, GpuVendor, Host, Policy, RunnerKind

__all__ = [
    "ARCH_TAGS",
    "Profile",
    "arch_tags",
    "gpu_family",
    "gpu_tags",
    "host_profiles",
    "platform_for_arch",
    "tag_for_arch",
]

# Docker platform architecture → the tags a job may use to ask for it. The first is canonical;
# the others are the `uname -m` spellings people write in .gitlab-ci.yml.
ARCH_TAGS: dict[str, tuple[str, ...]] = {
    "amd64": ("amd64", "x86_64"),
    "arm64": ("arm64", "aarch64"),
    "riscv64": ("riscv64",),
    "arm/v7": ("armv7", "armhf"),
    "arm/v6": ("armv6", "armel"),
    "386": ("i386", "386"),
    "ppc64le": ("ppc64le",),
    "s390x": ("s390x",),
}
_ARCH_OF_TAG = {tag: arch for arch, tags in ARCH_TAGS.items() for tag in tags}


def arch_tags(arch: str) -> frozenset[str]:
    return frozenset(ARCH_TAGS.get(arch, (arch.replace("/", ""),)))


def tag_for_arch(arch: str) -> str:
    return ARCH_TAGS.get(arch, (arch.replace("/", ""),))[0]


def arch_of_tag(tag: str) -> str | None:
    return _ARCH_OF_TAG.get(tag)


def platform_for_arch(arch: str) -> str:
    return f"linux/{arch}"


_VENDOR_STACK = {GpuVendor.NVIDIA: "cuda", GpuVendor.AMD: "rocm", GpuVendor.INTEL: "oneapi"}
_FAMILY_NOISE = re.compile(
    r"\b(nvidia|amd|ati|intel\(r\)|intel|corporation|geforce|quadro|tesla|radeon|instinct|"
    r"arc|graphics|gpu|pcie|sxm\d*|hbm\d*e?|nvl|\d+\s*gb)\b",
    re.IGNORECASE,
)


def gpu_family(model: str) -> str | None:
    """The model family as a tag: 'NVIDIA H100 80GB HBM3' → 'h100', 'GeForce RTX 4090' → 'rtx4090'.

    Noise words (vendor, brand line, memory size, form factor) are dropped and the first
    remaining word is kept, glued to a following number ('RTX 4090', 'RX 7900', 'Arc A770').
    """
    words = [w for w in re.split(r"[\s\-_/]+", _FAMILY_NOISE.sub(" ", model)) if w]
    words = [re.sub(r"[^0-9a-z.]", "", w.lower()) for w in words]
    words = [w for w in words if w]
    if not words:
        return None
    family = words[0]
    if not any(c.isdigit() for c in family) and len(words) > 1 and words[1][:1].isdigit():
        family += words[1]
    return family


def _memory_class(memory_mb: int) -> str | None:
    if memory_mb <= 0:
        return None
    return f"vram-{round(memory_mb / 1024)}g"


def gpu_tags(gpu: Gpu) -> frozenset[str]:
    """Tags one GPU yields: gpu, vendor, compute stack, family, memory class, driver major."""
    tags = {"gpu", gpu.vendor.value, _VENDOR_STACK[gpu.vendor], *gpu.tags}
    if (family := gpu_family(gpu.model)) is not None:
        tags.add(family)
    if not gpu.integrated and (memory := _memory_class(gpu.memory_mb)) is not None:
        tags.add(memory)
    if gpu.vendor is GpuVendor.INTEL:
        tags.add("igpu" if gpu.integrated else "dgpu")
    if gpu.driver_version:
        tags.add(f"{gpu.vendor.value}-driver-{gpu.driver_version.split('.')[0]}")
    return frozenset(tags)


@dataclass(frozen=True, slots=True)
class Profile:
    """The tags one kind of runner of this host could carry, and what it needs."""

    kind: RunnerKind
    arch: str
    tags: frozenset[str]
    gpu: str | None = None


def host_profiles(host: Host, policy: Policy) -> list[Profile]:
    """Native first, then each emulated architecture, then each GPU (all GPUs, usable or not:
    the planner tells 'no such hardware' from 'hardware busy or unhealthy')."""
    extra = frozenset(policy.extra_tags)
    native = Profile(RunnerKind.NATIVE, host.arch, arch_tags(host.arch) | extra)
    profiles = [native]
    for arch in sorted(set(host.emulated) - {host.arch}):
        profiles.append(Profile(RunnerKind.EMULATED, arch, arch_tags(arch) | extra))
    for gpu in sorted(host.gpus, key=lambda g: g.id):
        profiles.append(Profile(RunnerKind.GPU, host.arch, gpu_tags(gpu) | native.tags, gpu.id))
    return profiles
