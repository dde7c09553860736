"""NVIDIA GPUs through NVML (the `pynvml` module of nvidia-ml-py).

Shape taken from nvitop's libnvml: one choke point (`_query`) calls NVML, turns "not
supported" into None and logs any other failure once per function, so no caller catches NVML
errors itself. Unlike nvitop, "GPU is lost" is not swallowed: it makes that GPU unhealthy.

Costs that shaped it: NVML is initialised once and kept for the agent's life (without
persistence mode the driver tears a GPU down when its last client leaves, and bringing it back
costs seconds per GPU); handles and static facts (name, UUID, bus id, total memory) are fetched
once per enumeration, not per read. Re-enumeration happens only on `rescan()`, which the
hotplug watcher calls when an NVIDIA PCI device is added, removed, bound or unbound.

MIG (read only: the agent never changes MIG mode or the layout). A GPU in MIG mode is listed
with `mig_mode` set, and each of its MIG instances as a GPU of its own: id = its 'MIG-…' UUID,
its own memory, its profile ('1g.10gb', from the MIG device's name), the parent's compute
capability and PCI address (so a health verdict on the parent covers its instances). Creating
or destroying instances sends no uevent, so the layout is read again on every observe (the
readings interval); instances that appear or vanish show as GPUs added or removed. A layout
that cannot be read keeps the instances last seen, unhealthy: unknown is not absent.

The NVML module is a constructor argument so tests replace exactly the pynvml boundary.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...model import Gpu, GpuVendor
from ...state import GpuReading
from .base import GpuSnapshot, normalise_bus_id

__all__ = [
    "APPLICATION_XIDS",
    "NvidiaBackend",
    "NvmlHealthThread",
    "cuda_version_string",
    "mig_profile",
]

log = logging.getLogger(__name__)

_MIB = 1 << 20
LOST = "GPU has fallen off the bus (NVML: GPU is lost)"

# Xids caused by the application, not the GPU (NVIDIA k8s-device-plugin, internal/rm/health.go):
# 13 graphics engine exception, 31 MMU fault, 43 GPU stopped processing, 45 preemptive cleanup,
# 68 NVDEC0 exception, 109 context switch timeout. A user's buggy kernel must not drain a GPU.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})


class _GpuLost(Exception):
    pass


class _Unreadable(Exception):
    """An NVML call failed for a reason other than "not supported" or "GPU lost" (logged once)."""


@dataclass(frozen=True, slots=True)
class _MigInstance:
    uuid: str
    name: str | None
    memory_total: int  # bytes
    memory_used: int | None  # bytes


def mig_profile(name: str | None) -> str | None:
    """'NVIDIA A100-SXM4-40GB MIG 1g.5gb' → '1g.5gb': NVML names a MIG device by its profile
    ("When used with MIG device handles the API returns MIG device names which can be used to
    identify devices based on their attributes", nvml.h, nvmlDeviceGetName)."""
    if not name or "MIG " not in name:
        return None
    profile = name.rsplit("MIG ", 1)[1].strip()
    return profile if profile and " " not in profile else None


@dataclass(slots=True)
class _Device:
    index: int
    handle: Any
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    memory_total: int | None = None  # bytes
    compute_capability: str | None = None  # 'major.minor'
    lost: str | None = None
    mig_enabled: bool | None = None  # last known current MIG mode; None: unsupported or never read
    mig_instances: list[_MigInstance] = field(default_factory=list)  # as last read

    @property
    def id(self) -> str:
        # Without a UUID (lost before we could read it) the index is all there is.
        return self.uuid or self.pci_bus_id or f"nvidia-index-{self.index}"


def cuda_version_string(version: int | None) -> str | None:
    """NVML's 13000 → '13.0', 12040 → '12.4' (CUDA_VERSION encoding: 1000*major + 10*minor)."""
    if not version:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class NvidiaBackend:
    vendor = GpuVendor.NVIDIA

    def __init__(self, nvml: Any | None = None) -> None:
        self._given = nvml
        self._nv: Any = None  # the pynvml module (or a double), once loaded
        self._lock = threading.RLock()
        self._ready = False
        self._rescan = False
        self._devices: list[_Device] = []
        self._temperature_v = True  # nvmlDeviceGetTemperatureV until the driver lacks it
        self._logged: set[tuple[str, str]] = set()
        self._problem: str | None = None
        self.absent: str | None = None  # why there are no NVIDIA GPUs (no library, no driver)
        self.generation = 0  # bumped on every (re-)enumeration; the health thread re-registers
        self._owner: threading.Thread | None = None  # the health thread, while one runs
        self.driver_version: str | None = None
        self.cuda_version: str | None = None

    # --- the NVML boundary ------------------------------------------------------------------
    @property
    def lib(self) -> Any | None:
        if self._nv is None:
            if self._given is not None:
                self._nv = self._given
            else:
                try:
                    import pynvml  # nvidia-ml-py; optional at run time
                except ImportError:
                    return None
                self._nv = pynvml
        return self._nv

    @property
    def problem(self) -> str | None:
        return self._problem

    def _errors(self, nv: Any) -> tuple[type[BaseException], ...]:
        # NVMLLibraryMismatchError (an old driver lacks a _v3 symbol) is NOT an NVMLError.
        mismatch = getattr(nv, "NVMLLibraryMismatchError", None)
        return (nv.NVMLError,) + ((mismatch,) if isinstance(mismatch, type) else ())

    def _log_once(self, func: str, exc: BaseException) -> None:
        key = (func, type(exc).__name__)
        if key not in self._logged:
            self._logged.add(key)
            log.warning("NVML %s failed: %s (reported as unknown from now on)", func, exc)

    def _call(self, func: str, *args: Any) -> Any | None:
        """Call one NVML function: None when unsupported, _GpuLost when lost, _Unreadable
        (logged once) on any other failure, for callers that must tell unknown from absent."""
        nv = self._nv
        fn = getattr(nv, func, None)
        if fn is None:  # an older nvidia-ml-py without this binding
            exc = AttributeError(f"pynvml has no {func}")
            self._log_once(func, exc)
            raise _Unreadable(str(exc))
        try:
            return fn(*args)
        except nv.NVMLError_GpuIsLost as exc:
            raise _GpuLost(func) from exc
        except nv.NVMLError_NotSupported:
            return None
        except self._errors(nv) as exc:
            self._log_once(func, exc)
            raise _Unreadable(f"{func}: {exc}") from exc

    def _query(self, func: str, *args: Any) -> Any | None:
        """Call one NVML function: None when unsupported or failing, _GpuLost when lost."""
        try:
            return self._call(func, *args)
        except _Unreadable:
            return None

    # --- lifecycle --------------------------------------------------------------------------
    def _start(self) -> bool:
        """Initialise NVML and enumerate, once (again after rescan()). Caller holds the lock."""
        if self._ready and not self._rescan:
            return True
        if self._ready and self._owner not in (None, threading.current_thread()):
            # The health thread may be blocked in nvmlEventSetWait on the current session;
            # it re-initialises between waits, so serve the old enumeration until then.
            return True
        nv = self.lib
        if nv is None:
            self.absent, self._problem = "nvidia-ml-py (pynvml) is not installed", None
            return False
        if self._ready:  # a rescan: re-initialise so NVML sees GPUs added or removed since
            self._shutdown(nv)
        self._rescan = False
        try:
            if hasattr(nv, "nvmlInitWithFlags"):
                # NO_GPUS: a driver with zero GPUs is "no GPUs", not an error.
                nv.nvmlInitWithFlags(nv.NVML_INIT_FLAG_NO_GPUS)
            else:
                nv.nvmlInit()
        except (nv.NVMLError_LibraryNotFound, nv.NVMLError_DriverNotLoaded) as exc:
            self.absent, self._problem = str(exc), None
            return False
        except self._errors(nv) + (OSError,) as exc:
            # e.g. LibRmVersionMismatch: driver upgraded, kernel module not reloaded.
            self.absent, self._problem = None, f"NVML initialisation failed: {exc}"
            return False
        self._ready, self.absent, self._problem = True, None, None
        self.driver_version = _text(self._query("nvmlSystemGetDriverVersion"))
        self.cuda_version = cuda_version_string(self._query("nvmlSystemGetCudaDriverVersion"))
        self._devices = self._enumerate(nv)
        self.generation += 1
        return True

    def _enumerate(self, nv: Any) -> list[_Device]:
        devices = []
        for index in range(self._query("nvmlDeviceGetCount") or 0):
            device = _Device(index, handle=None)
            try:
                device.handle = h = self._query("nvmlDeviceGetHandleByIndex", index)
                if h is None:
                    continue
                device.uuid = _text(self._query("nvmlDeviceGetUUID", h))
                device.name = _text(self._query("nvmlDeviceGetName", h))
                pci = self._query("nvmlDeviceGetPciInfo", h)
                if pci is not None and (bus := _text(pci.busId)):
                    device.pci_bus_id = normalise_bus_id(bus)
                memory = self._query("nvmlDeviceGetMemoryInfo", h)
                device.memory_total = None if memory is None else int(memory.total)
                capability = self._query("nvmlDeviceGetCudaComputeCapability", h)
                if capability is not None:
                    device.compute_capability = f"{int(capability[0])}.{int(capability[1])}"
            except _GpuLost:
                device.lost = LOST
            devices.append(device)
        return devices

    def _shutdown(self, nv: Any) -> None:
        try:
            nv.nvmlShutdown()
        except self._errors(nv):
            pass
        self._ready = False
        self._devices = []

    def rescan(self) -> None:
        """Re-enumerate on the next read (an NVIDIA PCI device came, went, or changed driver).
        Called on the event loop: it only sets a flag (atomic under the GIL) and never takes the
        lock, which a read blocked in NVML may hold for a long time."""
        self._rescan = True

    @property
    def rescan_pending(self) -> bool:
        return self._rescan

    def close(self, timeout: float = 1.0) -> None:
        """Shut NVML down, unless a read blocked in it holds the lock past `timeout` (a GPU
        fallen off the bus): then the session is left to the process's exit, never waited on."""
        if not self._lock.acquire(timeout=timeout):
            log.warning("NVML busy (a read is blocked): not shut down")
            return
        try:
            if self._ready and self._nv is not None:
                self._shutdown(self._nv)
        finally:
            self._lock.release()

    def devices(self) -> tuple[int, list[tuple[str, str | None, Any]]]:
        """(generation, [(gpu id, pci bus id, handle)]) of the GPUs not lost: for the health thread."""
        with self._lock:
            if not self._start():
                return self.generation, []
            live = [(d.id, d.pci_bus_id, d.handle) for d in self._devices if d.lost is None]
            return self.generation, live

    # --- reading ------------------------------------------------------------------------------
    def observe(self) -> list[GpuSnapshot]:
        with self._lock:
            if not self._start():
                return []
            snapshots = []
            for d in self._devices:
                parent = self._snapshot(d)
                instances = self._mig_snapshots(d, parent)
                if d.lost is not None and parent.gpu.healthy:  # lost while its layout was read
                    parent = self._snapshot(d)
                snapshots.append(parent)
                snapshots.extend(instances)
            return snapshots

    def _temperature(self, handle: Any) -> float | None:
        nv = self._nv
        if self._temperature_v and hasattr(nv, "nvmlDeviceGetTemperatureV"):
            try:
                return float(nv.nvmlDeviceGetTemperatureV(handle, nv.NVML_TEMPERATURE_GPU))
            except nv.NVMLError_FunctionNotFound:
                self._temperature_v = False  # driver older than the V call: use the old one
            except nv.NVMLError_GpuIsLost as exc:
                raise _GpuLost("nvmlDeviceGetTemperatureV") from exc
            except nv.NVMLError_NotSupported:
                return None
            except self._errors(nv) as exc:
                self._log_once("nvmlDeviceGetTemperatureV", exc)
                return None
        # Deprecated ("removed in CUDA 14.0") but the only call older drivers have.
        value = self._query("nvmlDeviceGetTemperature", handle, nv.NVML_TEMPERATURE_GPU)
        return None if value is None else float(value)

    def _snapshot(self, d: _Device) -> GpuSnapshot:
        reading = GpuReading()
        mig: bool | None = None
        if d.lost is None:
            try:
                h = d.handle
                memory = self._query("nvmlDeviceGetMemoryInfo", h)
                util = self._query("nvmlDeviceGetUtilizationRates", h)
                temperature = self._temperature(h)
                milliwatts = self._query("nvmlDeviceGetPowerUsage", h)
                try:
                    modes = self._call("nvmlDeviceGetMigMode", h)
                    d.mig_enabled = None if modes is None else modes[0] == self._nv.NVML_DEVICE_MIG_ENABLE
                    mig = d.mig_enabled
                except _Unreadable:
                    mig = None  # unknown this time: d.mig_enabled keeps what was last seen
                reading = GpuReading(
                    utilization_pct=None if util is None else float(util.gpu),
                    memory_used_mb=None if memory is None else int(memory.used) // _MIB,
                    temperature_c=temperature,
                    power_w=None if milliwatts is None else milliwatts / 1000,
                )
            except _GpuLost:
                # A lost GPU does not come back without a reset, which re-adds the device.
                d.lost = LOST
        gpu = Gpu(
            id=d.id,
            vendor=GpuVendor.NVIDIA,
            model=d.name or "NVIDIA GPU (unknown)",
            memory_mb=(d.memory_total or 0) // _MIB,
            healthy=d.lost is None,
            pci_bus_id=d.pci_bus_id,
            driver_version=self.driver_version,
            compute_capability=d.compute_capability,
            mig_mode=bool(d.mig_enabled),
        )
        return GpuSnapshot(
            gpu=gpu,
            reading=reading,
            uuid=d.uuid,
            pci_bus_id=d.pci_bus_id,
            mig_mode=mig,
            driver="nvidia",
            driver_version=self.driver_version,
            cuda_version=self.cuda_version,
            health_reason=d.lost,
        )

    # --- MIG ----------------------------------------------------------------------------------
    def _mig_snapshots(self, d: _Device, parent: GpuSnapshot) -> list[GpuSnapshot]:
        """The MIG instances of one GPU, read again now (see the module docstring)."""
        problem: str | None = None
        if d.lost is not None:
            problem = d.lost
        elif parent.mig_mode is None and d.mig_enabled:
            problem = "MIG mode unreadable (NVML error); instances as last seen"
        elif not d.mig_enabled:
            d.mig_instances = []  # MIG off (or unsupported), as NVML says: no instances
            return []
        else:
            try:
                d.mig_instances = self._read_mig_layout(d)
            except _GpuLost:
                d.lost = problem = LOST
            except _Unreadable as exc:
                problem = f"MIG layout unreadable ({exc}); instances as last seen"
        return [self._mig_snapshot(d, instance, problem) for instance in d.mig_instances]

    def _read_mig_layout(self, d: _Device) -> list[_MigInstance]:
        """Every MIG device of a parent in MIG mode. Slots are indexed 0..max-1 and need not be
        dense: an empty slot answers NVML_ERROR_NOT_FOUND (nvml.h, nvmlDeviceGetMigDeviceHandleByIndex)."""
        nv = self._nv
        known = {i.uuid: i.name for i in d.mig_instances}  # UUIDs are immutable for a MIG device's life
        instances = []
        for index in range(self._call("nvmlDeviceGetMaxMigDeviceCount", d.handle) or 0):
            try:
                handle = nv.nvmlDeviceGetMigDeviceHandleByIndex(d.handle, index)
            except nv.NVMLError_NotFound:
                continue
            except nv.NVMLError_GpuIsLost as exc:
                raise _GpuLost("nvmlDeviceGetMigDeviceHandleByIndex") from exc
            except self._errors(nv) as exc:
                self._log_once("nvmlDeviceGetMigDeviceHandleByIndex", exc)
                raise _Unreadable(f"nvmlDeviceGetMigDeviceHandleByIndex: {exc}") from exc
            # Handles may be reused for another instance (nvml.h): identify each one by UUID.
            uuid = _text(self._call("nvmlDeviceGetUUID", handle))
            memory = self._call("nvmlDeviceGetMemoryInfo", handle)
            if uuid is None or memory is None:
                raise _Unreadable(f"MIG device {index}: no UUID or memory size")
            name = known[uuid] if uuid in known else _text(self._query("nvmlDeviceGetName", handle))
            instances.append(_MigInstance(uuid, name, int(memory.total), int(memory.used)))
        return instances

    def _mig_snapshot(self, d: _Device, instance: _MigInstance, problem: str | None) -> GpuSnapshot:
        profile = mig_profile(instance.name)
        parent_name = d.name or "NVIDIA GPU (unknown)"
        model = instance.name if profile else f"{parent_name} MIG instance"
        gpu = Gpu(
            id=instance.uuid,
            vendor=GpuVendor.NVIDIA,
            model=model,
            memory_mb=instance.memory_total // _MIB,
            healthy=problem is None,
            pci_bus_id=d.pci_bus_id,
            driver_version=self.driver_version,
            compute_capability=d.compute_capability,  # the parent's silicon
            mig_parent=d.id,
            mig_profile=profile,
        )
        # NVML has no utilisation for MIG devices ("On MIG-enabled GPUs, querying device
        # utilization rates is not currently supported", nvml.h); temperature and power are the
        # whole board's. Only the slice's memory use is its own.
        used = None if problem is not None or instance.memory_used is None else instance.memory_used // _MIB
        return GpuSnapshot(
            gpu=gpu,
            reading=GpuReading(memory_used_mb=used),
            uuid=instance.uuid,
            pci_bus_id=d.pci_bus_id,
            driver="nvidia",
            driver_version=self.driver_version,
            cuda_version=self.cuda_version,
            health_reason=problem,
        )


# What the health thread listens for (NVML nvmlEventType*): critical Xids and ECC errors.
_XID = 0x8
_DOUBLE_BIT_ECC = 0x2
_SINGLE_BIT_ECC = 0x1
HEALTH_EVENTS = _XID | _DOUBLE_BIT_ECC | _SINGLE_BIT_ECC

# report(gpu id, pci bus id, reason): called from the health thread; must be thread-safe.
HealthReport = Callable[[str, str | None, str], None]


class NvmlHealthThread:
    """Waits on one NVML event set in one thread, as NVIDIA's k8s device plugin does.

    nvmlEventSetWait has no file descriptor to hand to asyncio, but ctypes releases the GIL
    while it blocks, so one thread waiting with a timeout costs nothing. The timeout only
    bounds how long stop() and re-registration (after a rescan) take.

    Verdicts: a critical Xid outside APPLICATION_XIDS, or a double-bit (uncorrectable) ECC
    error → unhealthy. Single-bit ECC errors were corrected by the hardware: ignored. An event
    whose device cannot be named, or a wait that fails other than by timing out (e.g. GPU is
    lost), makes every registered GPU unhealthy, since we cannot tell which one it was.
    """

    def __init__(self, backend: NvidiaBackend, report: HealthReport, wait_ms: int = 5000) -> None:
        self._backend = backend
        self._report = report
        self._wait_ms = wait_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.registered: list[str] = []  # GPU ids currently watched (for status and tests)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nvml-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._wait_ms / 1000 + 2)
            self._thread = None

    def _run(self) -> None:
        nv = self._backend.lib
        if nv is None:
            return
        event_set, generation = None, None
        watched: dict[Any, Any] = {}
        self._backend._owner = threading.current_thread()
        try:
            while not self._stop.is_set():
                if self._backend.rescan_pending and event_set is not None:
                    # Free the set before NVML is re-initialised under it.
                    self._free(nv, event_set)
                    event_set, generation = None, None
                current, devices = self._backend.devices()
                if current != generation:
                    if event_set is not None:
                        self._free(nv, event_set)
                    event_set, watched = self._register(nv, devices)
                    generation = current
                if event_set is None or not watched:
                    self._stop.wait(self._wait_ms / 1000)
                    continue
                try:
                    data = nv.nvmlEventSetWait(event_set, self._wait_ms)
                except nv.NVMLError_Timeout:
                    continue
                except nv.NVMLError as exc:
                    for gpu_id, bus in watched.values():
                        self._report(gpu_id, bus, f"NVML event wait failed: {exc}")
                    self._stop.wait(self._wait_ms / 1000)  # do not spin on a broken set
                    continue
                self._handle(nv, data, watched)
        finally:
            self._backend._owner = None
            if event_set is not None:
                self._free(nv, event_set)

    def _register(self, nv: Any, devices: list[tuple[str, str | None, Any]]) -> tuple[Any, dict[str, tuple[str, str | None]]]:
        try:
            event_set = nv.nvmlEventSetCreate()
        except nv.NVMLError as exc:
            log.warning("NVML event set unavailable, no GPU health events: %s", exc)
            return None, {}
        watched: dict[str, tuple[str, str | None]] = {}
        for gpu_id, bus, handle in devices:
            try:
                mask = HEALTH_EVENTS & nv.nvmlDeviceGetSupportedEventTypes(handle)
                if mask:
                    nv.nvmlDeviceRegisterEvents(handle, mask, event_set)
                    watched[gpu_id] = (gpu_id, bus)
            except nv.NVMLError_GpuIsLost:
                self._report(gpu_id, bus, LOST)
            except nv.NVMLError as exc:  # NotSupported on some boards: no health events there
                log.info("GPU %s: no NVML health events (%s)", gpu_id, exc)
        self.registered = sorted(watched)
        return event_set, watched

    def _free(self, nv: Any, event_set: Any) -> None:
        try:
            nv.nvmlEventSetFree(event_set)
        except nv.NVMLError:
            pass

    def _handle(self, nv: Any, data: Any, watched: dict[str, tuple[str, str | None]]) -> None:
        kind = int(data.eventType)
        if kind & _XID:
            xid = int(data.eventData)
            if xid in APPLICATION_XIDS:
                log.info("ignoring application Xid %d", xid)
                return
            reason = f"critical Xid {xid}"
        elif kind & _DOUBLE_BIT_ECC:
            reason = "double-bit (uncorrectable) ECC error"
        else:
            return
        try:
            gpu_id = _text(nv.nvmlDeviceGetUUID(data.device))
        except nv.NVMLError:
            gpu_id = None
        if gpu_id is None or gpu_id not in watched:
            for wid, bus in watched.values():
                self._report(wid, bus, f"{reason} on an unidentified GPU")
            return
        self._report(gpu_id, watched[gpu_id][1], reason)
