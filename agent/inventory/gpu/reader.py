"""Inventory reads with a deadline, off the caller's thread.

A GPU that fell off the bus can make NVML calls (and, more rarely, sysfs reads of its PCI
attributes) block for minutes or for good. The agent's event loop serves the socket, the event
stream and the reconciler, so it must never wait on one: each backend is read in a daemon thread
of its own and the caller waits at most `timeout` seconds.

A read that misses its deadline makes that backend's GPUs *unknown*, not absent: they are kept as
last seen, with no readings, unhealthy (no new job lands on a card that does not answer; busy
runners are never torn down for it), and with a health reason that says why. While the read is
still blocked no second thread is started for the same backend (a storm of stuck threads would
be worse than one); the next read after it returns is a normal one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass

from ...state import GpuReading
from .base import GpuBackend, GpuSnapshot

__all__ = ["BoundedReader", "HungRead"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HungRead:
    """A read still blocked past its deadline: which vendor, since when (monotonic seconds)."""

    vendor: str
    since: float

    def describe(self, now: float) -> str:
        return f"{self.vendor} GPU read blocked for {now - self.since:.0f} s (a GPU fallen off the bus?): readings unknown"


class BoundedReader:
    """Reads one backend in a daemon thread and waits for it at most a given time.

    `clock` is injected (monotonic seconds) so that tests and the daemon agree on "since".
    """

    def __init__(self, backend: GpuBackend, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self._clock = clock
        self._inflight: Future[list[GpuSnapshot]] | None = None
        self._started: float = 0.0
        self.last: list[GpuSnapshot] = []  # the last read that finished: what "unknown" keeps

    def submit(self) -> Future[list[GpuSnapshot]]:
        """The read in flight, or a new one (never two at once for one backend)."""
        if self._inflight is not None and not self._inflight.done():
            return self._inflight
        future: Future[list[GpuSnapshot]] = Future()
        future.set_running_or_notify_cancel()

        def run() -> None:
            try:
                future.set_result(self.backend.observe())
            except BaseException as exc:  # a backend must not raise; if it does, the read failed
                future.set_exception(exc)

        self._inflight, self._started = future, self._clock()
        # daemon: a thread stuck in the driver must not keep the process from exiting.
        threading.Thread(target=run, name=f"gpu-read-{self.backend.vendor.value}", daemon=True).start()
        return future

    def collect(self, future: Future[list[GpuSnapshot]]) -> tuple[list[GpuSnapshot], HungRead | None]:
        """The backend's snapshots once the wait is over: fresh if the read finished, else the
        last ones made unknown (and the hung read, to report)."""
        if future.done():
            exc = future.exception()
            if exc is None:
                self.last = future.result()
                return self.last, None
            log.warning("%s GPU read failed: %s", self.backend.vendor.value, exc)
            reason = f"{self.backend.vendor.value} GPU read failed ({type(exc).__name__}): readings unknown"
            return [_unknown(s, reason) for s in self.last], None
        hung = HungRead(self.backend.vendor.value, self._started)
        reason = hung.describe(self._clock())
        return [_unknown(s, reason) for s in self.last], hung


def _unknown(snapshot: GpuSnapshot, reason: str) -> GpuSnapshot:
    gpu = snapshot.gpu.model_copy(update={"healthy": False})
    return snapshot.model_copy(update={"gpu": gpu, "reading": GpuReading(), "health_reason": reason})


def read_all(readers: list[BoundedReader], timeout: float) -> tuple[list[GpuSnapshot], list[HungRead]]:
    """Start (or join) every backend's read, wait for all of them at most `timeout` seconds."""
    futures = [r.submit() for r in readers]
    wait_futures(futures, timeout=timeout)
    snapshots: list[GpuSnapshot] = []
    hung: list[HungRead] = []
    for reader, future in zip(readers, futures, strict=True):
        snaps, stuck = reader.collect(future)
        snapshots.extend(snaps)
        if stuck is not None:
            hung.append(stuck)
    return snapshots, hung
