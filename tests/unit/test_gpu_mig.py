"""MIG through the NVIDIA backend, against NvmlDouble (the pynvml boundary only): each MIG
instance is read as a GPU of its own, the layout is read again on every observe, and what
cannot be read is kept, unhealthy, rather than dropped."""

from __future__ import annotations

import logging

import pynvml
import pytest

from doubles.nvml_double import NvmlDouble, h100, h100_mig, mig_device, rtx4090

from autogit.agent.config import AgentConfig
from autogit.agent.inventory.gpu import GpuInventory, NvidiaBackend, mig_instance_changes
from autogit.agent.inventory.gpu.nvidia import LOST, mig_profile
from autogit.agent.inventory.host import observe_host
from autogit.agent.model import GpuVendor
from autogit.agent.tags import gpu_tags

PARENT = "GPU-5f1e7c2a-8b3d-4e6f-9a0b-1c2d3e4f5a6b"


def test_each_mig_instance_is_a_gpu_of_its_own_after_its_parent() -> None:
    nvml = NvmlDouble([h100_mig("1g.10gb", "3g.40gb"), rtx4090()])
    parent, small, large, consumer = NvidiaBackend(nvml).observe()
    assert parent.gpu.id == PARENT and parent.gpu.mig_mode is True and parent.mig_mode is True
    assert consumer.gpu.model == "NVIDIA GeForce RTX 4090" and consumer.gpu.mig_mode is False
    assert [s.gpu.id for s in (small, large)] == [nvml.gpus[0].mig_devices[0].uuid, nvml.gpus[0].mig_devices[1].uuid]
    assert all(s.gpu.id.startswith("MIG-") and s.uuid == s.gpu.id for s in (small, large))
    assert small.gpu.mig_parent == large.gpu.mig_parent == PARENT
    assert (small.gpu.mig_profile, large.gpu.mig_profile) == ("1g.10gb", "3g.40gb")
    assert small.gpu.model == "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
    assert (small.gpu.memory_mb, large.gpu.memory_mb) == (9984, 40448)  # the slice, not the board
    assert small.gpu.compute_capability == "9.0" and small.gpu.pci_bus_id == parent.gpu.pci_bus_id
    assert small.gpu.healthy and small.health_reason is None
    # NVML gives no utilisation for MIG devices; the slice's memory use is its own.
    assert small.reading.utilization_pct is None and small.reading.memory_used_mb == 13
    assert parent.reading.utilization_pct is None  # nor for a parent in MIG mode


def test_mig_instance_tags_ask_for_a_slice_never_for_a_whole_gpu() -> None:
    [_, small] = NvidiaBackend(NvmlDouble([h100_mig("1g.10gb")])).observe()
    tags = gpu_tags(small.gpu)
    assert {"mig", "mig-1g.10gb", "nvidia", "cuda", "h100", "vram-10g", "vram-ge-10g", "cc-9.0", "cc-ge-9.0"} <= tags
    assert "gpu" not in tags and "vram-ge-12g" not in tags


def test_empty_slots_are_skipped_quietly(caplog: pytest.LogCaptureFixture) -> None:
    # Destroying instance 1 of 0..2 leaves slot 1 empty: NVML answers NOT_FOUND there.
    gpu = h100(mig_mode=(1, 1), mig_devices={0: mig_device("2g.20gb", 0), 3: mig_device("1g.10gb", 3)})
    with caplog.at_level(logging.WARNING):
        snaps = NvidiaBackend(NvmlDouble([gpu])).observe()
    assert [s.gpu.mig_profile for s in snaps] == [None, "2g.20gb", "1g.10gb"]
    assert caplog.records == []


def test_instances_appearing_and_vanishing_are_seen_without_a_rescan() -> None:
    nvml = NvmlDouble([h100_mig("1g.10gb")])
    backend = NvidiaBackend(nvml)
    assert len(backend.observe()) == 2
    fetches = nvml.handle_fetches
    nvml.gpus[0].mig_devices[1] = mig_device("3g.40gb", 1)  # an operator ran nvidia-smi mig -cgi
    assert [s.gpu.mig_profile for s in backend.observe()] == [None, "1g.10gb", "3g.40gb"]
    del nvml.gpus[0].mig_devices[0]  # … and -dci/-dgi
    assert [s.gpu.mig_profile for s in backend.observe()] == [None, "3g.40gb"]
    assert nvml.handle_fetches == fetches and nvml.init_count == 1  # no re-enumeration


def test_instances_appearing_and_vanishing_become_hotplug_events() -> None:
    nvml = NvmlDouble([h100_mig("1g.10gb")])
    backend = NvidiaBackend(nvml)
    before = [s.gpu for s in backend.observe()]
    gone = nvml.gpus[0].mig_devices[0]
    nvml.gpus[0].mig_devices = {1: mig_device("3g.40gb", 1)}  # one slice destroyed, another made
    after = [s.gpu for s in backend.observe()]
    added = nvml.gpus[0].mig_devices[1].uuid
    assert mig_instance_changes(before, after) == [
        ("gpu.added", f"MIG instance {added} (3g.40gb) of GPU {PARENT} appeared",
         {"gpu": added, "mig_parent": PARENT, "mig_profile": "3g.40gb", "vendor": "nvidia"}),
        ("gpu.removed", f"MIG instance {gone.uuid} (1g.10gb) of GPU {PARENT} vanished",
         {"gpu": gone.uuid, "mig_parent": PARENT, "mig_profile": "1g.10gb", "vendor": "nvidia"}),
    ]  # fmt: skip
    assert mig_instance_changes(after, after) == []


def test_mig_switched_off_leaves_the_whole_gpu_only() -> None:
    nvml = NvmlDouble([h100_mig("1g.10gb")])
    backend = NvidiaBackend(nvml)
    assert len(backend.observe()) == 2
    nvml.gpus[0].mig_mode, nvml.gpus[0].mig_devices = (0, 0), {}
    [whole] = backend.observe()
    assert whole.gpu.mig_mode is False and whole.mig_mode is False


def test_pending_mig_mode_is_not_current() -> None:
    # Enabled but not yet activated (needs a GPU reset): still one whole GPU.
    [whole] = NvidiaBackend(NvmlDouble([h100(mig_mode=(0, 1))])).observe()
    assert whole.gpu.mig_mode is False


def test_without_privileges_the_parent_memory_is_unknown_but_slices_are_read() -> None:
    # In MIG mode the whole-GPU memory query needs privileges (nvml.h); the slices' does not.
    parent, small = NvidiaBackend(NvmlDouble([h100_mig("1g.10gb")], privileged=False)).observe()
    assert parent.gpu.memory_mb == 0 and parent.reading.memory_used_mb is None
    assert small.gpu.memory_mb == 9984


def test_a_lost_parent_keeps_its_instances_listed_unhealthy() -> None:
    nvml = NvmlDouble([h100_mig("1g.10gb", "1g.10gb")])
    backend = NvidiaBackend(nvml)
    ids = [s.gpu.id for s in backend.observe()]
    nvml.gpus[0].lost = True
    snaps = backend.observe()
    assert [s.gpu.id for s in snaps] == ids  # unknown is not absent: runners drain, not vanish
    assert not any(s.gpu.healthy for s in snaps) and {s.health_reason for s in snaps} == {LOST}


def test_a_gpu_lost_while_its_layout_is_read_is_unhealthy_at_once_with_its_instances() -> None:
    nvml = NvmlDouble([h100_mig("1g.10gb")])
    backend = NvidiaBackend(nvml)
    backend.observe()
    real = nvml.nvmlDeviceGetMaxMigDeviceCount

    def lost_now(handle):  # the GPU falls off the bus between the MIG-mode read and the layout read
        nvml.gpus[0].lost = True
        return real(handle)

    nvml.nvmlDeviceGetMaxMigDeviceCount = lost_now
    parent, instance = backend.observe()
    assert not parent.gpu.healthy and parent.health_reason == LOST
    assert not instance.gpu.healthy and instance.health_reason == LOST


def test_an_unreadable_layout_keeps_the_last_one_unhealthy() -> None:
    nvml = NvmlDouble([h100_mig("1g.10gb")])
    backend = NvidiaBackend(nvml)
    _, before = backend.observe()
    nvml.missing_functions = frozenset({"nvmlDeviceGetMaxMigDeviceCount"})
    parent, after = backend.observe()
    assert after.gpu.id == before.gpu.id and not after.gpu.healthy
    assert "MIG layout unreadable" in (after.health_reason or "")
    assert parent.gpu.healthy and parent.gpu.mig_mode is True
    nvml.missing_functions = frozenset()
    assert backend.observe()[1].gpu.healthy  # readable again: healthy again


def test_an_unreadable_mig_mode_keeps_the_parent_split_and_its_instances() -> None:
    nvml = NvmlDouble([h100_mig("1g.10gb")])
    backend = NvidiaBackend(nvml)
    backend.observe()
    nvml.missing_functions = frozenset({"nvmlDeviceGetMigMode"})
    parent, instance = backend.observe()
    assert parent.gpu.mig_mode is True  # last known: never handed out whole on a failed read
    assert not instance.gpu.healthy and "MIG mode unreadable" in (instance.health_reason or "")


def test_a_health_verdict_on_the_parent_covers_its_instances() -> None:
    inventory = GpuInventory(vendors={GpuVendor.NVIDIA}, nvml=NvmlDouble([h100_mig("1g.10gb")]))
    parent, _ = inventory.observe()
    inventory.health.mark(parent.gpu.id, "critical Xid 79", parent.pci_bus_id)
    assert [(s.gpu.healthy, s.health_reason) for s in inventory.observe()] == [(False, "critical Xid 79")] * 2


def test_the_double_answers_as_nvml_documents() -> None:
    nvml = NvmlDouble([h100_mig("1g.10gb"), rtx4090()])
    nvml.nvmlInit()
    split, consumer = nvml.nvmlDeviceGetHandleByIndex(0), nvml.nvmlDeviceGetHandleByIndex(1)
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(consumer) == 0  # "zero if MIG is not supported or enabled"
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(consumer, 0)
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(split, 1)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(split, 7)
    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(split, 0)
    assert nvml.nvmlDeviceIsMigDeviceHandle(mig) and not nvml.nvmlDeviceIsMigDeviceHandle(split)
    assert nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig) is split
    assert nvml.nvmlDeviceGetGpuInstanceId(mig) == 1
    del nvml.gpus[0].mig_devices[0]
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # a destroyed instance's handle is invalid
        nvml.nvmlDeviceGetUUID(mig)
    assert not hasattr(nvml, "nvmlDeviceSetMigMode")  # read only, like the agent: no way to change MIG mode


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "1g.5gb"),
        ("NVIDIA H100 80GB HBM3 MIG 1c.2g.20gb", "1c.2g.20gb"),
        ("NVIDIA H100 80GB HBM3", None),
        (None, None),
    ],
)
def test_mig_profile_from_the_mig_device_name(name: str | None, profile: str | None) -> None:
    assert mig_profile(name) == profile


def test_detect_shows_mig_mode_and_each_instance_with_its_parent() -> None:
    gpus = [s.gpu for s in NvidiaBackend(NvmlDouble([h100_mig("1g.10gb")])).observe()]
    lines = observe_host(AgentConfig(), gpus=gpus).human().splitlines()
    assert (
        f"  {PARENT}  nvidia NVIDIA H100 80GB HBM3, 81559 MiB, compute capability 9.0, MIG mode: only its instances take jobs, healthy"
        in lines
    )
    instance = gpus[1].id
    assert (
        f"  {instance}  nvidia NVIDIA H100 80GB HBM3 MIG 1g.10gb, 9984 MiB, compute capability 9.0, MIG 1g.10gb of {PARENT}, healthy"
        in lines
    )
