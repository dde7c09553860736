"""CPU architecture, QEMU emulation through binfmt_misc, CPU count and memory.

Every read takes a root path so tests can point it at a prepared tree; the live machine is
read with root=Path("/") (CPU count and memory then come from psutil).
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
from pydantic import Field

from ..model import Frozen

__all__ = ["BinfmtEntry", "CpuInventory", "docker_arch", "observe_cpu", "read_binfmt"]

# `uname -m` → Docker platform architecture. containerd's normalizeArch maps x86_64 and aarch64
# but not armv7l/armv6l/i686, so the table is ours.
_UNAME_TO_DOCKER = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "riscv64": "riscv64",
    "armv7l": "arm/v7",
    "armv8l": "arm/v7",
    "armhf": "arm/v7",
    "armv6l": "arm/v6",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}

# ELF e_machine (bytes 18-19 of the header, little-endian in binfmt's magic) → Docker arch.
_E_MACHINE_TO_DOCKER = {
    "3e00": "amd64",
    "b700": "arm64",
    "f300": "riscv64",  # riscv64 and riscv32 share it; the ELF class byte tells them apart
    "2800": "arm/v7",
    "0300": "386",
    "1500": "ppc64le",
    "1600": "s390x",
}


def docker_arch(machine: str) -> str:
    """Map a `uname -m` name to Docker's platform architecture (unknown names pass through)."""
    return _UNAME_TO_DOCKER.get(machine.strip(), machine.strip())


class BinfmtEntry(Frozen):
    name: str
    arch: str | None = Field(description="Docker arch its magic is for, if recognised.")
    enabled: bool
    interpreter: str | None = None
    flags: str = ""
    fix_binary: bool = Field(
        description="F flag: the interpreter is opened at registration, so it works inside "
        "containers (other mount namespaces). Containers need it."
    )


class CpuInventory(Frozen):
    machine: str = Field(description="uname -m")
    arch: str = Field(description="Docker platform architecture")
    cpus: int
    memory_mb: int
    binfmt: list[BinfmtEntry] = Field(default_factory=list)

    @property
    def emulated(self) -> list[str]:
        """Foreign architectures usable by containers: enabled, with the F flag."""
        return sorted({e.arch for e in self.binfmt if e.enabled and e.fix_binary and e.arch and e.arch != self.arch})


def _arch_from_magic(magic: str) -> str | None:
    # magic is hex of the ELF header prefix: 7f454c46 | class | data | ... | e_machine at 18.
    if len(magic) < 40 or not magic.startswith("7f454c46"):
        return None
    elf_class = magic[8:10]  # 01: 32-bit, 02: 64-bit
    arch = _E_MACHINE_TO_DOCKER.get(magic[36:40])
    if arch == "riscv64" and elf_class != "02":
        return None
    if arch in {"amd64", "arm64", "ppc64le", "s390x"} and elf_class != "02":
        return None
    return arch


def read_binfmt(root: Path = Path("/")) -> list[BinfmtEntry]:
    """Registered binfmt_misc handlers (empty if binfmt_misc is not mounted)."""
    base = root / "proc/sys/fs/binfmt_misc"
    entries: list[BinfmtEntry] = []
    try:
        names = sorted(p.name for p in base.iterdir())
    except OSError:
        return entries
    for name in names:
        if name in {"register", "status"}:
            continue
        try:
            lines = (base / name).read_text().splitlines()
        except OSError:
            continue
        fields: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(" ")
            fields[key.rstrip(":")] = value.strip()
        flags = fields.get("flags", "")
        entries.append(
            BinfmtEntry(
                name=name,
                arch=_arch_from_magic(fields.get("magic", "")),
                enabled=bool(lines) and lines[0].strip() == "enabled",
                interpreter=fields.get("interpreter"),
                flags=flags,
                fix_binary="F" in flags,
            )
        )
    return entries


def _read_machine(root: Path) -> str:
    try:
        return (root / "proc/sys/kernel/arch").read_text().strip()
    except OSError:
        if root == Path("/"):
            return os.uname().machine
        raise


def _count_cpus(root: Path) -> int:
    if root == Path("/"):
        return psutil.cpu_count(logical=True) or 1
    online = (root / "sys/devices/system/cpu/online").read_text().strip()
    count = 0
    for part in online.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def _memory_mb(root: Path) -> int:
    if root == Path("/"):
        return psutil.virtual_memory().total // (1024 * 1024)
    for line in (root / "proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ValueError("MemTotal missing from proc/meminfo")


def observe_cpu(root: Path = Path("/")) -> CpuInventory:
    machine = _read_machine(root)
    return CpuInventory(
        machine=machine,
        arch=docker_arch(machine),
        cpus=_count_cpus(root),
        memory_mb=_memory_mb(root),
        binfmt=read_binfmt(root),
    )
