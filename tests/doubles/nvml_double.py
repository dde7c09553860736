"""NvmlDouble: a test double of the `pynvml` module (nvidia-ml-py), and nothing more.

It stands in for NVML at the exact boundary the NVIDIA backend crosses: the same function
names and signatures, pynvml's own result structures (nvmlPciInfo_t, c_nvmlMemory_t,
c_nvmlUtilization_t) and pynvml's own exception classes (NVMLError_GpuIsLost, …), which it
looks up on the real module, so `except pynvml.NVMLError_…` in the backend behaves as it would
against a driver. Constants come from the real module too; functions it does not implement
raise AttributeError rather than silently reaching the real library.

Default values are what an H100 SXM reports (nvidia-smi / NVML on driver 580.159.04):
'NVIDIA H100 80GB HBM3', 85520809984 bytes (81559 MiB), CUDA 13000 → '13.0',
bus id '00000000:01:00.0' (NVML's 8-digit upper-case domain).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import pynvml

__all__ = ["DoubleGpu", "NvmlDouble", "h100", "rtx4090"]

_ALL_HEALTH_EVENTS = (
    pynvml.nvmlEventTypeSingleBitEccError
    | pynvml.nvmlEventTypeDoubleBitEccError
    | pynvml.nvmlEventTypePState
    | pynvml.nvmlEventTypeXidCriticalError
    | pynvml.nvmlEventTypeClock
)


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
    supported_events: int = _ALL_HEALTH_EVENTS
    not_supported: frozenset[str] = frozenset()  # functions answering NVML_ERROR_NOT_SUPPORTED
    lost: bool = False  # every call on it raises NVMLError_GpuIsLost


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
        supported_events=pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypePState,
    )
    values.update(changes)
    return DoubleGpu(**values)


@dataclass(eq=False)
class _Handle:
    uuid: str


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
    ) -> None:
        self.gpus = list(gpus) if gpus is not None else [h100()]
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.init_error = init_error  # e.g. NVMLError_LibraryNotFound: no libnvidia-ml.so.1
        self.missing_functions = missing_functions  # symbols an older driver lacks
        self.refcount = 0
        self.init_count = 0
        self.handle_fetches = 0
        self._handles: dict[str, _Handle] = {}
        self._sets: list[_EventSet] = []
        self._lock = threading.Lock()
        self.registered = threading.Condition(self._lock)

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
        gpu = next((g for g in self.gpus if g.uuid == handle.uuid), None)
        if gpu is None or gpu.lost:  # unplugged or fallen off the bus
            raise pynvml.NVMLError_GpuIsLost()
        if func in gpu.not_supported:
            raise pynvml.NVMLError_NotSupported()
        return gpu

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
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetPciInfo(self, handle: _Handle) -> Any:
        info = pynvml.nvmlPciInfo_t()
        info.busId = self._gpu("nvmlDeviceGetPciInfo", handle).bus_id.encode()
        return info

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> Any:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        return pynvml.c_nvmlMemory_t(total=gpu.memory_total, free=gpu.memory_total - gpu.memory_used, used=gpu.memory_used)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization_gpu, memory=0)

    def nvmlDeviceGetTemperatureV(self, handle: _Handle, sensor: int) -> int:
        return self._gpu("nvmlDeviceGetTemperatureV", handle).temperature_c

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return self._gpu("nvmlDeviceGetTemperature", handle).temperature_c

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        gpu = self._gpu("nvmlDeviceGetMigMode", handle)
        if gpu.mig_mode is None:
            raise pynvml.NVMLError_NotSupported()
        return list(gpu.mig_mode)

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
