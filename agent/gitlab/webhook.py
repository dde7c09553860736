"""Optional listener for GitLab "Job Hook" webhooks: scale up at once instead of at the next poll.

GitLab sends `X-Gitlab-Token` with the configured secret in plain text; it is compared in
constant time. Job Hook payloads carry no job tags (docs: webhook_events#job-events), so the
agent fetches the job (one API call, agent/gitlab/hook_lookups.py: merged per job, capped,
inside the scope and GitLab's budget) before the planner sees it. Polling remains the safety
net: webhooks can be lost, and a lost one only delays a job to the next poll.

Anyone who reaches the port can call it, so nothing it answers may cost much (docs/security/):
the connections pass a ConnectionGuard (agent/tcp_guard.py); a refused call is counted in
`autogit_webhook_refusals_total` and said in a `webhook.refused` event at most once per client
address every `REFUSAL_EVENT_INTERVAL` seconds; bad input (a header that is not UTF-8, a body
that is not strict JSON, too deep, or not a Job Hook) is a 400 with one line, never a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pydantic_core
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictInt, StrictStr, ValidationError

from ..config import WebhookConfig
from ..events import EventBus
from ..listen import parse_listen
from ..throttle import Throttle
from ..tcp_guard import ConnectionGuard, ConnectionLimits, GuardedRunner
from .hook_lookups import HookLookups, JobHint

if TYPE_CHECKING:
    from ..metrics import AgentMetrics

__all__ = ["JobHook", "JobHint", "WebhookListener", "parse_job_hook"]

log = logging.getLogger("autogit.webhook")

REFUSAL_EVENT_INTERVAL = 10.0  # seconds between 'webhook.refused' events per client address
BODY_TIMEOUT = 5.0  # seconds to receive a hook's body once its headers are in
MAX_DEPTH = 32  # GitLab's Job Hook nests 3 deep (tests/upstream/gitlab/job_hook.json)
_ADDRESSES_KEPT = 1024  # client addresses whose last refusal event is remembered


class JobHook(BaseModel):
    """The fields of GitLab's Job Hook the agent reads (app/models/ci/build.rb hook data,
    Gitlab::DataBuilder::Build); every other field is ignored. Ids are JSON integers."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    project_id: StrictInt = Field(gt=0, lt=1 << 63)
    build_id: StrictInt = Field(gt=0, lt=1 << 63)
    build_status: StrictStr = Field(min_length=1, max_length=64)


def _depth(value: Any) -> int:
    """How deep JSON containers nest in `value` (iterative: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_job_hook(body: bytes) -> JobHook:
    """A Job Hook body, strictly: JSON without NaN or Infinity (not JSON: RFC 8259), at most
    MAX_DEPTH deep, with the three fields typed. ValueError with one line otherwise."""
    try:
        doc = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise ValueError(f"body is not JSON ({' '.join(str(exc).split())[:120]})") from None
    if _depth(doc) > MAX_DEPTH:
        raise ValueError(f"body nests deeper than {MAX_DEPTH} levels")
    if not isinstance(doc, dict):
        raise ValueError("body is not a JSON object")
    try:
        return JobHook.model_validate(doc)
    except ValidationError as exc:
        fields = ", ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])
        raise ValueError(f"body is not a Job Hook ({fields[:200]})") from None


class WebhookListener:
    def __init__(
        self,
        config: WebhookConfig,
        secret: SecretStr | None,
        bus: EventBus,
        on_job: JobHint,
        metrics: AgentMetrics | None = None,
        *,
        in_scope: Callable[[int], bool] | None = None,
        budget_low: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._secret = secret.get_secret_value().encode() if secret else None
        self.bus = bus
        self.metrics = metrics
        self.lookups = HookLookups(on_job, bus, metrics, in_scope=in_scope, budget_low=budget_low, clock=clock)
        self.refused = 0
        self.accepted = 0
        # One event per client address per interval; many addresses at once share one.
        self._refusal_events = Throttle(REFUSAL_EVENT_INTERVAL, clock, _ADDRESSES_KEPT, "(other addresses)")
        limits = ConnectionLimits(max_connections=config.max_connections, max_per_address=config.max_connections_per_address,
                                  idle_timeout=config.idle_timeout)  # fmt: skip
        self.guard = ConnectionGuard("webhook", limits, self._count_refused_connection)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _count_refused_connection(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.tcp_refused.labels(listener="webhook", reason=reason).inc()

    def _refuse(self, request: web.Request, status: int, why: str, reason: str) -> web.Response:
        """Every refusal counted; one event per client address per REFUSAL_EVENT_INTERVAL, so
        that a flood of them cannot push other events out of the history or fill the journal."""
        self.refused += 1
        if self.metrics is not None:
            self.metrics.webhook_refusals.labels(reason=reason).inc()
        said = self._refusal_events.due(str(request.remote or "?")[:64])
        if said is not None:
            since = said.held_back
            more = f" (and {since} more refused from it since the last such event)" if since else ""
            self.bus.publish("webhook.refused", f"webhook refused from {said.key}: {why}{more}", status=status, reason=why, refused_since=since)
        resp = web.json_response({"message": why}, status=status)
        if status != 401:
            resp.force_close()  # the rest of a bad request is not worth reading
        return resp

    async def handle(self, request: web.Request) -> web.Response:
        raw = request.headers.get("X-Gitlab-Token", "")
        try:
            given = raw.encode("utf-8")  # aiohttp decodes header bytes as UTF-8 with surrogateescape
        except UnicodeEncodeError:
            return self._refuse(request, 400, "X-Gitlab-Token is not UTF-8", "bad-request")
        if self._secret is None or not hmac.compare_digest(given, self._secret):
            return self._refuse(request, 401, "missing or wrong X-Gitlab-Token", "token")
        if request.headers.get("X-Gitlab-Event") != "Job Hook":
            # Other hooks are not errors on GitLab's side; answer 202 so it does not disable the hook.
            self._count("ignored")
            return web.json_response({"message": "ignored: not a Job Hook"}, status=202)
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                body = await request.read()  # 413 past max_body_bytes (aiohttp)
        except TimeoutError:
            return self._refuse(request, 408, f"the body did not arrive within {BODY_TIMEOUT:g} s", "timeout")
        try:
            hook = parse_job_hook(body)
        except ValueError as exc:
            return self._refuse(request, 400, str(exc), "bad-request")
        self.accepted += 1
        # Answer first: GitLab waits at most 10 s for a hook and disables one that keeps failing
        # (temporarily after 4 failures, for good after 40; app/models/concerns/web_hooks/auto_disabling.rb).
        # The job lookup (a GitLab API call) runs after the answer, if at all.
        outcome = self.lookups.submit(hook.project_id, hook.build_id, hook.build_status)
        message = "accepted" if outcome in ("queued", "merged") else f"accepted, not looked up: {outcome}"
        return web.json_response({"message": message}, status=202)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_hooks.labels(outcome=outcome).inc()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPException, ConnectionError):
            raise  # 404, 405, 413: aiohttp's own short answers; a client gone: nothing to answer
        except Exception as exc:  # noqa: BLE001 - a bug: one line in the journal, a 500 naming no detail
            log.error("webhook handler failed: %s: %s", type(exc).__name__, " ".join(str(exc).split())[:200])
            return web.json_response({"message": "internal error (see the agent's log)"}, status=500)

    async def start(self) -> None:
        host, port = parse_listen(self.config.listen, "webhook.listen", default_host="127.0.0.1", any_port=True)
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._errors])
        app.router.add_post(self.config.path, self.handle)
        self._runner = GuardedRunner(app, self.guard, access_log=None, handle_signals=False, max_line_size=4096, max_field_size=4096,
                                     max_headers=64, lingering_time=0.5, shutdown_timeout=2.0)  # fmt: skip
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses  # the real port when 0 was asked
        self.port = addresses[0][1] if addresses else port
        log.info("webhook listener on %s:%s%s", host, self.port, self.config.path)

    async def stop(self) -> None:
        await self.lookups.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
