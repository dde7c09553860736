"""sd_notify(3) and sd_listen_fds(3), implemented here in a few lines instead of the `sdnotify`
package: that one reads NOTIFY_SOCKET once at import-time construction, swallows every error,
has no watchdog helper and has not been released since 2017.

Protocol: one datagram of newline-separated KEY=VALUE lines to $NOTIFY_SOCKET, a filesystem path
('/...') or an abstract socket ('@...'). Without NOTIFY_SOCKET every call is a no-op, so the agent
runs the same under systemd, in a container and in tests.

Failure policy: a NOTIFY_SOCKET we cannot parse is a NotifyError at construction (loud at start);
a send that fails later is logged once (and once more on recovery) and reported as False, never
raised, because losing a STATUS= line must not take the agent down. The watchdog is the exception
that proves the rule: if pings cannot be delivered, systemd restarts us, which is what it is for.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from .digits import parse_uint

__all__ = ["NotifyError", "Notifier", "listen_fds", "LISTEN_FDS_START"]

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START


class NotifyError(ValueError):
    """NOTIFY_SOCKET holds an address this implementation cannot use."""


def _address(value: str) -> str | bytes:
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        # Abstract namespace: a leading NUL byte instead of '@', no trailing NUL.
        return b"\0" + value[1:].encode()
    raise NotifyError(f"NOTIFY_SOCKET={value!r} is neither an absolute path nor an abstract '@name' (vsock is not supported)")


class Notifier:
    """One service's channel to the service manager."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET")
        self._address = _address(raw) if raw else None
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        self._failing = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID, when set, names the process the watchdog is meant for (not a child of ours).
        mine = not pid or parse_uint(pid) == os.getpid()
        watchdog_usec = parse_uint(usec)
        self._watchdog_usec = watchdog_usec if watchdog_usec and mine else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of WatchdogSec (sd_watchdog_enabled(3)); None: no watchdog."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2_000_000

    def notify(self, *lines: str) -> bool:
        """Send KEY=VALUE lines as one datagram; True when sent, False when off or failed."""
        if self._address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # MSG_DONTWAIT: a full receive queue on the manager's side must never block the loop.
            self._sock.sendto(payload, socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify to %s failed: %s", self._address, exc.strerror or exc)
                self._failing = True
            return False
        if self._failing:
            log.info("sd_notify delivers again")
            self._failing = False
        return True

    def ready(self) -> bool:
        return self.notify("READY=1", f"MAINPID={os.getpid()}")

    def status(self, line: str) -> bool:
        """STATUS= shown by `systemctl status`; one line, sent only when it changed."""
        line = " ".join(line.split())  # one line, whatever the caller passed
        if line == self._last_status:
            return False
        sent = self.notify(f"STATUS={line}")
        if sent:
            self._last_status = line
        return sent

    def watchdog(self) -> bool:
        """Ping the watchdog; does nothing unless the manager asked for pings (WATCHDOG_USEC)."""
        if self._watchdog_usec is None:
            return False
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """Before re-reading the config; follow with ready() once done (the 'notify-reload' protocol)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def listen_fds(environ: Mapping[str, str] | None = None, unset: bool = True) -> list[socket.socket]:
    """Sockets passed by socket activation (LISTEN_FDS/LISTEN_PID), as socket objects; [] if none.

    `unset` removes the variables from os.environ so a child process never mistakes them for
    its own (sd_listen_fds' unset_environment)."""
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    fds = parse_uint(count, max_digits=6)
    if parse_uint(pid) != os.getpid() or fds is None:
        return []
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + fds):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    if unset and environ is None:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    return sockets
