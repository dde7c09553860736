"""What an unauthenticated peer can hold of the agent's TCP listeners (the webhook, /metrics).

Every connection costs a file descriptor, and the agent shares one descriptor limit (systemd's
default soft limit is 1,024) between these listeners, the socket API, Docker, GitLab and the
GPU libraries: a listener that takes every connection lets anyone who reaches its port stop the
whole agent. So each listener is guarded here:

- at most `max_connections` connections at once, and at most `max_per_address` from one client
  address; a connection over either cap gets a canned `503` and is closed at once, before its
  request is read (its descriptor is back within the same loop turn);
- `idle_timeout`: a connection must send its request headers, and a kept-alive one its next
  request, within this many seconds (aiohttp's keep-alive timer, armed at connect and not re-armed
  by trickled bytes);
- `max_lifetime`: whatever it does, a connection is closed after this many seconds (a peer that
  never reads its answer cannot hold its slot).

Refused connections are counted by the caller's `on_refused(reason)` (a metric) and logged at
most once per `log_interval` seconds per listener, with the count since the last line.

`install_accept_error_log` collapses asyncio's "socket.accept() out of system resource" reports
(EMFILE, ENFILE, ENOBUFS, ENOMEM) into one line per interval with a count: CPython 3.11's accept
loop reports every failed accept(), up to 100 a loop turn, each with a traceback.

The handler is plugged into aiohttp through agent/connection_server.py, as the socket API's is.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from pydantic import Field, PositiveFloat, PositiveInt

from .connection_server import HandlerRunner, context_of
from .model import Frozen
from .throttle import Throttle

__all__ = ["ConnectionGuard", "ConnectionLimits", "GuardedRunner", "client_address", "descriptor_shortfall", "install_accept_error_log"]

log = logging.getLogger("autogit.tcp")

REFUSAL_REASONS = ("connections", "per-address")
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ConnectionLimits(Frozen):
    max_connections: PositiveInt = Field(description="Most connections at once.")
    max_per_address: PositiveInt = Field(description="Most connections at once from one client address.")
    idle_timeout: PositiveFloat = Field(description="Seconds to send the request headers (and, kept alive, the next request).")
    max_lifetime: PositiveFloat = Field(60.0, description="Seconds after which any connection is closed.")


def client_address(peername: Any) -> str:
    """The client's address as a cap counts it: an IPv4-mapped IPv6 address is its IPv4
    address (one client, one count, whichever socket family accepted it), and an IPv6 address
    its /64, the least a site is given (RFC 6177): one holder of a /64 has 2^64 addresses."""
    host = peername[0] if isinstance(peername, tuple) and peername else str(peername or "?")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionGuard:
    """Counts a listener's open connections, in all and per client address."""

    def __init__(self, name: str, limits: ConnectionLimits, on_refused: Callable[[str], None] | None = None,
                 log_interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.name = name
        self.limits = limits
        self.open = 0
        self.per_address: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # by reason, since start
        self._on_refused = on_refused
        self._log_lines = Throttle(log_interval, clock)  # one line per log_interval, with the count

    def admit(self, address: str) -> str | None:
        """Take a slot for a new connection from `address`: None, or why it is refused."""
        if self.open >= self.limits.max_connections:
            reason = "connections"
        elif self.per_address[address] >= self.limits.max_per_address:
            reason = "per-address"
        else:
            self.open += 1
            self.per_address[address] += 1
            return None
        self.refused[reason] += 1
        if self._on_refused is not None:
            self._on_refused(reason)
        self._log_refusal(address, reason)
        return reason

    def release(self, address: str) -> None:
        self.open -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]

    def _log_refusal(self, address: str, reason: str) -> None:
        said = self._log_lines.due(self.name)
        if said is None:
            return
        cap = (f"{self.limits.max_connections} in all" if reason == "connections"
               else f"{self.limits.max_per_address} per address")  # fmt: skip
        log.warning("%s listener: refused %d connection(s) over its cap (%s) since the last line; latest from %s",
                    self.name, said.held_back + 1, cap, address[:64])  # fmt: skip


_REFUSED_BODY = b'{"error":{"type":"unavailable","message":"too many connections; retry shortly"}}'
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_REFUSED_BODY)).encode() + b"\r\n\r\n" + _REFUSED_BODY
)


class _GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol behind a ConnectionGuard: over a cap, the canned 503 and
    close, without aiohttp ever seeing the connection; admitted, a lifetime timer."""

    _guard_address: str | None = None
    _lifetime: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard: ConnectionGuard = context_of(self)
        address = client_address(transport.get_extra_info("peername"))
        if guard.admit(address) is not None:
            assert isinstance(transport, asyncio.Transport)
            transport.write(_REFUSED)  # a few bytes into the kernel's buffer: never waits
            transport.close()
            return
        self._guard_address = address
        self._lifetime = self._loop.call_later(guard.limits.max_lifetime, transport.abort)  # type: ignore[attr-defined]
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._guard_address is None:
            return  # refused in connection_made: aiohttp never knew it
        if self._lifetime is not None:
            self._lifetime.cancel()
        guard: ConnectionGuard | None = context_of(self)
        if guard is not None:
            guard.release(self._guard_address)
        self._guard_address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._guard_address is not None:
            super().data_received(data)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None) -> web.StreamResponse:
        """aiohttp logs every malformed request (bad bytes, over-long lines) with a traceback at
        ERROR: anyone could fill the journal. A client's error is a debug line; a 5xx (the
        application's middlewares catch the handlers' bugs first) one line without traceback."""
        guard: ConnectionGuard | None = context_of(self)
        name = guard.name if guard is not None else "tcp"
        what = " ".join(str(exc or message or status).split())[:200]
        if status >= 500:
            log.error("%s listener: error handling a request: %s", name, what)
        else:
            log.debug("%s listener: malformed request from %s: %s", name, getattr(request, "remote", "?"), what)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        text = "internal error (see the agent's log)" if status >= 500 else f"malformed or oversized HTTP request ({type(exc).__name__ if exc else status})"
        resp = web.json_response({"message": text}, status=status)
        resp.force_close()
        return resp


class GuardedRunner(HandlerRunner):
    """An AppRunner whose connections pass a ConnectionGuard; `keepalive_timeout` is the guard's
    idle_timeout (aiohttp arms it at connect: the header timeout too)."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, _GuardedHandler, guard, keepalive_timeout=guard.limits.idle_timeout, **kwargs)
        self.guard = guard


# Descriptors the agent needs besides its listeners' connections: Docker, GitLab, the GPU
# libraries, udev, journald, the event loop, Python itself.
OWN_DESCRIPTORS = 128


def descriptor_shortfall(caps: dict[str, int], soft_limit: int | None = None) -> str | None:
    """One line when the listeners' connection caps (`caps`: name → most connections) and the
    agent's own descriptors exceed the open-file soft limit (RLIMIT_NOFILE), else None."""
    import resource

    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY:
        return None
    needed = sum(caps.values()) + OWN_DESCRIPTORS
    if needed <= soft_limit:
        return None
    said = ", ".join(f"{name} {n}" for name, n in caps.items())
    return (f"the connection caps ({said}) plus about {OWN_DESCRIPTORS} descriptors of the agent's own exceed the open-file limit "
            f"{soft_limit}: a flood could run the agent out of descriptors; lower the caps or raise LimitNOFILE")


def install_accept_error_log(loop: asyncio.AbstractEventLoop, interval: float = 10.0,
                             on_error: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
    """Report failed accept() calls for want of descriptors or memory as one line per
    `interval` seconds, with their count, instead of one traceback each; every other report
    goes to the handler that was there before (or asyncio's default)."""
    previous = loop.get_exception_handler()
    counts: Counter[str] = Counter()
    logged_at: list[float | None] = [None]

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (str(context.get("message", "")).startswith("socket.accept()") and isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS):
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        if on_error is not None:
            on_error()
        where = "?"
        try:
            where = str(context["socket"].getsockname())
        except Exception:  # noqa: BLE001 - the name only decorates the line
            pass
        counts[f"{where}: {exc.strerror or exc}"] += 1
        now = clock()
        if logged_at[0] is not None and now - logged_at[0] < interval:
            return
        said = "; ".join(f"{what} ×{n}" for what, n in counts.most_common(4))
        log.error("accept() failed for want of resources (the open-file limit?) %d time(s) since the last line: %s; "
                  "the listener retries every second", sum(counts.values()), said)  # fmt: skip
        counts.clear()
        logged_at[0] = now

    loop.set_exception_handler(handler)
