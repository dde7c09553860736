"""AMD and Intel backends over prepared sysfs trees shaped like the kernel's.

Each tree has what a real host has: /sys/devices/pci…/<bus id>/ with vendor, device, class,
uevent and a `driver` link; drm/cardN and drm/renderDN under it, each with a `device` link
back; and /sys/class/drm/<name> links into the device tree.
"""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest

from doubles.nvml_double import NvmlDouble
from sysfs_trees import GIB, add_gpu, amd_7900xtx, kfd_node, write_attrs

from autogit.agent.inventory.gpu import AmdBackend, GpuInventory, IntelBackend, observe_gpus
from autogit.agent.inventory.gpu.amd import gfx_target_name
from autogit.agent.inventory.gpu.intel import is_integrated
from autogit.agent.model import GpuVendor
from autogit.agent.tags import gpu_tags

NO_NVIDIA = {GpuVendor.AMD, GpuVendor.INTEL}


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    d = tmp_path / "dev"
    (d / "dri").mkdir(parents=True)
    return d


# --- AMD ---------------------------------------------------------------------------------------


def test_amd_card_is_read_from_sysfs(tmp_path: Path, dev: Path) -> None:
    amd_7900xtx(tmp_path)
    (dev / "kfd").write_text("")
    [snap] = AmdBackend(tmp_path, dev).observe()
    assert snap.gpu.id == snap.gpu.pci_bus_id == snap.pci_bus_id == "0000:03:00.0"
    assert snap.gpu.vendor is GpuVendor.AMD
    assert snap.gpu.model == "AMD Radeon RX 7900 XT/XTX"  # no product_name: known device id
    assert snap.gpu.memory_mb == 24 * 1024
    assert snap.gpu.render_node == snap.render_node == str(dev / "dri/renderD129")
    assert snap.driver == "amdgpu" and snap.driver_version is None  # in-tree: no module version
    assert snap.kfd is True
    assert snap.reading.utilization_pct == 7.0
    assert snap.reading.memory_used_mb == 512
    assert snap.reading.temperature_c == 45.0  # millidegrees
    assert snap.reading.power_w == 31.0  # microwatts
    assert gpu_tags(snap.gpu) == {"gpu", "amd", "rocm", "rx7900", "vram-24g", *(f"vram-ge-{n}g" for n in (4, 8, 10, 12, 16, 20, 24))}


def test_amd_unknown_device_is_named_by_its_id(tmp_path: Path, dev: Path) -> None:
    add_gpu(tmp_path, "0000:03:00.0", "0x1002", "0x15bf", "amdgpu", 0, {"mem_info_vram_total": str(GIB // 2)})
    [snap] = AmdBackend(tmp_path, dev).observe()
    assert snap.gpu.model == "AMD GPU 0x15bf"
    assert gpu_tags(snap.gpu) == {"gpu", "amd", "rocm", "0x15bf", "vram-1g"}  # half a GiB, rounded up; below every floor


def test_amd_product_name_power_input_and_dkms_version(tmp_path: Path, dev: Path) -> None:
    add_gpu(
        tmp_path, "0000:c1:00.0", "0x1002", "0x74a1", "amdgpu", 2,
        {"product_name": "AMD Instinct MI300X", "mem_info_vram_total": str(192 * GIB),
         "hwmon/hwmon5/power1_input": "140500000"},
    )  # fmt: skip
    write_attrs(tmp_path / "sys/module/amdgpu", {"version": "6.10.5"})
    [snap] = AmdBackend(tmp_path, dev).observe()
    assert snap.gpu.model == "AMD Instinct MI300X"
    assert snap.kfd is False  # amdgpu without /dev/kfd: no ROCm compute
    assert snap.reading.power_w == 140.5 and snap.reading.temperature_c is None
    assert snap.reading.utilization_pct is None and snap.reading.memory_used_mb is None  # unknown, not 0
    assert gpu_tags(snap.gpu) == {
        "gpu", "amd", "rocm", "mi300x", "vram-192g", "amd-driver-6",
        *(f"vram-ge-{n}g" for n in (4, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 141, 180, 192)),
    }  # fmt: skip


def test_gfx_target_comes_from_the_kfd_node_of_the_cards_render_minor(tmp_path: Path, dev: Path) -> None:
    # Two cards and a CPU node; node numbers deliberately not in render-minor order.
    amd_7900xtx(tmp_path, "0000:03:00.0", minor=1)  # renderD129
    add_gpu(tmp_path, "0000:c1:00.0", "0x1002", "0x74a1", "amdgpu", 2, {"mem_info_vram_total": str(192 * GIB)})  # renderD130
    kfd_node(tmp_path, 0, 0)  # the CPU
    kfd_node(tmp_path, 1, 90402, render_minor=130, gpu_id=41233)  # MI300X: gfx942
    kfd_node(tmp_path, 2, 110000, render_minor=129, gpu_id=58012)  # RX 7900 XTX: gfx1100
    rx7900, mi300x = AmdBackend(tmp_path, dev).observe()
    assert (rx7900.gpu.gfx_target, mi300x.gpu.gfx_target) == ("gfx1100", "gfx942")
    assert "gfx1100" in gpu_tags(rx7900.gpu) and "gfx942" in gpu_tags(mi300x.gpu)


def test_without_kfd_the_gfx_target_is_unknown(tmp_path: Path, dev: Path) -> None:
    amd_7900xtx(tmp_path)
    [snap] = AmdBackend(tmp_path, dev).observe()
    assert snap.gpu.gfx_target is None and not any(t.startswith("gfx") for t in gpu_tags(snap.gpu))


def test_gfx_target_names_follow_rocm() -> None:
    # major*10000 + minor*100 + stepping; the stepping is written in hex (rocprofiler-sdk).
    assert [gfx_target_name(v) for v in (90010, 90402, 90500, 90012, 100300, 110000, 110501, 0)] == [
        "gfx90a", "gfx942", "gfx950", "gfx90c", "gfx1030", "gfx1100", "gfx1151", None,
    ]  # fmt: skip


def test_each_card_gets_its_own_render_node(tmp_path: Path, dev: Path) -> None:
    # Minors deliberately not in bus order: the tie is by PCI parent, never by position.
    amd_7900xtx(tmp_path, "0000:03:00.0", minor=2)
    amd_7900xtx(tmp_path, "0000:83:00.0", minor=1)
    snaps = AmdBackend(tmp_path, dev).observe()
    assert [(s.pci_bus_id, Path(s.render_node or "").name) for s in snaps] == [
        ("0000:03:00.0", "renderD130"),
        ("0000:83:00.0", "renderD129"),
    ]


def test_card_without_render_node(tmp_path: Path, dev: Path) -> None:
    add_gpu(tmp_path, "0000:03:00.0", "0x1002", "0x744c", "amdgpu", 0, render=False)
    [snap] = AmdBackend(tmp_path, dev).observe()
    assert snap.render_node is None and snap.gpu.memory_mb == 0


def test_no_drm_at_all_is_no_gpus(tmp_path: Path, dev: Path) -> None:
    assert AmdBackend(tmp_path, dev).observe() == []
    assert IntelBackend(tmp_path, dev).observe() == []


# --- Intel -------------------------------------------------------------------------------------


def test_intel_integrated_i915(tmp_path: Path, dev: Path) -> None:
    add_gpu(tmp_path, "0000:00:02.0", "0x8086", "0xa7a0", "i915", 0)
    [snap] = IntelBackend(tmp_path, dev).observe()
    assert snap.gpu.integrated is True and snap.gpu.memory_mb == 0
    assert snap.driver == "i915"
    assert snap.render_node == str(dev / "dri/renderD128")
    assert snap.reading.utilization_pct is None
    assert gpu_tags(snap.gpu) == {"gpu", "intel", "oneapi", "0xa7a0", "igpu"}


def test_intel_discrete_xe_from_tile_vram(tmp_path: Path, dev: Path) -> None:
    add_gpu(
        tmp_path, "0000:03:00.0", "0x8086", "0xe20b", "xe", 1,
        {"tile0/physical_vram_size_bytes": str(12 * GIB), "hwmon/hwmon4/power1_average": "42000000"},
    )  # fmt: skip
    [snap] = IntelBackend(tmp_path, dev).observe()
    assert snap.gpu.integrated is False and snap.gpu.memory_mb == 12 * 1024
    assert snap.driver == "xe" and snap.reading.power_w == 42.0
    assert {"dgpu", "vram-12g"} <= gpu_tags(snap.gpu) and "xe" not in gpu_tags(snap.gpu)


def test_intel_discrete_i915_from_lmem(tmp_path: Path, dev: Path) -> None:
    add_gpu(
        tmp_path, "0000:04:00.0", "0x8086", "0x56a0", "i915", 1,
        card_attrs={"lmem_total_bytes": str(16 * GIB), "lmem_avail_bytes": str(15 * GIB)},
    )  # fmt: skip
    [snap] = IntelBackend(tmp_path, dev).observe()
    assert snap.gpu.integrated is False and snap.gpu.memory_mb == 16 * 1024
    assert snap.reading.memory_used_mb == 1024
    assert snap.gpu.model == "Intel Arc A770"
    assert {"a770", "vram-16g", "dgpu"} <= gpu_tags(snap.gpu)


def test_intel_discrete_without_vram_files_is_discrete_of_unknown_size(tmp_path: Path, dev: Path) -> None:
    add_gpu(tmp_path, "0000:04:00.0", "0x8086", "0x56a0", "i915", 1)
    [snap] = IntelBackend(tmp_path, dev).observe()
    assert snap.gpu.integrated is False and snap.gpu.memory_mb == 0
    assert not any(t.startswith("vram-") for t in gpu_tags(snap.gpu))


def test_integrated_heuristic() -> None:
    assert is_integrated("0000:00:02.0", None)
    assert not is_integrated("0000:00:02.0", 8 * GIB)
    assert not is_integrated("0000:03:00.0", None)


# --- All vendors together ------------------------------------------------------------------------


def test_mixed_host_lists_each_vendor_and_ignores_other_pci_devices(tmp_path: Path, dev: Path) -> None:
    add_gpu(tmp_path, "0000:00:02.0", "0x8086", "0xa7a0", "i915", 0)
    amd_7900xtx(tmp_path, "0000:03:00.0", minor=1)
    # An NVIDIA card with nouveau's drm card is not the AMD or Intel backend's business.
    add_gpu(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "nouveau", 2, display_class="0x030200")
    snaps = observe_gpus(tmp_path, dev, vendors=NO_NVIDIA)
    assert [(s.gpu.vendor, s.gpu.id) for s in snaps] == [
        (GpuVendor.AMD, "0000:03:00.0"),
        (GpuVendor.INTEL, "0000:00:02.0"),
    ]


def test_nvidia_on_pci_without_nvml_is_a_reported_problem(tmp_path: Path, dev: Path) -> None:
    add_gpu(tmp_path, "0000:01:00.0", "0x10de", "0x2330", "nvidia", 2, display_class="0x030200", render=False)
    no_library = NvmlDouble(init_error=pynvml.NVMLError_LibraryNotFound)
    inventory = GpuInventory(tmp_path, dev, vendors={GpuVendor.NVIDIA}, nvml=no_library)
    assert inventory.observe() == []
    assert inventory.problems == {
        "nvidia": "1 NVIDIA GPU(s) on the PCI bus but NVML is unavailable: NVML Shared Library Not Found"
    }
