"""The NVIDIA backend against NvmlDouble (a double of the pynvml module only)."""

from __future__ import annotations

import threading

import pynvml
import pytest

from doubles.nvml_double import NvmlDouble, h100, rtx4090  # noqa: E402

from autogit.agent.inventory.gpu import GpuInventory, NvidiaBackend, NvmlHealthThread, normalise_bus_id, observe_gpus  # noqa: E402
from autogit.agent.inventory.gpu.nvidia import cuda_version_string  # noqa: E402
from autogit.agent.model import GpuVendor  # noqa: E402
from autogit.agent.tags import gpu_tags  # noqa: E402

NVIDIA_ONLY = {GpuVendor.NVIDIA}


def test_h100_is_detected_with_the_facts_nvml_reports() -> None:
    [snap] = NvidiaBackend(NvmlDouble([h100()])).observe()
    assert snap.gpu.id == "GPU-5f1e7c2a-8b3d-4e6f-9a0b-1c2d3e4f5a6b" == snap.uuid
    assert snap.gpu.vendor is GpuVendor.NVIDIA
    assert snap.gpu.model == "NVIDIA H100 80GB HBM3"
    assert snap.gpu.memory_mb == 81559  # 85520809984 bytes
    assert snap.gpu.pci_bus_id == snap.pci_bus_id == "0000:01:00.0"
    assert snap.gpu.healthy and snap.health_reason is None
    assert snap.driver_version == snap.gpu.driver_version == "580.159.04"
    assert snap.cuda_version == "13.0"
    assert snap.mig_mode is False
    assert snap.reading.memory_used_mb == 529
    assert snap.reading.utilization_pct == 0.0
    assert snap.reading.temperature_c == 31.0
    assert snap.reading.power_w == pytest.approx(69.871)  # milliwatts → watts


def test_h100_tags() -> None:
    [snap] = NvidiaBackend(NvmlDouble([h100()])).observe()
    assert snap.gpu.compute_capability == "9.0" and snap.gpu.mig_mode is False and snap.gpu.mig_parent is None
    assert gpu_tags(snap.gpu) == {
        "gpu", "nvidia", "cuda", "h100", "nvidia-driver-580",
        "vram-80g", *(f"vram-ge-{n}g" for n in (4, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80)),
        "cc-9.0", "cc-ge-6.0", "cc-ge-7.0", "cc-ge-7.5", "cc-ge-8.0", "cc-ge-8.6", "cc-ge-8.9", "cc-ge-9.0",
    }  # fmt: skip


def test_two_gpus_keep_nvml_order_and_their_own_ids() -> None:
    snaps = NvidiaBackend(NvmlDouble([h100(), rtx4090()])).observe()
    assert [s.gpu.model for s in snaps] == ["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090"]
    assert snaps[1].pci_bus_id == "0000:41:00.0"
    tags = gpu_tags(snaps[1].gpu)
    assert {"rtx4090", "vram-24g", "vram-ge-24g", "cc-8.9", "cc-ge-8.9"} <= tags
    assert "vram-ge-32g" not in tags and "cc-ge-9.0" not in tags


@pytest.mark.parametrize("error", [pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded])
def test_missing_library_or_driver_means_no_nvidia_gpus(error: type[pynvml.NVMLError]) -> None:
    backend = NvidiaBackend(NvmlDouble([h100()], init_error=error))
    assert backend.observe() == []
    assert backend.problem is None  # benign: this host simply has no usable NVIDIA stack
    assert backend.absent == str(error())


def test_the_real_pynvml_on_a_host_without_a_driver_yields_nothing() -> None:
    # This machine has no libnvidia-ml.so.1 (a GPU host would list its GPUs instead).
    backend = NvidiaBackend(pynvml)
    snaps = backend.observe()
    assert snaps == [] or all(s.gpu.vendor is GpuVendor.NVIDIA for s in snaps)
    if not snaps:
        assert backend.absent


def test_a_broken_stack_is_a_problem_not_an_absence() -> None:
    backend = NvidiaBackend(NvmlDouble([h100()], init_error=pynvml.NVMLError_LibRmVersionMismatch))
    assert backend.observe() == []
    assert backend.absent is None
    assert "initialisation failed" in (backend.problem or "")


def test_lost_gpu_is_unhealthy_and_keeps_its_identity() -> None:
    nvml = NvmlDouble([h100(), rtx4090()])
    backend = NvidiaBackend(nvml)
    backend.observe()
    nvml.gpus[0].lost = True
    lost, fine = backend.observe()
    assert not lost.gpu.healthy and "lost" in (lost.health_reason or "")
    assert lost.gpu.id == nvml.gpus[0].uuid and lost.gpu.model == "NVIDIA H100 80GB HBM3"
    assert lost.reading.utilization_pct is None and lost.reading.power_w is None  # unknown, not 0
    assert fine.gpu.healthy


def test_gpu_lost_at_enumeration_is_listed_unhealthy() -> None:
    nvml = NvmlDouble([h100(lost=True)])
    [snap] = NvidiaBackend(nvml).observe()
    assert not snap.gpu.healthy
    assert snap.gpu.id == "nvidia-index-0"


def test_not_supported_fields_are_none() -> None:
    gpu = rtx4090(not_supported=frozenset({"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"}))
    [snap] = NvidiaBackend(NvmlDouble([gpu])).observe()
    assert snap.mig_mode is None  # GeForce: MIG NotSupported
    assert snap.reading.power_w is None
    assert snap.reading.temperature_c is None
    assert snap.reading.utilization_pct == 12.0
    assert snap.gpu.healthy


def test_old_driver_without_temperature_v_falls_back() -> None:
    nvml = NvmlDouble([h100()], missing_functions=frozenset({"nvmlDeviceGetTemperatureV"}))
    backend = NvidiaBackend(nvml)
    assert backend.observe()[0].reading.temperature_c == 31.0
    assert backend.observe()[0].reading.temperature_c == 31.0


def test_nvml_stays_initialised_and_handles_are_not_fetched_per_read() -> None:
    nvml = NvmlDouble([h100(), rtx4090()])
    for _ in range(5):
        observe_gpus(vendors=NVIDIA_ONLY, nvml=nvml)
    assert nvml.init_count == 1 and nvml.refcount == 1
    assert nvml.handle_fetches == 2


def test_rescan_re_enumerates_once() -> None:
    nvml = NvmlDouble([h100()])
    inventory = GpuInventory(vendors=NVIDIA_ONLY, nvml=nvml)
    assert len(inventory.observe()) == 1
    nvml.gpus.append(rtx4090())
    assert len(inventory.observe()) == 1  # NVML is not asked again on a plain read
    inventory.rescan_nvidia()
    assert len(inventory.observe()) == 2
    assert nvml.refcount == 1 and nvml.init_count == 2
    inventory.close()
    assert nvml.refcount == 0


def test_bus_ids_are_normalised_to_sysfs_form() -> None:
    assert normalise_bus_id("00000000:01:00.0") == "0000:01:00.0"
    assert normalise_bus_id("0000000A:C1:00.0") == "000a:c1:00.0"
    assert normalise_bus_id("0000:01:00.0") == "0000:01:00.0"
    assert normalise_bus_id("01:00.0") == "0000:01:00.0"


def test_cuda_version_encoding() -> None:
    assert cuda_version_string(13000) == "13.0"
    assert cuda_version_string(12040) == "12.4"
    assert cuda_version_string(None) is None


class _Verdicts:
    def __init__(self) -> None:
        self.items: list[tuple[str, str | None, str]] = []
        self.arrived = threading.Condition()

    def __call__(self, gpu_id: str, bus: str | None, reason: str) -> None:
        with self.arrived:
            self.items.append((gpu_id, bus, reason))
            self.arrived.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.items) >= count, timeout)


def test_health_thread_ignores_application_xids_and_reports_critical_ones() -> None:
    nvml = NvmlDouble([h100(), rtx4090()])
    backend = NvidiaBackend(nvml)
    verdicts = _Verdicts()
    health = NvmlHealthThread(backend, verdicts, wait_ms=50)
    health.start()
    try:
        assert nvml.wait_registered(nvml.gpus[0].uuid)
        nvml.inject_xid(nvml.gpus[0].uuid, 13)  # graphics engine exception: the job's fault
        nvml.inject_xid(nvml.gpus[0].uuid, 79)  # fallen off the bus
        nvml.inject_event(nvml.gpus[1].uuid, pynvml.nvmlEventTypeSingleBitEccError)  # not registered on 4090
        assert verdicts.wait(1)
    finally:
        health.stop()
    assert verdicts.items == [(nvml.gpus[0].uuid, "0000:01:00.0", "critical Xid 79")]
    assert health.registered == sorted(g.uuid for g in nvml.gpus)


def test_health_thread_reports_double_bit_ecc() -> None:
    nvml = NvmlDouble([h100()])
    verdicts = _Verdicts()
    health = NvmlHealthThread(NvidiaBackend(nvml), verdicts, wait_ms=50)
    health.start()
    try:
        assert nvml.wait_registered(nvml.gpus[0].uuid)
        nvml.inject_event(nvml.gpus[0].uuid, pynvml.nvmlEventTypeSingleBitEccError)  # corrected
        nvml.inject_event(nvml.gpus[0].uuid, pynvml.nvmlEventTypeDoubleBitEccError)
        assert verdicts.wait(1)
    finally:
        health.stop()
    assert [reason for _, _, reason in verdicts.items] == ["double-bit (uncorrectable) ECC error"]


def test_health_verdicts_stick_in_the_inventory() -> None:
    nvml = NvmlDouble([h100()])
    inventory = GpuInventory(vendors=NVIDIA_ONLY, nvml=nvml)
    [before] = inventory.observe()
    assert inventory.health.mark(before.gpu.id, "critical Xid 79", before.pci_bus_id)
    assert not inventory.health.mark(before.gpu.id, "critical Xid 79", before.pci_bus_id)  # no new transition
    [after] = inventory.observe()
    assert not after.gpu.healthy and after.health_reason == "critical Xid 79"
    assert inventory.health.clear_bus("0000:01:00.0") == [before.gpu.id]
    assert inventory.observe()[0].gpu.healthy


def test_health_thread_re_registers_after_a_rescan() -> None:
    nvml = NvmlDouble([h100()])
    backend = NvidiaBackend(nvml)
    verdicts = _Verdicts()
    health = NvmlHealthThread(backend, verdicts, wait_ms=50)
    health.start()
    try:
        assert nvml.wait_registered(nvml.gpus[0].uuid)
        nvml.gpus.append(rtx4090())
        backend.rescan()
        assert nvml.wait_registered(nvml.gpus[1].uuid)
        nvml.inject_xid(nvml.gpus[1].uuid, 48)  # double-bit ECC Xid
        assert verdicts.wait(1)
    finally:
        health.stop()
    assert verdicts.items == [(nvml.gpus[1].uuid, "0000:41:00.0", "critical Xid 48")]
    assert nvml.refcount == 1 and nvml.init_count == 2
