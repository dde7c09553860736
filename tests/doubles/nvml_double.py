"""NvmlDouble: a test double of the `pynvml` module (nvidia-ml-py), and nothing more.

It stands in for NVML at the exact boundary the NVIDIA backend crosses: the same function
names and signatures, pynvml's own result structures (nvmlPciInfo_t, c_nvmlMemory_t,
c_nvmlUtilization_t) and pynvml's own exception classes (NVMLError_GpuIsLost, …), which it
looks up on the real module, so `except pynvml.NVMLError_…` in the backend behaves as it would
against a driver. Constants come from the real module too; functions it does not implement
raise AttributeError rather than silently reaching the real library.

Default values are what an H100 SXM reports (nvidia-smi / NVML on driver 580.159.04):
'NVIDIA H100 80GB HBM3', 85520809984 bytes (81559 MiB), CUDA 13000 → '13.0',
bus id '00000000:01:00.0' (NVML's 8-digit upper-case domain), compute capability 9.0.

MIG is modelled as NVML documents it (nvml.h, group nvmlMultiInstanceGPU, as vendored in
NVIDIA/go-nvml `pkg/nvml/nvml.h`; signatures and return shapes as in nvidia-ml-py's `pynvml.py`):
a GPU whose current MIG mode is NVML_DEVICE_MIG_ENABLE has up to `max_mig_devices` MIG devices
in sparse slots; each is reached by nvmlDeviceGetMigDeviceHandleByIndex and answers the
ordinary device queries (UUID 'MIG-…', name '<parent> MIG <profile>', its own memory). The
double only reads MIG state: like the agent, it has no nvmlDeviceSetMigMode or instance
creation (a test edits `mig_devices` and `mig_mode` to play an operator's change).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import pynvml

__all__ = ["DoubleGpu", "DoubleMigDevice", "NvmlDouble", "h100", "h100_mig", "mig_device", "rtx4090"]

_ALL_HEALTH_EVENTS = (
    pynvml.nvmlEventTypeSingleBitEccError
    | pynvml.nvmlEventTypeDoubleBitEccError
    | pynvml.nvmlEventTypePState
    | pynvml.nvmlEventTypeXidCriticalError
    | pynvml.nvmlEventTypeClock
)


@dataclass
class DoubleMigDevice:
    """One MIG device (a compute instance in its GPU instance) as NVML shows it."""

    uuid: str
    profile: str  # e.g. '1g.10gb'; NVML's name for it is '<parent name> MIG <profile>'
    memory_total: int  # bytes
    memory_used: int = 0  # bytes
    gpu_instance_id: int = 0
    compute_instance_id: int = 0


@dataclass
class DoubleGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-5f1e7c2a-8b3d-4e6f-9a0b-1c2d3e4f5a6b"
    bus_id: str = "00000000:01:00.0"
    memory_total: int = 85520809984  # bytes
    memory_used: int = 554_696_704  # bytes; NVML v1 "used" includes the driver's reservation
    utilization_gpu: int = 0  # percent
    temperature_c: int = 31
    power_mw: int = 69_871
    mig_mode: tuple[int, int] | None = (0, 0)  # (current, pending); None: NotSupported
    max_mig_devices: int = 7  # MIG devices possible in MIG mode (H100: seven 1g slices)
    mig_devices: dict[int, DoubleMigDevice] = field(default_factory=dict)  # slot index → device
    compute_capability: tuple[int, int] = (9, 0)
    supported_events: int = _ALL_HEALTH_EVENTS
    not_supported: frozenset[str] = frozenset()  # functions answering NVML_ERROR_NOT_SUPPORTED
    lost: bool = False  # every call on it raises NVMLError_GpuIsLost
    # Every call on it blocks until NvmlDouble.unhang(): a GPU fallen off the bus can leave the
    # driver's ioctl waiting (nvidia-smi and NVML calls that never return are the known symptom;
    # NVIDIA's k8s-device-plugin runs its NVML health loop in its own goroutine for that reason).
    hung: bool = False


def h100(**changes: Any) -> DoubleGpu:
    return DoubleGpu(**changes)


def rtx4090(**changes: Any) -> DoubleGpu:
    """A consumer card: no MIG, no ECC events, 24 GiB."""
    values: dict[str, Any] = dict(
        name="NVIDIA GeForce RTX 4090",
        uuid="GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
        bus_id="00000000:41:00.0",
        memory_total=25757220864,
        memory_used=301_989_888,
        utilization_gpu=12,
        temperature_c=44,
        power_mw=23_512,
        mig_mode=None,
        max_mig_devices=0,
        compute_capability=(8, 9),
        supported_events=pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypePState,
    )
    values.update(changes)
    return DoubleGpu(**values)


# Memory NVML reports per H100 80GB MIG profile (as `nvidia-smi mig -lgip` lists it: 1g.10gb 9.75 GiB,
# 1g.20gb and 2g.20gb 19.62 GiB, 3g.40gb and 4g.40gb 39.50 GiB, 7g.80gb 79.25 GiB).
H100_MIG_MEMORY = {
    "1g.10gb": 9984 << 20,
    "1g.20gb": 20096 << 20,
    "2g.20gb": 20096 << 20,
    "3g.40gb": 40448 << 20,
    "4g.40gb": 40448 << 20,
    "7g.80gb": 81152 << 20,
}


def mig_device(profile: str, n: int, **changes: Any) -> DoubleMigDevice:
    """The n-th MIG device of an H100 80GB, of this profile."""
    values: dict[str, Any] = dict(
        uuid=f"MIG-{n:08x}-aaaa-5bbb-8ccc-{n:012x}",
        profile=profile,
        memory_total=H100_MIG_MEMORY[profile],
        memory_used=13 << 20,
        gpu_instance_id=n + 1,
    )
    values.update(changes)
    return DoubleMigDevice(**values)


def h100_mig(*profiles: str, **changes: Any) -> DoubleGpu:
    """An H100 in MIG mode with one MIG device per profile given, in slots 0, 1, …"""
    devices = {i: mig_device(profile, i) for i, profile in enumerate(profiles)}
    return DoubleGpu(mig_mode=(1, 1), mig_devices=devices, **changes)


@dataclass(eq=False)
class _Handle:
    uuid: str
    mig_parent: str | None = None  # set on a MIG device handle: its parent GPU's UUID


@dataclass(eq=False)
class _EventSet:
    events: queue.Queue[Any] = field(default_factory=queue.Queue)
    masks: dict[str, int] = field(default_factory=dict)  # uuid → registered event mask
    freed: bool = False


@dataclass
class _EventData:
    """Shaped like pynvml.c_nvmlEventData_t (a ctypes struct cannot hold the double's handle)."""

    device: Any
    eventType: int
    eventData: int
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


class NvmlDouble:
    """A pynvml stand-in. Mutate `gpus` and the flags to play out a scenario."""

    def __init__(
        self,
        gpus: list[DoubleGpu] | None = None,
        *,
        driver_version: str = "580.159.04",
        cuda_version: int = 13000,
        init_error: type[pynvml.NVMLError] | None = None,
        missing_functions: frozenset[str] = frozenset(),
        privileged: bool = True,
    ) -> None:
        self.gpus = list(gpus) if gpus is not None else [h100()]
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.init_error = init_error  # e.g. NVMLError_LibraryNotFound: no libnvidia-ml.so.1
        self.missing_functions = missing_functions  # symbols an older driver lacks
        self.privileged = privileged  # root: whole-GPU aggregates in MIG mode are readable
        self.refcount = 0
        self.init_count = 0
        self.handle_fetches = 0
        self._handles: dict[str, _Handle] = {}
        self._sets: list[_EventSet] = []
        self._lock = threading.Lock()
        self.registered = threading.Condition(self._lock)
        self._unhung = threading.Event()
        self.blocked_calls = 0  # calls currently blocked on a hung GPU

    # Constants and exception classes are the real module's; functions must be ours.
    def __getattr__(self, name: str) -> Any:
        value = getattr(pynvml, name)
        if isinstance(value, (int, str)) or (isinstance(value, type) and issubclass(value, Exception)):
            return value
        raise AttributeError(f"NvmlDouble does not implement {name}")

    # --- scenario helpers -------------------------------------------------------------------
    def inject_event(self, uuid: str, event_type: int, data: int = 0) -> None:
        """Deliver an event to every set the GPU registered this type on (as the driver would)."""
        with self._lock:
            for es in self._sets:
                if not es.freed and es.masks.get(uuid, 0) & event_type:
                    es.events.put(_EventData(self._handles[uuid], event_type, data))

    def inject_xid(self, uuid: str, xid: int) -> None:
        self.inject_event(uuid, pynvml.nvmlEventTypeXidCriticalError, xid)

    def unhang(self) -> None:
        """Let every call blocked on a hung GPU return, and clear the flag on all GPUs."""
        for gpu in self.gpus:
            gpu.hung = False
        self._unhung.set()

    def wait_registered(self, uuid: str, timeout: float = 5.0) -> bool:
        """Block until some live event set watches this GPU (the health thread is ready)."""
        with self.registered:
            return self.registered.wait_for(
                lambda: any(not es.freed and uuid in es.masks for es in self._sets), timeout
            )

    # --- internals --------------------------------------------------------------------------
    def _check(self, func: str) -> None:
        if func in self.missing_functions:
            raise pynvml.NVMLError_FunctionNotFound()
        if self.refcount == 0:
            raise pynvml.NVMLError_Uninitialized()

    def _gpu(self, func: str, handle: _Handle) -> DoubleGpu:
        self._check(func)
        uuid = handle.uuid if handle.mig_parent is None else handle.mig_parent
        gpu = next((g for g in self.gpus if g.uuid == uuid), None)
        if gpu is not None and gpu.hung:
            self._unhung.clear()
            self.blocked_calls += 1
            self._unhung.wait()  # for good, until the scenario releases it
            self.blocked_calls -= 1
        if gpu is None or gpu.lost:  # unplugged or fallen off the bus
            raise pynvml.NVMLError_GpuIsLost()
        if func in gpu.not_supported:
            raise pynvml.NVMLError_NotSupported()
        return gpu

    def _mig(self, func: str, handle: _Handle) -> DoubleMigDevice | None:
        """The MIG device a handle names; None for a whole-GPU handle. A MIG handle whose
        instance was destroyed "would remain invalid and must be requested again" (nvml.h,
        nvmlDeviceGetMigDeviceHandleByIndex): INVALID_ARGUMENT, as for any invalid handle."""
        gpu = self._gpu(func, handle)
        if handle.mig_parent is None:
            return None
        mig = next((m for m in gpu.mig_devices.values() if m.uuid == handle.uuid), None)
        if mig is None or not self._mig_enabled(gpu):
            raise pynvml.NVMLError_InvalidArgument()
        return mig

    @staticmethod
    def _mig_enabled(gpu: DoubleGpu) -> bool:
        return gpu.mig_mode is not None and gpu.mig_mode[0] == pynvml.NVML_DEVICE_MIG_ENABLE

    # --- pynvml: initialisation and system --------------------------------------------------
    def nvmlInitWithFlags(self, flags: int) -> None:
        if self.init_error is not None:
            raise self.init_error()
        self.refcount += 1
        self.init_count += 1

    def nvmlInit(self) -> None:
        self.nvmlInitWithFlags(0)

    def nvmlShutdown(self) -> None:
        if self.refcount == 0:
            raise pynvml.NVMLError_Uninitialized()
        self.refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion")
        return self.cuda_version

    # --- pynvml: devices ----------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError_InvalidArgument()
        gpu = self.gpus[index]
        if gpu.lost:
            raise pynvml.NVMLError_GpuIsLost()
        self.handle_fetches += 1
        with self._lock:
            return self._handles.setdefault(gpu.uuid, _Handle(gpu.uuid))

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        # "When used with MIG device handles the API returns globally unique UUIDs" (nvml.h).
        mig = self._mig("nvmlDeviceGetUUID", handle)
        return mig.uuid if mig is not None else self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        # "When used with MIG device handles the API returns MIG device names" (nvml.h), e.g.
        # 'NVIDIA A100-SXM4-40GB MIG 1g.5gb' as CUDA and nvidia-smi show them.
        gpu = self._gpu("nvmlDeviceGetName", handle)
        mig = self._mig("nvmlDeviceGetName", handle)
        return gpu.name if mig is None else f"{gpu.name} MIG {mig.profile}"

    def nvmlDeviceGetPciInfo(self, handle: _Handle) -> Any:
        info = pynvml.nvmlPciInfo_t()
        info.busId = self._gpu("nvmlDeviceGetPciInfo", handle).bus_id.encode()
        return info

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> Any:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        mig = self._mig("nvmlDeviceGetMemoryInfo", handle)
        if mig is not None:  # "Per-instance information can be queried by using specific MIG device handles"
            return pynvml.c_nvmlMemory_t(total=mig.memory_total, free=mig.memory_total - mig.memory_used, used=mig.memory_used)
        if self._mig_enabled(gpu) and not self.privileged:
            # "In MIG mode, if device handle is provided, the API returns aggregate information,
            # only if the caller has appropriate privileges" (nvml.h, nvmlDeviceGetMemoryInfo).
            raise pynvml.NVMLError_NoPermission()
        return pynvml.c_nvmlMemory_t(total=gpu.memory_total, free=gpu.memory_total - gpu.memory_used, used=gpu.memory_used)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        if handle.mig_parent is not None or self._mig_enabled(gpu):
            # "On MIG-enabled GPUs, querying device utilization rates is not currently supported" (nvml.h).
            raise pynvml.NVMLError_NotSupported()
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization_gpu, memory=0)

    def nvmlDeviceGetCudaComputeCapability(self, handle: _Handle) -> tuple[int, int]:
        # pynvml returns (major, minor) as a tuple (pynvml.py, nvmlDeviceGetCudaComputeCapability).
        return self._gpu("nvmlDeviceGetCudaComputeCapability", handle).compute_capability

    def nvmlDeviceGetTemperatureV(self, handle: _Handle, sensor: int) -> int:
        return self._gpu("nvmlDeviceGetTemperatureV", handle).temperature_c

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return self._gpu("nvmlDeviceGetTemperature", handle).temperature_c

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        # pynvml returns [current, pending] (pynvml.py); NOT_SUPPORTED "If device doesn't
        # support MIG mode" (nvml.h), which a MIG device handle does not (it is a slice: our
        # reading of that rule, not a documented case).
        gpu = self._gpu("nvmlDeviceGetMigMode", handle)
        if gpu.mig_mode is None or handle.mig_parent is not None:
            raise pynvml.NVMLError_NotSupported()
        return list(gpu.mig_mode)

    # --- pynvml: MIG (read only) --------------------------------------------------------------
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        # "Returns zero if MIG is not supported or enabled." (nvml.h)
        gpu = self._gpu("nvmlDeviceGetMaxMigDeviceCount", handle)
        if handle.mig_parent is not None or not self._mig_enabled(gpu):
            return 0
        return gpu.max_mig_devices

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        # nvml.h: NOT_SUPPORTED "if this query is not supported by the device" (no MIG mode),
        # INVALID_ARGUMENT if "index ... [is] invalid", NOT_FOUND "if no valid MIG device was
        # found at index" (slots are sparse once an instance is destroyed).
        gpu = self._gpu("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if handle.mig_parent is not None or not self._mig_enabled(gpu):
            raise pynvml.NVMLError_NotSupported()
        if not 0 <= index < gpu.max_mig_devices:
            raise pynvml.NVMLError_InvalidArgument()
        mig = gpu.mig_devices.get(index)
        if mig is None:
            raise pynvml.NVMLError_NotFound()
        with self._lock:
            return self._handles.setdefault(mig.uuid, _Handle(mig.uuid, mig_parent=gpu.uuid))

    def nvmlDeviceIsMigDeviceHandle(self, handle: _Handle) -> bool:
        # "True when handle refers to a MIG device" (nvml.h); pynvml hands back a c_uint, whose truth is that flag.
        self._gpu("nvmlDeviceIsMigDeviceHandle", handle)
        return handle.mig_parent is not None

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: _Handle) -> _Handle:
        self._mig("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
        if handle.mig_parent is None:
            raise pynvml.NVMLError_InvalidArgument()  # "if migDevice ... is invalid" (nvml.h)
        with self._lock:
            return self._handles[handle.mig_parent]

    def nvmlDeviceGetGpuInstanceId(self, handle: _Handle) -> int:
        mig = self._mig("nvmlDeviceGetGpuInstanceId", handle)
        if mig is None:
            raise pynvml.NVMLError_InvalidArgument()  # "Target MIG device handle" only (nvml.h)
        return mig.gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, handle: _Handle) -> int:
        # "Compute instance IDs are unique per GPU instance" (nvml.h): 0 for a GI with one CI.
        mig = self._mig("nvmlDeviceGetComputeInstanceId", handle)
        if mig is None:
            raise pynvml.NVMLError_InvalidArgument()
        return mig.compute_instance_id

    # --- pynvml: events -----------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> _EventSet:
        self._check("nvmlEventSetCreate")
        es = _EventSet()
        with self._lock:
            self._sets.append(es)
        return es

    def nvmlDeviceGetSupportedEventTypes(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetSupportedEventTypes", handle).supported_events

    def nvmlDeviceRegisterEvents(self, handle: _Handle, mask: int, event_set: _EventSet) -> None:
        gpu = self._gpu("nvmlDeviceRegisterEvents", handle)
        if mask & ~gpu.supported_events:
            raise pynvml.NVMLError_NotSupported()
        with self.registered:
            event_set.masks[gpu.uuid] = event_set.masks.get(gpu.uuid, 0) | mask
            self.registered.notify_all()

    def nvmlEventSetWait(self, event_set: _EventSet, timeout_ms: int) -> _EventData:
        self._check("nvmlEventSetWait")
        try:
            # Blocks without the GIL-holding busy loop, as ctypes' call into NVML does.
            return event_set.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise pynvml.NVMLError_Timeout() from None

    def nvmlEventSetFree(self, event_set: _EventSet) -> None:
        with self.registered:
            event_set.freed = True
            self.registered.notify_all()
