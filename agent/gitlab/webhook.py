"""Optional listener for GitLab "Job Hook" webhooks: scale up at once instead of at the next poll.

GitLab sends `X-Gitlab-Token` with the configured secret in plain text; it is compared in
constant time. Job Hook payloads carry no job tags (docs: webhook_events#job-events), so the
agent fetches the job (one API call) before the planner sees it. Polling remains the safety
net: webhooks can be lost, and a lost one only delays a job to the next poll.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import SecretStr

from ..config import WebhookConfig
from ..events import EventBus

__all__ = ["WebhookListener"]

log = logging.getLogger("autogit.webhook")

JobHint = Callable[[int, int, str], Awaitable[None]]  # (project_id, job_id, status)


class WebhookListener:
    def __init__(self, config: WebhookConfig, secret: SecretStr | None, bus: EventBus, on_job: JobHint) -> None:
        self.config = config
        self._secret = secret.get_secret_value().encode() if secret else None
        self.bus = bus
        self.on_job = on_job
        self.refused = 0
        self.accepted = 0
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._lookups: set[asyncio.Task[None]] = set()

    def _refuse(self, request: web.Request, status: int, why: str) -> web.Response:
        self.refused += 1
        self.bus.publish("webhook.refused", f"webhook refused from {request.remote}: {why}", status=status, reason=why)
        return web.json_response({"message": why}, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        given = request.headers.get("X-Gitlab-Token", "").encode()
        if self._secret is None or not hmac.compare_digest(given, self._secret):
            return self._refuse(request, 401, "missing or wrong X-Gitlab-Token")
        if request.headers.get("X-Gitlab-Event") != "Job Hook":
            # Other hooks are not errors on GitLab's side; answer 202 so it does not disable the hook.
            return web.json_response({"message": "ignored: not a Job Hook"}, status=202)
        try:
            body = json.loads(await request.read())
            project_id, job_id, status = int(body["project_id"]), int(body["build_id"]), str(body["build_status"])
        except (ValueError, KeyError, TypeError):
            return self._refuse(request, 400, "body is not a Job Hook payload (project_id, build_id, build_status)")
        self.accepted += 1
        # Answer first: GitLab waits at most 10 s for a hook and disables one that keeps failing
        # (temporarily after 4 failures, for good after 40; app/models/concerns/web_hooks/auto_disabling.rb).
        # The job lookup (a GitLab API call) runs after the answer.
        task = asyncio.get_running_loop().create_task(self._lookup(project_id, job_id, status))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)
        return web.json_response({"message": "accepted"}, status=202)

    async def _lookup(self, project_id: int, job_id: int, status: str) -> None:
        try:
            await self.on_job(project_id, job_id, status)
        except Exception as exc:  # noqa: BLE001 - one failed lookup must not end the listener; the next poll covers it
            self.bus.publish("webhook.lookup-failed", f"job {job_id} of project {project_id}: {str(exc)[:200]}", job=job_id)

    async def start(self) -> None:
        host, _, port = self.config.listen.rpartition(":")
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post(self.config.path, self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]") or "127.0.0.1", int(port))
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the real port when 0 was asked
        self.port = sockets[0].getsockname()[1] if sockets else int(port)

    async def stop(self) -> None:
        for task in list(self._lookups):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
