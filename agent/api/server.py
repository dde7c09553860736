"""The agent's HTTP/JSON API on a unix socket (aiohttp).

It only reads AgentState and calls its action methods; it never calls the reconciler, so a slow
or hostile client can never slow a reconcile pass. Guards, outermost first:

- socket file 0660, group `api.group` (the kernel's gate), then the peer's credentials
  (SO_PEERCRED, SO_PEERGROUPS), read once when the connection opens;
- connection slots (admission.py): a peer without access never holds one (403, closed); each uid
  holds at most `api.max_connections_per_uid`; readers share `api.max_connections` and admins
  may use `api.admin_reserved_connections` more. A refused connection gets a 403/503 JSON answer
  within `refusal_timeout` and is closed, or is closed at once when many refusals are pending;
- request line / header sizes (aiohttp's max_line_size / max_field_size / max_headers);
- slowloris: aiohttp arms its keep-alive timer when a connection opens and data does not
  re-arm it, so a client that trickles headers is closed after `keepalive_timeout`; bodies are
  read under `body_timeout`;
- bodies over `api.max_body_bytes` are a 413; action bodies are strict pydantic (extra=forbid);
- event streams write under `write_timeout`: a client that stops reading is cut off, and the
  bus drops a subscriber that falls behind (it gets a `stream.dropped` line).

Every error, including aiohttp's own protocol errors, is one line of JSON
{"error": {"type", "message"}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from pydantic import ValidationError

from ..config import ApiConfig
from ..connection_server import HandlerRunner, context_of
from ..digits import parse_uint
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..metrics import AgentMetrics
from ..state import AgentState, reload_summary
from ..systemd import listen_fds
from ..throttle import Throttle
from . import views
from .admission import Admission, ConnectionSlots, Verdict
from .auth import Access, Peer, access_for, peer_of
from .openapi import ROUTES, openapi_document
from .schema import ActionRequest, ActionResponse, ErrorBody, ErrorResponse, ErrorType, QueueTime

__all__ = ["ApiServer", "bind_unix_socket"]

log = logging.getLogger(__name__)

_JSON = "application/json"
_STATUS_TYPES = {
    400: ErrorType.BAD_REQUEST,
    403: ErrorType.FORBIDDEN,
    404: ErrorType.NOT_FOUND,
    405: ErrorType.METHOD_NOT_ALLOWED,
    408: ErrorType.TIMEOUT,
    409: ErrorType.CONFLICT,
    413: ErrorType.PAYLOAD_TOO_LARGE,
    415: ErrorType.UNSUPPORTED_MEDIA_TYPE,
    431: ErrorType.HEADERS_TOO_LARGE,
    503: ErrorType.UNAVAILABLE,
}
_PEER = web.RequestKey("peer", Peer)
_ACCESS = web.RequestKey("access", Access)
_REFUSAL_EVENT_INTERVAL = 10.0  # seconds between 'api.refused' events per uid (bounded history)


def error_response(status: int, message: str, type_: ErrorType | None = None, headers: dict[str, str] | None = None) -> web.Response:
    kind = type_ or _STATUS_TYPES.get(status, ErrorType.INTERNAL if status >= 500 else ErrorType.BAD_REQUEST)
    # One line: messages can quote client input, which must not be able to break the line.
    body = ErrorResponse(error=ErrorBody(type=kind, message=" ".join(message.split())[:500]))
    return web.Response(status=status, body=body.model_dump_json().encode(), content_type=_JSON, headers=headers)


def _model_response(model: Any) -> web.Response:
    return web.Response(body=model.model_dump_json().encode(), content_type=_JSON)


# --- aiohttp plumbing: a handler class with JSON protocol errors and a connection cap ---------


class _AgentHandler(RequestHandler):
    """aiohttp's per-connection protocol, plus: the peer's credentials and its slot, judged once
    when the connection opens (before any byte is read), and JSON for protocol-level errors."""

    admission: Admission | None = None
    peer: Peer | None = None
    access: Access = Access.NONE
    _refusal_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        gate: ApiServer | None = context_of(self)
        if gate is None:
            return  # no gate: the _guard middleware refuses every request
        self.peer, self.access, self.admission = gate.admit_connection(transport)
        if self.admission.verdict is Verdict.ADMITTED:
            return
        if not self.admission.polite:
            self.force_close()  # too many refusals pending: no answer, no file descriptor held
            return
        # Refused politely: the answer goes out with the first request, which must come soon.
        self._refusal_deadline = self._loop.call_later(gate.refusal_timeout, self.force_close)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refusal_deadline is not None:
            self._refusal_deadline.cancel()
        gate: ApiServer | None = context_of(self)
        if self.admission is not None and gate is not None:
            gate.release_connection(self.admission)
            self.admission = None
        super().connection_lost(exc)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None, message: str | None = None):
        if status >= 500:
            log.error("error handling a socket request", exc_info=exc)
        else:
            log.debug("bad request on the socket: %s", message or exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        # Never echo the offending bytes back (a header may hold a credential of some proxy).
        if status >= 500:
            text = "internal error (details are in the agent's log)"
        else:
            text = f"malformed or oversized HTTP request ({type(exc).__name__ if exc else HTTPStatus(status).phrase}); lines and headers are limited to 8190 bytes"
        resp = error_response(status, text)
        resp.force_close()
        return resp


# --- the socket file -----------------------------------------------------------------------


def bind_unix_socket(path: Path, group: str | None, mode: int = 0o660, backlog: int = 128) -> socket.socket:
    """A listening unix socket at `path` with `mode` and group `group` (when that group exists).

    The socket is bound under a temporary name, given its mode and group, then renamed into
    place, so the final path never exists with looser permissions. A stale socket file (nobody
    listening) is replaced; a live one means another agent runs: OSError(EADDRINUSE)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1)
            probe.connect(str(path))
        except OSError:
            pass  # stale: nobody listens
        else:
            raise OSError(98, f"another process is listening on {path}")
        finally:
            probe.close()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(tmp))
        os.chmod(tmp, mode)
        gid = _group_id(group)
        if gid is not None and os.stat(tmp).st_gid != gid:  # already right when it is our primary group
            try:
                os.chown(tmp, -1, gid)
            except PermissionError:
                log.warning("cannot give %s to group %s (the agent's user is not a member); it keeps the agent's group", path, group)
        os.rename(tmp, path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    sock.setblocking(False)
    return sock


def _group_id(name: str | None) -> int | None:
    import grp

    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        log.warning("socket group %r does not exist; only root and the agent's own group can connect", name)
        return None


# --- the server ----------------------------------------------------------------------------


class ApiServer:
    WRITE_BATCH = 128  # most events one stream write carries
    def __init__(
        self,
        state: AgentState,
        config: ApiConfig,
        metrics: AgentMetrics,
        *,
        hostname: str | None = None,
        keepalive_timeout: float = 15.0,
        body_timeout: float = 5.0,
        write_timeout: float = 10.0,
        heartbeat: float = 15.0,
        shutdown_timeout: float = 3.0,
        refusal_timeout: float = 2.0,
    ) -> None:
        self.state = state
        self.config = config
        self.metrics = metrics
        self.hostname = hostname or socket.gethostname()
        self.keepalive_timeout = keepalive_timeout
        self.body_timeout = body_timeout
        self.write_timeout = write_timeout
        self.heartbeat = heartbeat
        self.shutdown_timeout = shutdown_timeout
        self.refusal_timeout = refusal_timeout  # seconds a refused connection has to send its request
        self.slots = ConnectionSlots(config.max_connections, config.max_connections_per_uid, config.admin_reserved_connections)
        self.socket_path: Path | None = None
        self._runner: HandlerRunner | None = None
        self._bound_inode: int | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._encoded: dict[int, tuple[Any, bytes]] = {}
        self._refusal_events = Throttle(_REFUSAL_EVENT_INTERVAL, overflow_key=-2)  # 'api.refused' events per uid
        self._openapi_body = _json_bytes(openapi_document())

    # --- lifecycle ---
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._errors, self._guard])
        for route in ROUTES:
            app.router.add_route(route.method, route.path.replace("{id}", "{id:[^/]+}"), getattr(self, f"_h_{route.name}"), name=route.name)
        return app

    async def start(self, sock: socket.socket | None = None, *, socket_activation: bool = True) -> None:
        """Listen on `sock`, else on a socket passed by systemd (LISTEN_FDS), else on the
        configured path (created 0660, group api.group)."""
        if sock is None and socket_activation:
            inherited = listen_fds()
            if inherited:
                sock = inherited[0]
                log.info("using the socket passed by the service manager")
        if sock is None:
            self.socket_path = self.config.socket
            sock = bind_unix_socket(self.config.socket, self.config.group)
            self._bound_inode = os.stat(self.config.socket).st_ino
        self._runner = HandlerRunner(
            self.build_app(),
            _AgentHandler,
            self,  # the gate each connection passes when it opens
            access_log=None,  # request lines go to metrics, not to the journal
            keepalive_timeout=self.keepalive_timeout,
            max_line_size=8190,
            max_field_size=8190,
            max_headers=64,
            lingering_time=1.0,  # how long an unread request body is drained before hanging up
            handle_signals=False,
            shutdown_timeout=self.shutdown_timeout,
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._streams):
            task.cancel()  # ends every event stream; their handlers return normally
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Remove the socket file only if it is still the one we bound (not a successor's).
        if self.socket_path is not None and self._bound_inode is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.socket_path).st_ino == self._bound_inode:
                    self.socket_path.unlink()

    # --- middlewares ---
    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        route = request.match_info.route.name or "unmatched"
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            resp = error_response(exc.status, _http_error_text(request, exc), headers={"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None)
            if exc.status in (408, 413):
                resp.force_close()  # the rest of the body is not worth reading
        except Exception:
            log.exception("handler %s failed", route)
            resp = error_response(500, "internal error (details are in the agent's log)", ErrorType.INTERNAL)
        self.metrics.api_requests.labels(route=route, status=str(resp.status)).inc()
        return resp

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        protocol = request.protocol
        if not isinstance(protocol, _AgentHandler) or protocol.admission is None:
            # Not opened through the gate (cannot happen with HandlerRunner): nobody is let in unjudged.
            return self._forbid(request, Admission(Verdict.FORBIDDEN, -1, polite=True), "cannot identify the peer")
        admission = protocol.admission
        peer = protocol.peer
        if admission.verdict in (Verdict.UID_QUOTA, Verdict.FULL):
            text = self._refusal_text(admission, peer)
            self._refusal_event(admission.uid, admission.verdict, text, request)
            resp = error_response(503, text, headers={"Retry-After": "1"})
            resp.force_close()
            return resp
        if peer is None:
            return self._forbid(request, admission, "cannot identify the peer")
        needed = Access.ADMIN if request.method not in ("GET", "HEAD") else Access.READ
        if protocol.access < needed:
            what = f"act (root or group {self.config.admin_group} needed)" if needed is Access.ADMIN else f"read (group {self.config.group} needed)"
            return self._forbid(request, admission, f"{peer.label} may not {what}")
        request[_PEER] = peer
        request[_ACCESS] = protocol.access
        return await handler(request)

    def _refusal_text(self, admission: Admission, peer: Peer | None) -> str:
        who = peer.label if peer else "an unidentified peer"
        if admission.verdict is Verdict.UID_QUOTA:
            return f"{who} has {self.config.max_connections_per_uid} connections open (api.max_connections_per_uid); close one and retry"
        if admission.verdict is Verdict.FULL:
            return f"too many connections (limit {self.config.max_connections}); retry shortly"
        return f"{who} may not use this socket (group {self.config.group} needed)"

    # --- connection slots (called by _AgentHandler) ---
    def admit_connection(self, transport: asyncio.BaseTransport) -> tuple[Peer | None, Access, Admission]:
        """Who the new connection's peer is, what it may do, and whether it gets a slot."""
        sock = transport.get_extra_info("socket")
        peer: Peer | None = None
        try:
            peer = peer_of(sock) if sock is not None else None
        except (OSError, TypeError, AttributeError):
            pass
        access = access_for(peer, self.config.group, self.config.admin_group) if peer else Access.NONE
        admission = self.slots.admit(peer.uid if peer else -1, access)
        if admission.verdict is not Verdict.ADMITTED:
            # Counted once per refused connection, whether it is answered or not.
            self.metrics.api_refusals.labels(reason=admission.verdict.value).inc()
            if not admission.polite:
                why = self._refusal_text(admission, peer)
                self._refusal_event(admission.uid, admission.verdict, f"{why}; closed without an answer (too many refused connections pending)")
        return peer, access, admission

    def release_connection(self, admission: Admission) -> None:
        self.slots.release(admission)

    def _refusal_event(self, uid: int, reason: Verdict, message: str, request: web.Request | None = None) -> None:
        # Rate-limited per uid so a refused client cannot flush real events out of the history.
        if self._refusal_events.due(uid) is None:
            return
        method, path = (request.method, request.path[:200]) if request is not None else ("", "")
        what = f"{method} {path[:100]}" if request is not None else "a connection"
        self.state.bus.publish("api.refused", f"refused {what}: {message}", uid=uid, path=path, method=method, reason=reason.value)

    def _forbid(self, request: web.Request, admission: Admission, message: str) -> web.Response:
        if admission.verdict is Verdict.ADMITTED:  # a reader asking to act (refused connections were counted when they opened)
            self.metrics.api_refusals.labels(reason=Verdict.FORBIDDEN.value).inc()
        self._refusal_event(admission.uid, Verdict.FORBIDDEN, message, request)
        resp = error_response(403, message)
        if admission.verdict is not Verdict.ADMITTED:
            resp.force_close()  # it may do nothing here: it keeps no connection either
        return resp

    # --- reads ---
    async def _h_status(self, request: web.Request) -> web.Response:
        status = views.status_view(self.state, self.hostname)
        status = status.model_copy(update={"counts": status.counts.model_copy(update={"oldest_wait_s": self.metrics.oldest_wait()})})
        # The caller's own rights, so a console can hide actions it may not take.
        access = "admin" if request.get(_ACCESS) is Access.ADMIN else "read"
        return _model_response(status.model_copy(update={"access": access}))

    async def _h_gpus(self, request: web.Request) -> web.Response:
        return _model_response(views.gpus_view(self.state))

    async def _h_runners(self, request: web.Request) -> web.Response:
        return _model_response(views.runners_view(self.state))

    async def _h_jobs(self, request: web.Request) -> web.Response:
        queue_times = [QueueTime.model_validate(stats) for stats in self.metrics.queue_times.summary()]
        return _model_response(views.jobs_view(self.state).model_copy(update={"queue_times": queue_times}))

    async def _h_plan(self, request: web.Request) -> web.Response:
        return _model_response(views.plan_view(self.state))

    async def _h_fleet(self, request: web.Request) -> web.Response:
        return _model_response(views.fleet_view(self.state, self.hostname))

    async def _h_openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi_body, content_type=_JSON)

    async def _h_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _h_events(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("since")
        since: int | None = None
        if raw is not None:
            since = parse_uint(raw)  # ASCII digits only (agent/digits.py)
            if since is None:
                return error_response(400, f"since must be a non-negative integer of at most 18 ASCII digits, got {raw[:40]!r}")
        sub = self.state.bus.subscribe(since=since)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
        me = asyncio.current_task()
        assert me is not None
        self._streams.add(me)
        last_write = [time.monotonic()]
        writing_since: list[float | None] = [None]

        async def watchdog() -> None:
            # One timer per stream, not per event: a blank line when quiet (so a client can tell
            # a quiet agent from a dead one), and a cut-off when a write has been stuck for
            # write_timeout (the client stopped reading; it must not hold the handler forever).
            tick = min(self.heartbeat, self.write_timeout) / 2
            while True:
                await asyncio.sleep(tick)
                now = time.monotonic()
                stuck = writing_since[0]
                if stuck is not None and now - stuck >= self.write_timeout:
                    if request.transport is not None:
                        request.transport.abort()
                    raise TimeoutError
                if stuck is None and now - last_write[0] >= self.heartbeat:
                    writing_since[0] = now
                    await resp.write(b"\n")
                    writing_since[0] = None
                    last_write[0] = time.monotonic()

        beat: asyncio.Task[None] | None = None
        try:
            await resp.prepare(request)
            beat = asyncio.create_task(watchdog())
            beat.add_done_callback(lambda t: t.cancelled() or t.exception() is None or me.cancel())
            # Plain `async for`: no task or timer per event (the hot path of the fan-out).
            async for event in sub:
                # Whatever else is already queued goes out in the same write: under a burst one
                # write (one syscall, one drain) carries many events instead of one each.
                batch = [event, *sub.get_nowait_batch(self.WRITE_BATCH)]
                if batch[-1].type == "stream.dropped":
                    self.metrics.api_refusals.labels(reason="slow-consumer").inc()
                writing_since[0] = time.monotonic()
                await resp.write(b"".join(self._encode(e) for e in batch))
                writing_since[0] = None
                last_write[0] = time.monotonic()
        except ConnectionError:
            pass  # the client went away
        except asyncio.CancelledError:
            # Ours (stop(), or the heartbeat failed): end the stream. Anyone else's: propagate.
            if not (self._stopping or (beat is not None and beat.done())):
                raise
        finally:
            self._streams.discard(me)
            if beat is not None:
                beat.cancel()
            sub.close()
        return resp

    def _encode(self, event: Any) -> bytes:
        # Every subscriber sends the same bytes: serialise each event once, not once per stream.
        key = id(event)
        hit = self._encoded.get(key)
        if hit is not None and hit[0] is event:
            return hit[1]
        data = event.model_dump_json().encode() + b"\n"
        self._encoded[key] = (event, data)
        if len(self._encoded) > 4096:
            for old in list(self._encoded)[:1024]:
                del self._encoded[old]
        return data

    # --- actions ---
    async def _action_body(self, request: web.Request) -> ActionRequest:
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await request.read()  # 413 (HTTPRequestEntityTooLarge) past client_max_size
        except TimeoutError:
            # A client trickling its body holds a connection slot: answer and hang up.
            raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {self.body_timeout:g} s") from None
        if not body.strip():
            return ActionRequest()
        try:
            return ActionRequest.model_validate_json(body)
        except ValidationError as exc:
            raise web.HTTPBadRequest(text=_validation_text(exc)) from None

    def _actor(self, request: web.Request, body: ActionRequest) -> str:
        peer = request[_PEER]
        return f"{peer.label}: {body.reason}" if body.reason else peer.label

    def _done(self, action: str, target: str | None, message: str, changed: bool) -> web.Response:
        seq = self.state.bus.last_seq if changed else None
        return _model_response(ActionResponse(action=action, target=target, message=message, event_seq=seq, changed=changed))

    def _gpu_ids(self) -> set[str]:
        return {g.id for g in self.state.host.gpus} if self.state.host else set()

    async def _h_drain_gpu(self, request: web.Request) -> web.Response:
        gpu_id = request.match_info["id"]
        body = await self._action_body(request)
        if gpu_id not in self._gpu_ids():
            return error_response(404, f"no GPU {gpu_id[:100]!r} on this host")
        if gpu_id in self.state.intents.drained_gpus:
            return self._done("gpu.drain", gpu_id, f"GPU {gpu_id} was already drained", changed=False)
        self.state.drain_gpu(gpu_id, self._actor(request, body))
        return self._done("gpu.drain", gpu_id, f"GPU {gpu_id} drained: no new runner gets it", changed=True)

    async def _h_undrain_gpu(self, request: web.Request) -> web.Response:
        gpu_id = request.match_info["id"]
        body = await self._action_body(request)
        # A GPU that vanished while drained must still be undrainable, hence the intents too.
        if gpu_id not in self._gpu_ids() and gpu_id not in self.state.intents.drained_gpus:
            return error_response(404, f"no GPU {gpu_id[:100]!r} on this host")
        if gpu_id not in self.state.intents.drained_gpus:
            return self._done("gpu.undrain", gpu_id, f"GPU {gpu_id} was not drained by an operator", changed=False)
        self.state.undrain_gpu(gpu_id, self._actor(request, body))
        return self._done("gpu.undrain", gpu_id, f"GPU {gpu_id} schedulable again", changed=True)

    async def _h_drain_runner(self, request: web.Request) -> web.Response:
        runner_id = request.match_info["id"]
        body = await self._action_body(request)
        if runner_id not in {rv.runner.id for rv in self.state.runners}:
            return error_response(404, f"no runner {runner_id[:100]!r} on this host")
        if runner_id in self.state.intents.drained_runners:
            return self._done("runner.drain", runner_id, f"runner {runner_id} was already draining", changed=False)
        self.state.drain_runner(runner_id, self._actor(request, body))
        return self._done("runner.drain", runner_id, f"runner {runner_id} drains: removed once idle", changed=True)

    async def _h_pause(self, request: web.Request) -> web.Response:
        body = await self._action_body(request)
        if self.state.intents.paused:
            return self._done("scaling.pause", None, "scaling was already paused", changed=False)
        self.state.pause(self._actor(request, body))
        return self._done("scaling.pause", None, "scaling paused: nothing new is started", changed=True)

    async def _h_resume(self, request: web.Request) -> web.Response:
        body = await self._action_body(request)
        if not self.state.intents.paused:
            return self._done("scaling.resume", None, "scaling was not paused", changed=False)
        self.state.resume(self._actor(request, body))
        return self._done("scaling.resume", None, "scaling resumed", changed=True)

    async def _h_reload(self, request: web.Request) -> web.Response:
        body = await self._action_body(request)
        error = self.state.reload(self._actor(request, body))
        if error is not None:
            return error_response(409, f"config not reloaded, the old one is kept: {error}")
        report = self.state.config
        message = reload_summary(report.applied, report.restart_needed) if report else "config re-read"
        return self._done("config.reload", None, message, changed=True)


def _json_bytes(doc: dict[str, Any]) -> bytes:
    import json

    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r}")
        elif err["type"] == "json_invalid":
            parts.append(f"malformed JSON: {err['ctx'].get('error', 'invalid') if err.get('ctx') else 'invalid'}")
        elif where:
            parts.append(f"{where}: {err['msg']}")
        else:
            parts.append(f"body: {err['msg']}")
    return "; ".join(parts)


def _http_error_text(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such route: {request.method} {request.path[:200]}"
    if exc.status == 405:
        return f"{request.method} not allowed on {request.path[:200]}; allowed: {exc.headers.get('Allow', '?')}"
    if exc.status == 413:
        return f"request body too large ({(exc.text or '').split(': ', 1)[-1]})"
    text = exc.text or exc.reason or ""
    # aiohttp's default texts start with the status ("400: Bad Request"); ours are plain.
    return text.split(": ", 1)[1] if text.startswith(f"{exc.status}: ") else text
