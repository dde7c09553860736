"""Which runner tags a host's hardware yields (pure functions; documented in docs/runners/tags.md).

A *profile* is the largest tag set one kind of runner on this host could carry: the native
architecture, each usable emulated architecture, each GPU. A job can be served here only if
its tags are a subset of one profile (GitLab's rule: job tags ⊆ runner tags).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from .digits import parse_uint
from .model import Gpu, GpuVendor, Host, Policy, RunnerKind

__all__ = [
    "ARCH_TAGS",
    "CC_FLOORS",
    "VRAM_FLOORS_GIB",
    "Profile",
    "arch_tags",
    "compute_capability_tags",
    "gpu_family",
    "gpu_tags",
    "host_profiles",
    "memory_gib",
    "memory_tags",
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


# "At least" steps of GPU memory, in GiB: the sizes real boards and MIG slices are sold as
# (docs/gpu/README.md names the first card on each step). A GPU carries `vram-ge-<N>g` for every
# step N up to its own size, so a job that names a floor matches every GPU at or above it and
# none below; the planner's smallest-that-fits rule then keeps the big boards for big jobs.
VRAM_FLOORS_GIB: tuple[int, ...] = (4, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 141, 180, 192, 256, 288)

# "At least" steps of CUDA compute capability: every generation of NVIDIA data-centre and
# desktop GPU from Pascal on (6.0 P100, 7.0 V100, 7.5 T4, 8.0 A100, 8.6 A10/RTX 30, 8.9 L4/L40S/
# RTX 40, 9.0 H100/H200, 10.0 B200, 12.0 RTX 50/RTX PRO 6000). Ordered as numbers, the way CUDA
# code tests `__CUDA_ARCH__ >= 800`: a floor names a feature level (BF16 from 8.0, FP8 from 8.9),
# not binary compatibility, for which a job names the exact `cc-X.Y` tag.
CC_FLOORS: tuple[tuple[int, int], ...] = ((6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0))


def memory_gib(memory_mb: int) -> int | None:
    """The memory a GPU is sold with, in whole GiB: the reported size rounded *up*.

    Drivers report less than the board carries (the driver's and firmware's reservations): an
    H100 80GB reports 81559 MiB (79.6 GiB), its 7g.80gb MIG slice 79.25 GiB, a 1g.10gb slice
    9.75 GiB, an H200 about 140.4 GiB. Rounding up gives 80, 80, 10 and 141, the sizes on the
    box and in NVIDIA's own MIG profile names; rounding to the nearest would call the whole-GPU
    slice 79. The usable memory is therefore less than a GiB below this number. None: unknown.
    """
    if memory_mb <= 0:
        return None
    return math.ceil(memory_mb / 1024)


def memory_tags(memory_mb: int) -> frozenset[str]:
    """The exact class `vram-<GiB>g` and every floor `vram-ge-<N>g` at or below it."""
    gib = memory_gib(memory_mb)
    if gib is None:
        return frozenset()
    return frozenset({f"vram-{gib}g", *(f"vram-ge-{floor}g" for floor in VRAM_FLOORS_GIB if floor <= gib)})


def compute_capability_tags(compute_capability: str) -> frozenset[str]:
    """'9.0' → cc-9.0 and every floor cc-ge-X.Y at or below it; an unparsable value: none."""
    major_text, sep, minor_text = compute_capability.partition(".")
    major, minor = parse_uint(major_text, 4), parse_uint(minor_text, 4)
    if not sep or major is None or minor is None:
        return frozenset()
    level = (major, minor)
    return frozenset({f"cc-{level[0]}.{level[1]}", *(f"cc-ge-{a}.{b}" for a, b in CC_FLOORS if (a, b) <= level)})


def gpu_tags(gpu: Gpu) -> frozenset[str]:
    """Tags one GPU yields: `gpu` (a whole GPU) or `mig` and `mig-<profile>` (a MIG instance),
    vendor, compute stack, family, memory class and floors, compute capability and its floors
    (NVIDIA), gfx target (AMD), driver major.

    A MIG instance does not carry `gpu`: jobs written for a whole GPU (ADR-004) must never land
    on a slice, and GitLab's tags cannot say "not", so only the tag's absence keeps them off;
    a job asks for a slice with `mig` (ADR-006).

    Derived from the fields that say what the GPU is, never its id, and remembered by them: a
    cluster offers thousands of identical GPU units (ADR-016), each pass.
    """
    return _gpu_tags(gpu.vendor, tuple(gpu.tags), gpu.mig_parent is not None, gpu.mig_profile, gpu.model, gpu.integrated, gpu.memory_mb,
                     gpu.compute_capability, gpu.gfx_target, gpu.driver_version)  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _gpu_tags(vendor: GpuVendor, extra: tuple[str, ...], mig: bool, mig_profile: str | None, model: str, integrated: bool, memory_mb: int,
              compute_capability: str | None, gfx_target: str | None, driver_version: str | None) -> frozenset[str]:  # fmt: skip
    tags = {vendor.value, _VENDOR_STACK[vendor], *extra}
    if not mig:
        tags.add("gpu")
    else:
        tags.add("mig")
        if mig_profile:
            tags.add(f"mig-{mig_profile}")
    if (family := gpu_family(model)) is not None:
        tags.add(family)
    if not integrated:
        tags |= memory_tags(memory_mb)
    if vendor is GpuVendor.INTEL:
        tags.add("igpu" if integrated else "dgpu")
    if compute_capability:
        tags |= compute_capability_tags(compute_capability)
    if gfx_target:
        tags.add(gfx_target)
    if driver_version:
        tags.add(f"{vendor.value}-driver-{driver_version.split('.')[0]}")
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
