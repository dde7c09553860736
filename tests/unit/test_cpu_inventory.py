from __future__ import annotations

import platform
from pathlib import Path

import psutil
import pytest

from autogit.agent.inventory.cpu import docker_arch, observe_cpu, read_binfmt

AARCH64_MAGIC = "7f454c460201010000000000000000000200b700"
RISCV64_MAGIC = "7f454c460201010000000000000000000200f300"
ARM_MAGIC = "7f454c4601010100000000000000000002002800"


def make_tree(root: Path, machine="x86_64", cpus="0-7", mem_kb=16 * 1024 * 1024, handlers=()) -> Path:
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/arch").write_text(machine + "\n")
    (root / "proc/meminfo").write_text(f"MemTotal:       {mem_kb} kB\nMemFree: 1 kB\n")
    (root / "sys/devices/system/cpu").mkdir(parents=True)
    (root / "sys/devices/system/cpu/online").write_text(cpus + "\n")
    binfmt = root / "proc/sys/fs/binfmt_misc"
    binfmt.mkdir(parents=True)
    (binfmt / "status").write_text("enabled\n")
    (binfmt / "register").write_text("")
    for name, enabled, flags, magic in handlers:
        (binfmt / name).write_text(
            f"{'enabled' if enabled else 'disabled'}\ninterpreter /usr/libexec/qemu-binfmt/{name}\n"
            f"flags: {flags}\noffset 0\nmagic {magic}\nmask ffffffffffffff00fffffffffffffffffeffffff\n"
        )
    return root


@pytest.mark.parametrize(
    "machine,arch",
    [("x86_64", "amd64"), ("aarch64", "arm64"), ("riscv64", "riscv64"), ("armv7l", "arm/v7"), ("i686", "386"), ("mips", "mips")],
)
def test_docker_arch_names(machine, arch):
    assert docker_arch(machine) == arch


def test_prepared_tree(tmp_path):
    root = make_tree(
        tmp_path,
        machine="x86_64",
        cpus="0-3,8-9",
        handlers=[
            ("qemu-aarch64", True, "PF", AARCH64_MAGIC),
            ("qemu-riscv64", True, "P", RISCV64_MAGIC),  # no F: containers cannot use it
            ("qemu-arm", False, "F", ARM_MAGIC),  # disabled
        ],
    )
    inv = observe_cpu(root)
    assert (inv.machine, inv.arch, inv.cpus, inv.memory_mb) == ("x86_64", "amd64", 6, 16384)
    by_name = {e.name: e for e in inv.binfmt}
    assert by_name["qemu-aarch64"].arch == "arm64" and by_name["qemu-aarch64"].fix_binary
    assert by_name["qemu-riscv64"].arch == "riscv64" and not by_name["qemu-riscv64"].fix_binary
    assert not by_name["qemu-arm"].enabled
    assert inv.emulated == ["arm64"]


def test_arm64_host_can_emulate_amd64_but_not_itself(tmp_path):
    amd64_magic = "7f454c4602010100000000000000000002003e00"
    root = make_tree(tmp_path, machine="aarch64", handlers=[("qemu-x86_64", True, "F", amd64_magic), ("qemu-aarch64", True, "F", AARCH64_MAGIC)])
    inv = observe_cpu(root)
    assert inv.arch == "arm64" and inv.emulated == ["amd64"]


def test_binfmt_not_mounted_means_no_emulation(tmp_path):
    assert read_binfmt(tmp_path) == []


def test_real_machine():
    inv = observe_cpu()
    assert inv.machine == platform.machine()
    assert inv.arch == docker_arch(platform.machine())
    assert inv.cpus == psutil.cpu_count()
    assert abs(inv.memory_mb - psutil.virtual_memory().total // 2**20) <= 1
    # Whatever is registered here, only enabled F-flag handlers count.
    for e in inv.binfmt:
        if e.arch in inv.emulated:
            assert e.enabled and e.fix_binary
