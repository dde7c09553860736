"""A test and demo DOUBLE of GitLab. It is not GitLab; never point real runners at it.

`GitLabSimulator` is a real aiohttp HTTP server that speaks the part of GitLab's REST API v4
that AutoGit and a runner use. It follows GitLab's documented contract: field names, status
codes, and the pagination headers X-Page, X-Per-Page, X-Next-Page, X-Prev-Page, X-Total,
X-Total-Pages and Link (per_page defaults to 20, at most 100). Sources: docs.gitlab.com api/rest
(pagination), api/jobs, api/runners, api/users (create a runner), webhook_events (Job Hook), and
GitLab's runner endpoints (lib/api/ci/runner.rb, gitlab-runner common/network.go).

User API (PRIVATE-TOKEN header or `Authorization: Bearer`; else 401 {"message":"401 Unauthorized"}):
  GET  /user, /projects, /projects/:id, /groups/:id, /groups/:id/projects
  GET  /projects/:id/jobs?scope[]=pending..., /projects/:id/jobs/:job_id[/trace]
  POST /projects/:id/jobs/:job_id/cancel
  POST /user/runners; GET /runners, /runners/all (admin), /runners/:id, /runners/:id/jobs
  PUT  /runners/:id; DELETE /runners/:id
Runner API (runner or job token in the request, not a user token):
  DELETE /runners (form token), POST /runners/verify, POST /jobs/request (201 job or 204),
  PATCH /jobs/:id/trace (Job-Token header, Content-Range; 202 or 416), PUT /jobs/:id (state).
Job Hooks: on every job status change it POSTs GitLab's "Job Hook" payload (object_kind
"build", with no job tag_list) to each webhook target, with X-Gitlab-Token set to the secret.
Jobs that stay pending longer than `stuck_timeout_s` with no runner able to take them are
dropped to failed with failure_reason "stuck_or_timeout_failure".

Long polling on /jobs/request (`long_poll_s`, off by default as on self-managed GitLab): as
workhorse does (workhorse/internal/builds/register.go), a request whose `last_update` equals the
queue's current value is held until the queue changes or the duration ends; 204s carry the value
in X-GitLab-Last-Update. Jobs carry GIT_STRATEGY=none unless a test gives its own: the double
has no repositories to clone.

Not modelled: pipelines as objects, artifacts, caches, protected refs (access_level is stored but
not enforced), subgroups, keyset pagination. (The jobs index is rate-limited per user, as GitLab does.)

Control surface for tests and the demo. This is not GitLab API; it lives under /_sim/ and needs
the double's admin token (PRIVATE-TOKEN or `Authorization: Bearer`, as the user API), else 401:
  POST /_sim/jobs {project_id, tags, name, script, image_platform?} -> 201 job
  GET  /_sim/state -> jobs (status, runner) and runners (tags)
  POST /_sim/faults {"mode": "500"|"timeout"|"reset"|"none", "seconds": N}: GitLab API answers 500,
  hangs until the window ends, or drops the connection unanswered, for N seconds
The same operations exist as methods: add_job, jobs, runners, set_fault, add_webhook, cancel_job.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import logging
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, UTC
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from .access import (
    MAINTAINER, OWNER, READ_SCOPES, REPORTER, WRITE_SCOPES, Access, Denied, SimToken, SimUser, not_found,
)
from .admin_token import new_admin_token

__all__ = ["GitLabSimulator", "SimJob", "SimRunner", "SimProject", "WebhookTarget", "JOB_SCOPES"]

log = logging.getLogger(__name__)

API = "/api/v4"
SIM = "/_sim"  # the double's own control surface, not GitLab API
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
JOB_SCOPES = frozenset(
    {"created", "pending", "running", "failed", "success", "canceled", "skipped", "waiting_for_resource", "manual"}
)
FINISHED = frozenset({"success", "failed", "canceled", "skipped"})
RUNNER_TYPES = ("instance_type", "group_type", "project_type")
FAULT_MODES = ("none", "500", "timeout", "reset")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
def _request_key(name: str, kind: type) -> Any:
    """aiohttp's typed request key (3.12+); the plain name on older aiohttp (Debian's, in the
    compose stand-in image)."""
    maker = getattr(web, "RequestKey", None)
    return maker(name, kind) if maker is not None else name


_USER = _request_key("user", SimUser)
_PAT = _request_key("pat", SimToken)
_RATELIMIT = _request_key("ratelimit", dict)
# the base URL as the current request addressed the server, for web_url and Link headers
_BASE_URL: contextvars.ContextVar[str | None] = contextvars.ContextVar("sim_base_url", default=None)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_s(ts: float | None) -> str | None:
    """Whole-second ISO 8601, as the Job Hook's `*_iso` fields."""
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str, key: str = "message") -> web.Response:
    return web.json_response({key: message}, status=status)


def _runner_token(runner_type: str) -> str:
    """A runner authentication token as GitLab issues it now: `glrt-` and the partition prefix of
    its runner type, `t1_`/`t2_`/`t3_` (app/models/ci/runner.rb prefix_for_new_and_legacy_runner,
    partition_id_prefix_in_16_bit_encode), then the random part."""
    return f"glrt-t{RUNNER_TYPES.index(runner_type) + 1:x}_" + secrets.token_urlsafe(15)


def _maximum_timeout_refused(value: Any) -> web.Response | None:
    """app/models/ci/runner.rb: `validates :maximum_timeout, allow_nil: true, numericality:
    { greater_than_or_equal_to: 600, message: 'needs to be at least 10 minutes' }`; the REST API
    answers render_validation_error! (400, the errors by attribute)."""
    if value in (None, ""):
        return None
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        return web.json_response({"error": "maximum_timeout is invalid"}, status=400)
    if seconds < 600:
        return web.json_response({"message": {"maximum_timeout": ["needs to be at least 10 minutes"]}}, status=400)
    return None


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")


def _tags(value: Any) -> list[str]:
    """GitLab accepts tag_list as an array or as a comma-separated string."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return sorted({str(t).strip() for t in items if str(t).strip()})


@dataclass
class SimProject:
    id: int
    path_with_namespace: str
    group_id: int | None = None
    shared_with_groups: set[int] = field(default_factory=set)  # POST /projects/:id/share

    @property
    def name(self) -> str:
        return self.path_with_namespace.rsplit("/", 1)[-1]


@dataclass
class SimRunner:
    id: int
    token: str
    runner_type: str
    description: str = ""
    group_id: int | None = None
    project_id: int | None = None
    paused: bool = False
    locked: bool = False
    run_untagged: bool = True
    tag_list: list[str] = field(default_factory=list)
    access_level: str = "not_protected"
    maximum_timeout: int | None = None
    maintenance_note: str | None = None
    created_at: float = 0.0
    contacted_at: float | None = None
    system_ids: set[str] = field(default_factory=set)
    info: dict[str, Any] = field(default_factory=dict)
    assigned_projects: set[int] = field(default_factory=set)  # POST /projects/:id/runners
    creator_id: int | None = None
    token_expires_at: float | None = None

    @property
    def projects(self) -> set[int]:
        """Every project a project runner belongs to (its owner project first among them)."""
        return ({self.project_id} if self.project_id is not None else set()) | self.assigned_projects


@dataclass
class SimJob:
    id: int
    project_id: int
    name: str
    stage: str
    tags: list[str]
    script: list[str]
    created_at: float
    image: str | None = None
    image_platform: str | None = None
    # CommitStatus#queued_at: when the job entered the queue (later than created_at when its
    # pipeline waited for earlier stages). queued_duration and GraphQL queuedAt count from it.
    queued_at: float | None = None
    variables: dict[str, str] = field(default_factory=dict)
    status: str = "pending"
    pipeline_id: int = 0
    ref: str = "main"
    sha: str = "0" * 40
    timeout_s: int = 3600
    allow_failure: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    runner_id: int | None = None
    token: str | None = None
    failure_reason: str | None = None
    exit_code: int | None = None
    trace: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: str = field(repr=False)


class GitLabSimulator:
    """The GitLab double. `await start()`, then use `url` with python-gitlab or a runner."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        private_token: str | None = None,
        stuck_timeout_s: float = 3600.0,
        runner_online_timeout_s: float = 7200.0,
        trace_update_interval_s: int = 3,
        webhooks: Sequence[WebhookTarget] = (),
        clock: Callable[[], float] = time.time,
        long_poll_s: float = 0.0,
        access: Access | None = None,
        jobs_index_limit: int = 600,
        runner_token_ttl_s: float | None = None,
    ) -> None:
        self.host, self._port = host, port
        if private_token == "":
            raise ValueError("private_token is empty: give a token, or None for a fresh random one")
        # root's token, and the key to /_sim/: a fresh one each run unless given (admin_token.py)
        self.private_token = private_token if private_token is not None else new_admin_token()
        self.stuck_timeout_s = stuck_timeout_s
        self.runner_online_timeout_s = runner_online_timeout_s
        self.trace_update_interval_s = trace_update_interval_s
        self.webhooks: list[WebhookTarget] = list(webhooks)
        self.webhook_deliveries: list[dict[str, Any]] = []  # {url, build_id, build_status, status|error}
        self._clock = clock
        self.long_poll_s = long_poll_s
        # The old single admin token is one user among others: root, admin, every scope.
        self.access = access or Access()
        if not any(u.username == "root" for u in self.access.users.values()):
            root = self.access.add_user("root", admin=True)
            self.access.add_token(root, {"api", "read_api", "create_runner", "manage_runner", "admin_mode"}, value=self.private_token)
            self.access.add_member(root, group=1, role=OWNER)  # root made the default group
        # lib/api/ci/jobs.rb check_rate_limit!(:jobs_index, scope: current_user): 600 a minute by
        # default (lib/gitlab/application_rate_limiter.rb), self-managed included.
        self.jobs_index_limit = jobs_index_limit
        self._jobs_index_hits: dict[int, list[float]] = {}
        self.runner_token_ttl_s = runner_token_ttl_s
        self.calls: dict[str, int] = {}  # "METHOD /route" → calls, for tests that count them
        # Runners a listing skips, as offset pagination does while others create or delete runners
        # (GitLab's REST pagination docs); GET /runners/:id still finds them.
        self.skipped_in_listings: set[int] = set()
        self._queue_version = secrets.token_hex(8)  # workhorse's per-queue "last_update" value
        self._queue_changed: asyncio.Event | None = None
        self._lock = threading.RLock()  # the Python API may be called from another thread
        self._projects: dict[int, SimProject] = {}
        self._groups: dict[int, str] = {}
        self._runners: dict[int, SimRunner] = {}
        self._registered: list[SimRunner] = []  # deleted ones included
        self._jobs: dict[int, SimJob] = {}
        self._ids = {"runner": 0, "job": 0, "pipeline": 0}
        self._fault = ("none", 0.0)  # (mode, monotonic end)
        self._hooks: asyncio.Queue[tuple[WebhookTarget, dict[str, Any]]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.add_group(1, "autogit")
        self.add_project(1, "autogit/demo", group_id=1)
        self._app = web.Application(middlewares=[self._mw_errors, self._mw_faults])
        self._routes()

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue_changed = asyncio.Event()
        # a hung ("timeout" fault) request must not hold stop() for aiohttp's default 60 s
        self._runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._tasks = [asyncio.create_task(self._deliver_hooks()), asyncio.create_task(self._reap_stuck())]
        log.info("GitLab simulator (a test double) listening on %s", self.url)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GitLabSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[GitLabSimulator]:
        """Serve from a private event loop in a daemon thread, for synchronous clients and tests."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="gitlab-sim", daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=30)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL (no /api/v4). A wildcard bind is reached through 127.0.0.1."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self._port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """The headers that authenticate as this run's root, on /api/v4 and on /_sim/."""
        return {"PRIVATE-TOKEN": self.private_token}

    def _base(self) -> str:
        """The URL the current request used (a container may reach us by another address)."""
        return _BASE_URL.get() or self.url

    # ---------------------------------------------------------------- Python API
    def add_group(self, group_id: int, path: str) -> None:
        with self._lock:
            self._groups[group_id] = path

    def add_project(self, project_id: int, path_with_namespace: str, group_id: int | None = None) -> SimProject:
        with self._lock:
            project = SimProject(project_id, path_with_namespace, group_id)
            self._projects[project_id] = project
            return project

    def add_job(
        self,
        project_id: int = 1,
        tags: Sequence[str] = (),
        name: str = "job",
        script: Sequence[str] = ("echo hello",),
        image_platform: str | None = None,
        *,
        stage: str = "test",
        image: str | None = None,
        variables: dict[str, str] | None = None,
        timeout_s: int = 3600,
        created_before_s: float = 0.0,
    ) -> SimJob:
        """Enqueue a pending job (its project is created if unknown) and send its Job Hook.
        `created_before_s`: the job was created that long before it became pending (its pipeline
        waited for earlier stages), so created_at < queued_at as on GitLab."""
        with self._lock:
            if project_id not in self._projects:
                self.add_project(project_id, f"autogit/project-{project_id}", group_id=1)
            self._ids["job"] += 1
            self._ids["pipeline"] += 1
            job = SimJob(
                id=self._ids["job"], project_id=project_id, name=name, stage=stage, tags=_tags(list(tags)),
                script=list(script), created_at=self._clock() - created_before_s, queued_at=self._clock(),
                image=image, image_platform=image_platform,
                variables={"GIT_STRATEGY": "none"} | dict(variables or {}), pipeline_id=self._ids["pipeline"],
                timeout_s=timeout_s,
            )
            self._jobs[job.id] = job
        self._bump_queue()
        self._emit(job)
        return job

    def add_runner(self, description: str, *, project_id: int, also: Sequence[int] = (), tags: Sequence[str] = ()) -> int:
        """A project runner registered by someone else (root), enabled in `also` projects too."""
        with self._lock:
            self._ids["runner"] += 1
            runner = SimRunner(id=self._ids["runner"], token=_runner_token("project_type"), runner_type="project_type",
                               description=description, project_id=project_id, tag_list=_tags(list(tags)),
                               created_at=self._clock(), assigned_projects=set(also))  # fmt: skip
            self._runners[runner.id] = runner
            self._registered.append(runner)
            return runner.id

    def runners_ever(self) -> list[int]:
        """Ids of every runner ever registered, deleted ones included."""
        return list(range(1, self._ids["runner"] + 1))

    def registered(self) -> list[SimRunner]:
        """Every runner ever registered, deleted ones included, in order (what tests count)."""
        with self._lock:
            return list(self._registered)

    @property
    def jobs(self) -> list[SimJob]:
        with self._lock:
            return list(self._jobs.values())

    @property
    def runners(self) -> list[SimRunner]:
        with self._lock:
            return list(self._runners.values())

    def job(self, job_id: int) -> SimJob:
        return self._jobs[job_id]

    def set_fault(self, mode: str, seconds: float = 0.0) -> None:
        """Make the GitLab API (runner endpoints included) fail: "500", hang ("timeout"), or "none"."""
        if mode not in FAULT_MODES:
            raise ValueError(f"fault mode must be one of {FAULT_MODES}, not {mode!r}")
        self._fault = (mode, time.monotonic() + seconds if mode != "none" else 0.0)

    def add_webhook(self, url: str, secret: str) -> None:
        self.webhooks.append(WebhookTarget(url, secret))

    def cancel_job(self, job_id: int) -> SimJob:
        job = self._jobs[job_id]
        if job.status not in FINISHED:
            self._finish(job, "canceled")
        return job

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "jobs": [
                    {"id": j.id, "project_id": j.project_id, "name": j.name, "status": j.status, "tag_list": j.tags,
                     "image_platform": j.image_platform, "runner_id": j.runner_id, "failure_reason": j.failure_reason,
                     "trace_bytes": len(j.trace)}
                    for j in self._jobs.values()
                ],
                "runners": [
                    {"id": r.id, "description": r.description, "runner_type": r.runner_type, "tag_list": r.tag_list,
                     "run_untagged": r.run_untagged, "paused": r.paused, "status": self._runner_status(r),
                     "contacted_at": _iso(r.contacted_at)}
                    for r in self._runners.values()
                ],
                "fault": self._fault[0] if time.monotonic() < self._fault[1] else "none",
            }

    # ---------------------------------------------------------------- rules
    def can_pick(self, runner: SimRunner, job: SimJob) -> bool:
        """GitLab's rule: not paused, in scope, job tags ⊆ runner tags; untagged needs run_untagged."""
        if runner.paused:
            return False
        project = self._projects.get(job.project_id)
        if runner.runner_type == "project_type" and job.project_id not in {runner.project_id, *runner.assigned_projects}:
            return False
        if runner.runner_type == "group_type" and (project is None or project.group_id != runner.group_id):
            return False
        return set(job.tags) <= set(runner.tag_list) if job.tags else runner.run_untagged

    def _online(self, runner: SimRunner) -> bool:
        # Ci::HasRunnerStatus#online?: contacted within ONLINE_CONTACT_TIMEOUT (2 h), paused or not
        return runner.contacted_at is not None and self._clock() - runner.contacted_at <= self.runner_online_timeout_s

    def _stale(self, runner: SimRunner) -> bool:
        # Ci::HasRunnerStatus#stale?: the later of created_at and contacted_at is STALE_TIMEOUT
        # (7 days) or more ago
        return max(runner.created_at, runner.contacted_at or 0.0) <= self._clock() - 7 * 86400

    def _runner_status(self, runner: SimRunner) -> str:
        """REST `status`: Ci::Runner#deprecated_rest_status (app/models/ci/runner.rb), which the
        runner entities expose as `status` (lib/api/entities/ci/runner.rb): stale, then
        never_contacted, then online/offline for an active runner, and `paused` for a paused one
        that has contacted GitLab, online or not. `online` is exposed beside it unchanged."""
        if self._stale(runner):
            return "stale"
        if runner.contacted_at is None:
            return "never_contacted"
        if runner.paused:
            return "paused"
        return "online" if self._online(runner) else "offline"

    def _runner_scope(self, runner: SimRunner, scope: str) -> bool:
        """The `status` filter of the runner listings (lib/api/ci/runners.rb filter_runners): the
        Ci::Runner scopes, not deprecated_rest_status: `online` holds paused runners too."""
        if scope == "online":
            return self._online(runner)
        if scope == "offline":  # Ci::HasRunnerStatus: contacted, not online (stale ones included)
            return runner.contacted_at is not None and not self._online(runner)
        if scope == "never_contacted":
            return runner.contacted_at is None
        if scope == "stale":
            return self._stale(runner)
        return runner.paused if scope == "paused" else not runner.paused  # deprecated active/paused

    def _finish(self, job: SimJob, status: str, failure_reason: str | None = None) -> None:
        with self._lock:
            job.status, job.finished_at = status, self._clock()
            job.failure_reason = failure_reason if status == "failed" else None
        self._emit(job)

    async def _reap_stuck(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, max(self.stuck_timeout_s / 4, 0.05)))
            now = self._clock()
            for job in self.jobs:
                # counted from when it entered the queue (app/services/ci/stuck_builds/
                # drop_pending_service.rb: pending_builds_queue(BUILD_PENDING_STUCK_TIMEOUT.ago))
                if job.status == "pending" and now - (job.queued_at or job.created_at) > self.stuck_timeout_s:
                    if not any(self.can_pick(r, job) for r in self.runners):
                        self._finish(job, "failed", "stuck_or_timeout_failure")

    # ---------------------------------------------------------------- webhooks
    def _bump_queue(self) -> None:
        """A job became pending: held long-polling requests go through now. GitLab ticks the
        runners' queue value when a build enters the queue (app/services/ci/update_build_queue_service.rb),
        not when one finishes."""
        self._queue_version = secrets.token_hex(8)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._wake_long_polls()
        else:
            loop.call_soon_threadsafe(self._wake_long_polls)

    def _wake_long_polls(self) -> None:
        # one event per queue version: a waiter never misses the change it waits for
        old, self._queue_changed = self._queue_changed, asyncio.Event()
        if old is not None:
            old.set()

    def _emit(self, job: SimJob) -> None:
        if not self.webhooks:
            return
        payload = self._hook_payload(job)
        for target in self.webhooks:
            item = (target, payload)
            loop = self._loop
            if loop is None or loop.is_closed():
                self._hooks.put_nowait(item)
            elif _running_loop() is loop:
                self._hooks.put_nowait(item)
            else:
                loop.call_soon_threadsafe(self._hooks.put_nowait, item)

    async def _deliver_hooks(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                target, payload = await self._hooks.get()
                record: dict[str, Any] = {"url": target.url, "build_id": payload["build_id"],
                                          "build_status": payload["build_status"]}
                headers = {"X-Gitlab-Event": "Job Hook", "X-Gitlab-Token": target.secret,
                           "X-Gitlab-Instance": self.url, "X-Gitlab-Event-UUID": secrets.token_hex(16)}
                try:
                    async with session.post(target.url, json=payload, headers=headers) as resp:
                        record["status"] = resp.status
                except (TimeoutError, aiohttp.ClientError) as exc:
                    record["error"] = type(exc).__name__
                self.webhook_deliveries.append(record)

    def _hook_payload(self, job: SimJob) -> dict[str, Any]:
        """The Job Hook body with exactly the keys Gitlab::DataBuilder::Build#build builds
        (lib/gitlab/data_builder/build.rb), as GitLab's documented example shows them (with the
        `*_iso` times): tests/upstream/gitlab/job_hook.json. There is no job tag_list in it.
        `source_pipeline` is added only for a pipeline triggered by another, which the double
        never has; `environment` is null for a job without an environment keyword."""
        project = self._projects[job.project_id]
        runner = self._runners.get(job.runner_id) if job.runner_id else None
        web_url = f"{self._base()}/{project.path_with_namespace}"
        git_http = f"{web_url}.git"
        git_ssh = f"git@{URL(self._base()).host}:{project.path_with_namespace}.git"
        user = self._user_obj()
        return {
            "object_kind": "build", "ref": job.ref, "tag": False, "before_sha": "0" * 40, "sha": job.sha,
            "retries_count": 0, "build_id": job.id, "build_name": job.name, "build_stage": job.stage,
            "build_status": job.status, "build_created_at": _iso(job.created_at),
            "build_started_at": _iso(job.started_at), "build_finished_at": _iso(job.finished_at),
            "build_created_at_iso": _iso_s(job.created_at), "build_started_at_iso": _iso_s(job.started_at),
            "build_finished_at_iso": _iso_s(job.finished_at),
            "build_duration": self._duration(job), "build_queued_duration": self._queued(job),
            "build_allow_failure": job.allow_failure, "build_failure_reason": job.failure_reason or "unknown_failure",
            "pipeline_id": job.pipeline_id,
            "runner": None if runner is None else {
                "id": runner.id, "description": runner.description, "runner_type": runner.runner_type,
                "active": not runner.paused, "is_shared": runner.runner_type == "instance_type",
                "tags": runner.tag_list,
            },
            "project_id": job.project_id, "project_name": project.path_with_namespace.replace("/", " / "),
            # User#hook_attrs
            "user": {k: user[k] for k in ("id", "name", "username", "avatar_url", "email")},
            # note: commit.id is the pipeline's id (one job per pipeline in the double)
            "commit": {"id": job.pipeline_id, "name": None, "sha": job.sha, "message": "simulated commit\n",
                       "author_name": user["name"], "author_email": user["email"], "author_url": user["web_url"],
                       "status": job.status, "duration": self._duration(job), "started_at": _iso(job.started_at),
                       "finished_at": _iso(job.finished_at), "started_at_iso": _iso_s(job.started_at),
                       "finished_at_iso": _iso_s(job.finished_at)},
            "repository": {"name": project.name, "url": git_http, "description": None, "homepage": web_url,
                           "git_ssh_url": git_ssh, "git_http_url": git_http, "visibility_level": 0},
            # Project#hook_attrs(backward: false)
            "project": {"id": project.id, "name": project.name, "description": None, "web_url": web_url,
                        "avatar_url": None, "git_ssh_url": git_ssh, "git_http_url": git_http,
                        "namespace": project.path_with_namespace.rsplit("/", 1)[0], "visibility_level": 0,
                        "path_with_namespace": project.path_with_namespace, "default_branch": "main",
                        "ci_config_path": None},
            "environment": None,
        }

    # ---------------------------------------------------------------- JSON shapes
    def _duration(self, job: SimJob) -> float | None:
        if job.started_at is None:
            return None
        return round((job.finished_at or self._clock()) - job.started_at, 3)

    def _queued(self, job: SimJob) -> float | None:
        # CommitStatus#queued_duration = calculate_duration(queued_at, started_at): from queued_at
        # to the start, or to now while there is none (app/models/commit_status.rb)
        if job.queued_at is None:
            return None
        return round((job.started_at or self._clock()) - job.queued_at, 3)

    def _user_obj(self) -> dict[str, Any]:
        # avatar_url: a string, as user/basic.json requires (GitLab falls back to a Gravatar URL)
        return {"id": 1, "username": "root", "name": "Administrator", "state": "active", "is_admin": True,
                "avatar_url": "https://www.gravatar.com/avatar/00000000000000000000000000000000?s=80&d=identicon",
                "web_url": f"{self._base()}/root", "email": "admin@example.com"}

    def _commit_obj(self, j: SimJob, project: SimProject) -> dict[str, Any]:
        at = _iso(j.created_at)
        user = self._user_obj()
        return {"id": j.sha, "short_id": j.sha[:8], "created_at": at, "parent_ids": [], "title": "simulated commit",
                "message": "simulated commit\n", "author_name": user["name"], "author_email": user["email"],
                "authored_date": at, "committer_name": user["name"], "committer_email": user["email"],
                "committed_date": at,
                "web_url": f"{self._base()}/{project.path_with_namespace}/-/commit/{j.sha}"}

    def _project_obj(self, p: SimProject) -> dict[str, Any]:
        ns_path = p.path_with_namespace.rsplit("/", 1)[0]
        return {"id": p.id, "name": p.name, "path": p.name, "path_with_namespace": p.path_with_namespace,
                "name_with_namespace": p.path_with_namespace.replace("/", " / "), "default_branch": "main",
                "namespace": {"id": p.group_id, "name": ns_path, "path": ns_path, "kind": "group",
                              "full_path": ns_path},
                "web_url": f"{self._base()}/{p.path_with_namespace}", "archived": False,
                "ci_job_token_scope_enabled": False}

    def _runner_obj(self, r: SimRunner, detail: bool = False, *, can_update: bool = True,
                    include_projects: bool = False) -> dict[str, Any]:
        """API::Entities::Ci::Runner (lists) and RunnerDetails (detail=True), key for key
        (lib/api/entities/ci/runner.rb, runner_details.rb). Not modelled: `created_by`, which the
        entity adds only where the user may read the creator."""
        running = any(j.runner_id == r.id and j.status == "running" for j in self._jobs.values())
        obj: dict[str, Any] = {
            # ip_address: always nil since 17.0 (`expose(:ip_address) { nil }`)
            "id": r.id, "description": r.description, "ip_address": None, "active": not r.paused,
            "paused": r.paused, "is_shared": r.runner_type == "instance_type", "runner_type": r.runner_type,
            "name": r.info.get("name"), "online": self._online(r), "created_at": _iso(r.created_at),
            "status": self._runner_status(r),
            # RunnerJobExecutionStatusHelper: active while a build of the runner is executing
            "job_execution_status": "active" if running else "idle",
        }
        if detail:
            obj |= {"tag_list": r.tag_list, "run_untagged": r.run_untagged, "locked": r.locked,
                    "maximum_timeout": r.maximum_timeout, "access_level": r.access_level,
                    "version": r.info.get("version"), "revision": r.info.get("revision"),
                    "platform": r.info.get("platform"), "architecture": r.info.get("architecture"),
                    "contacted_at": _iso(r.contacted_at),
                    # exposed to everyone who sees the runner, null unless they may update it
                    "maintenance_note": r.maintenance_note if can_update else None}
            if include_projects:
                obj["projects"] = [self._project_obj(self._projects[pid]) for pid in sorted(r.projects)
                                   if pid in self._projects]
            obj["groups"] = ([{"id": r.group_id, "web_url": f"{self._base()}/groups/{self._groups.get(r.group_id, '')}",
                               "name": self._groups.get(r.group_id, "")}] if r.group_id else [])
        return obj

    def _job_obj(self, j: SimJob) -> dict[str, Any]:
        runner = self._runners.get(j.runner_id) if j.runner_id else None
        project = self._projects[j.project_id]
        obj = {
            "id": j.id, "name": j.name, "stage": j.stage, "status": j.status, "ref": j.ref, "tag": False,
            "tag_list": j.tags, "coverage": None, "allow_failure": j.allow_failure,
            "created_at": _iso(j.created_at), "started_at": _iso(j.started_at), "finished_at": _iso(j.finished_at),
            "erased_at": None, "duration": self._duration(j), "queued_duration": self._queued(j),
            "web_url": f"{self._base()}/{project.path_with_namespace}/-/jobs/{j.id}",
            "user": self._user_obj(),
            # API::Entities::Commit (spec/fixtures/api/schemas/public_api/v4/commit/basic.json)
            "commit": self._commit_obj(j, project),
            "pipeline": {"id": j.pipeline_id, "project_id": j.project_id, "ref": j.ref, "sha": j.sha,
                         "status": j.status, "web_url": f"{self._base()}/{project.path_with_namespace}/-/pipelines/"
                                                         f"{j.pipeline_id}"},
            "project": {"ci_job_token_scope_enabled": False},
            "artifacts": [], "artifacts_expire_at": None, "archived": False,
            "runner": None if runner is None else self._runner_obj(runner),
            "runner_manager": None,
        }
        if j.status == "failed":
            obj["failure_reason"] = j.failure_reason or "script_failure"
        return obj

    # ---------------------------------------------------------------- HTTP plumbing
    def _routes(self) -> None:
        r = self._app.router
        user: list[tuple[str, str, Handler]] = [
            ("GET", "/user", self._get_user),
            ("GET", "/projects", self._list_projects),
            ("GET", "/projects/{pid}", self._get_project),
            ("GET", "/groups", self._list_groups),
            ("GET", "/groups/{gid}", self._get_group),
            ("GET", "/groups/{gid}/projects", self._list_group_projects),
            ("GET", "/projects/{pid}/jobs", self._list_jobs),
            ("GET", "/projects/{pid}/jobs/{jid:\\d+}", self._get_job),
            ("GET", "/projects/{pid}/jobs/{jid:\\d+}/trace", self._get_trace),
            ("POST", "/projects/{pid}/jobs/{jid:\\d+}/cancel", self._cancel_job),
            ("POST", "/user/runners", self._create_runner),
            ("POST", "/projects/{pid}/runners", self._assign_runner),
            ("GET", "/projects/{pid}/runners", self._list_project_runners),
            ("DELETE", "/projects/{pid}/runners/{rid:\\d+}", self._unassign_runner),
            ("GET", "/groups/{gid}/runners", self._list_group_runners),
            ("GET", "/runners", self._list_runners),
            ("GET", "/runners/all", self._list_all_runners),
            ("GET", "/runners/{rid:\\d+}", self._get_runner),
            ("PUT", "/runners/{rid:\\d+}", self._update_runner),
            ("DELETE", "/runners/{rid:\\d+}", self._delete_runner),
            ("GET", "/runners/{rid:\\d+}/jobs", self._runner_jobs),
        ]
        for method, path, handler in user:
            r.add_route(method, API + path, self._authed(handler))
        r.add_route("DELETE", API + "/runners", self._delete_runner_by_token)
        r.add_route("POST", "/api/graphql", self._authed(self._graphql))
        r.add_route("POST", API + "/runners/verify", self._verify_runner)
        r.add_route("POST", API + "/jobs/request", self._request_job)
        r.add_route("PATCH", API + "/jobs/{jid:\\d+}/trace", self._patch_trace)
        r.add_route("PUT", API + "/jobs/{jid:\\d+}", self._update_job)
        control: list[tuple[str, str, Handler]] = [
            ("POST", "/jobs", self._sim_add_job),
            ("GET", "/state", self._sim_state),
            ("POST", "/faults", self._sim_faults),
        ]
        for method, path, handler in control:
            r.add_route(method, SIM + path, self._control(handler))

    def _authed(self, handler: Handler) -> Handler:
        """PRIVATE-TOKEN or Bearer: the token's user, and the token's scopes for this request
        (lib/api/api_guard.rb, lib/gitlab/auth.rb): GET needs read_api or api, anything else
        api; POST /user/runners also takes create_runner, /runners/:id also manage_runner."""

        async def wrapper(request: web.Request) -> web.StreamResponse:
            token = _presented_token(request)
            route = f"{request.method} {request.match_info.route.resource.canonical if request.match_info.route.resource else request.path}"
            self.calls[route] = self.calls.get(route, 0) + 1
            try:
                if not token:
                    raise Denied(401, {"message": "401 Unauthorized"})
                user, pat = self.access.authenticate(token, datetime.fromtimestamp(self._clock(), UTC).date())
                allowed = set(READ_SCOPES if request.method == "GET" else WRITE_SCOPES)
                if request.path == API + "/user/runners":
                    allowed.add("create_runner")
                if re.fullmatch(API + r"/runners/\d+(/.*)?", request.path):
                    allowed.add("manage_runner")
                if request.path == "/api/graphql":
                    allowed = {"api", "read_api"}
                self.access.require_scope(pat, allowed)
                request[_USER], request[_PAT] = user, pat
                return await handler(request)
            except Denied as exc:
                return web.json_response(exc.body, status=exc.status)

        return wrapper

    def _control(self, handler: Handler) -> Handler:
        """/_sim/ is not GitLab API, and what it queues a runner runs: it answers the holder of
        this run's admin token only (PRIVATE-TOKEN or Bearer, compared in constant time), so
        the double is never looser than GitLab, whose admin API wants a token on every call."""

        async def wrapper(request: web.Request) -> web.StreamResponse:
            given = _presented_token(request).encode("utf-8", "surrogateescape")
            if not given or not secrets.compare_digest(given, self.private_token.encode()):
                return _error(401, "401 Unauthorized - /_sim/ needs the double's admin token (PRIVATE-TOKEN)")
            return await handler(request)

        return wrapper

    # ---------------------------------------------------------------- abilities
    def _group_of(self) -> dict[int, int | None]:
        return {p.id: p.group_id for p in self._projects.values()}

    def _admin(self, request: web.Request) -> bool:
        return self.access.is_admin(request[_USER], request[_PAT])

    def _role(self, request: web.Request, project_id: int) -> int:
        return self.access.project_role(request[_USER], project_id, self._group_of())

    def _visible_project(self, request: web.Request, ref: str, role: int = REPORTER) -> SimProject:
        """A project the user may read at `role` (or an admin): GitLab hides the rest as 404
        (lib/api/helpers.rb find_project!, user_project)."""
        project = self._project_or_none(ref)
        if project is None or not (self._admin(request) or self._role(request, project.id) >= role):
            raise not_found("Project")
        return project

    def _can_admin_runner(self, request: web.Request, runner: SimRunner) -> bool:
        """update/delete/read_runner (app/policies/ci/runner_policy.rb): admin; a maintainer of
        the runner's owner project; an owner of its group."""
        if self._admin(request):
            return True
        if runner.runner_type == "project_type":
            return runner.project_id is not None and self._role(request, runner.project_id) >= MAINTAINER
        if runner.runner_type == "group_type":
            return runner.group_id is not None and self.access.group_role(request[_USER], runner.group_id) >= OWNER
        return False

    def _owned_runners(self, user: SimUser) -> list[SimRunner]:
        """app/models/user.rb ci_owned_runners: project runners of projects the user maintains
        and group runners of groups the user owns; membership only, no admin bypass."""
        group_of = self._group_of()
        out = []
        for r in self.runners:
            if r.runner_type == "project_type" and any(self.access.project_role(user, pid, group_of) >= MAINTAINER for pid in r.projects):
                out.append(r)
            elif r.runner_type == "group_type" and r.group_id is not None and self.access.group_role(user, r.group_id) >= OWNER:
                out.append(r)
        return out

    def _jobs_index_limited(self, request: web.Request) -> web.Response | None:
        """429 past jobs_index_limit requests a minute per user, with Retry-After and the
        RateLimit-* headers (lib/gitlab/application_rate_limiter.rb, lib/api/helpers/rate_limiter.rb)."""
        now = self._clock()
        hits = [t for t in self._jobs_index_hits.get(request[_USER].id, []) if now - t < 60]
        remaining = self.jobs_index_limit - len(hits)
        reset = int((hits[0] + 60 - now) + 1) if hits else 60
        headers = {"RateLimit-Name": "throttle_jobs_index", "RateLimit-Limit": str(self.jobs_index_limit),
                   "RateLimit-Observed": str(len(hits) + 1), "RateLimit-Remaining": str(max(0, remaining - 1)),
                   "RateLimit-Reset": str(int(now) + reset)}  # fmt: skip
        if remaining <= 0:
            self._jobs_index_hits[request[_USER].id] = hits
            return web.json_response({"message": "This endpoint has been requested too many times. Try again later."},
                                     status=429, headers=headers | {"Retry-After": str(reset)})  # fmt: skip
        self._jobs_index_hits[request[_USER].id] = hits + [now]
        request[_RATELIMIT] = headers
        return None

    @web.middleware
    async def _mw_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        mode, until = self._fault
        remaining = until - time.monotonic()
        if request.path.startswith(API + "/") and mode != "none" and remaining > 0:
            if mode == "500":
                return _error(500, "500 Internal Server Error")
            if mode == "reset":
                # GitLab down (a restart, a network cut): the connection drops without an answer
                if request.transport is not None:
                    request.transport.abort()
                raise web.HTTPServiceUnavailable()
            await asyncio.sleep(remaining)  # "timeout": hang until the fault window closes
        return await handler(request)

    @web.middleware
    async def _mw_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        _BASE_URL.set(f"{request.scheme}://{request.host}")
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error(404, "404 Not Found", key="error")
        except web.HTTPMethodNotAllowed:
            return _error(405, "405 Method Not Allowed", key="error")

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        """Body parameters: JSON (python-gitlab) or form (curl --data, gitlab-runner), plus query."""
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                params.update(body if isinstance(body, dict) else {})
            else:
                form = await request.post()
                for key in set(form.keys()):
                    values = form.getall(key)
                    params[key.removesuffix("[]")] = values if key.endswith("[]") else values[-1]
        return params

    def _paginate(self, request: web.Request, items: Sequence[Any]) -> web.Response:
        try:
            page = max(int(request.query.get("page", 1)), 1)
            per_page = min(max(int(request.query.get("per_page", DEFAULT_PER_PAGE)), 1), MAX_PER_PAGE)
        except ValueError:
            return _error(400, "page is invalid", key="error")
        total = len(items)
        pages = max((total + per_page - 1) // per_page, 1)
        body = items[(page - 1) * per_page: page * per_page]
        headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(total),
                   "X-Total-Pages": str(pages), "X-Next-Page": str(page + 1) if page < pages else "",
                   "X-Prev-Page": str(page - 1) if page > 1 else ""}
        base = request.url  # as the client addressed us (Host header), so python-gitlab follows it

        def link(n: int, rel: str) -> str:
            return f'<{base.update_query(page=str(n), per_page=str(per_page))}>; rel="{rel}"'

        links = ([link(page - 1, "prev")] if headers["X-Prev-Page"] else []) + (
            [link(page + 1, "next")] if headers["X-Next-Page"] else []) + [link(1, "first"), link(pages, "last")]
        headers["Link"] = ", ".join(links)
        return web.json_response(list(body), headers=headers)

    def _project_or_none(self, ref: str) -> SimProject | None:
        # An id when it matches INTEGER_ID_REGEX /^-?\d+$/ (Ruby's \d is ASCII only), else a full
        # path; neither found: 404 (lib/api/helpers.rb find_project).
        if ref.isascii() and ref.isdigit():
            return self._projects.get(int(ref))
        return next((p for p in self._projects.values() if p.path_with_namespace == ref), None)

    # ---------------------------------------------------------------- user API handlers
    async def _get_user(self, request: web.Request) -> web.Response:
        user = request[_USER]
        return web.json_response(self._user_obj() | {"id": user.id, "username": user.username, "name": user.username,
                                                     "is_admin": user.admin})

    async def _list_projects(self, request: web.Request) -> web.Response:
        return self._paginate(request, [self._project_obj(p) for p in sorted(self._projects.values(),
                                                                                 key=lambda p: -p.id)])

    async def _get_project(self, request: web.Request) -> web.Response:
        return web.json_response(self._project_obj(self._visible_project(request, request.match_info["pid"], role=10)))

    async def _get_group(self, request: web.Request) -> web.Response:
        gid = request.match_info["gid"]
        gid_int = int(gid) if gid.isascii() and gid.isdigit() else next((k for k, v in self._groups.items() if v == gid), -1)
        if gid_int not in self._groups:
            return _error(404, "404 Group Not Found")
        return web.json_response(self._group_obj(gid_int))

    def _group_obj(self, gid: int) -> dict[str, Any]:
        path = self._groups[gid]
        return {"id": gid, "name": path, "path": path, "full_path": path, "web_url": f"{self._base()}/groups/{path}"}

    async def _list_groups(self, request: web.Request) -> web.Response:
        """GET /groups (lib/api/groups.rb, app/finders/groups_finder.rb): an admin sees every
        group, others the groups they are members of (the double has no public groups);
        `min_access_level` keeps the groups where the user's own role is at least that, for
        admins too."""
        try:
            level = int(request.query.get("min_access_level", 0))
        except ValueError:
            return _error(400, "min_access_level is invalid", key="error")
        user = request[_USER]
        if level:
            gids = [g for g in self._groups if self.access.group_role(user, g) >= level]
        elif self._admin(request):
            gids = list(self._groups)
        else:
            gids = [g for g in self._groups if self.access.group_role(user, g) > 0]
        return self._paginate(request, [self._group_obj(g) for g in sorted(gids)])

    async def _list_group_projects(self, request: web.Request) -> web.Response:
        gid = request.match_info["gid"]
        if not (gid.isascii() and gid.isdigit()) or int(gid) not in self._groups:
            return _error(404, "404 Group Not Found")
        if not (self._admin(request) or self.access.group_role(request[_USER], int(gid)) >= 10):
            return _error(404, "404 Group Not Found")
        # lib/api/groups.rb: with_shared defaults to true, adding the projects shared with the group
        with_shared = _bool(request.query.get("with_shared", "true"))
        projects = [p for p in self._projects.values() if p.group_id == int(gid) or (with_shared and int(gid) in p.shared_with_groups)]
        # min_access_level: projects where the user's role (direct or inherited) is at least that
        # (app/finders/group_projects_finder.rb finder_params)
        if request.query.get("min_access_level"):
            level = int(request.query["min_access_level"])
            projects = [p for p in projects if self._role(request, p.id) >= level]
        return self._paginate(request, [self._project_obj(p) for p in sorted(projects, key=lambda p: -p.id)])

    async def _graphql(self, request: web.Request) -> web.Response:
        """The one GraphQL query the agent makes for an instance-wide queue: `Query.jobs`
        ("all jobs on this GitLab instance", admins only) with `statuses`, `first`, `after`;
        nodes carry global ids (gid://gitlab/Ci::Build/N) and Relay `pageInfo`. Anything else
        gets GraphQL's error shape (HTTP 200 with `errors`)."""
        try:
            body = await request.json()
            query, variables = str(body["query"]), dict(body.get("variables") or {})
        except (ValueError, KeyError, TypeError):
            return web.json_response({"errors": [{"message": "Invalid request"}]}, status=400)
        found = re.search(r"jobs\(\s*statuses:\s*\[([A-Z_,\s]*)\]", query)
        if found is None:
            return web.json_response({"errors": [{"message": "the simulator answers only Query.jobs(statuses: [...])"}]})
        statuses = {s.strip().lower() for s in found.group(1).split(",") if s.strip()}
        first = min(100, int(variables.get("first") or 100))
        offset = int(base64.b64decode(variables["after"]).decode()) if variables.get("after") else 0
        # Query.jobs is "all jobs on the instance", for administrators (app/graphql/resolvers/ci/all_jobs_resolver.rb)
        visible = self.jobs if self._admin(request) else []
        jobs = [j for j in sorted(visible, key=lambda j: -j.id) if j.status in statuses]
        page = jobs[offset : offset + first]
        nodes = [
            {
                "id": f"gid://gitlab/Ci::Build/{j.id}",
                "name": j.name,
                "status": j.status.upper(),
                "tags": list(j.tags),
                "createdAt": _iso(j.created_at),
                "queuedAt": _iso(j.queued_at),  # Types::Ci::JobType queued_at
                "project": {"id": f"gid://gitlab/Project/{j.project_id}"},
                "runner": None if j.runner_id is None else {"id": f"gid://gitlab/Ci::Runner/{j.runner_id}"},
            }
            for j in page
        ]
        end = offset + len(page)
        info = {"hasNextPage": end < len(jobs), "endCursor": base64.b64encode(str(end).encode()).decode() if page else None}
        return web.json_response({"data": {"jobs": {"nodes": nodes, "pageInfo": info}}})

    async def _list_jobs(self, request: web.Request) -> web.Response:
        project = self._visible_project(request, request.match_info["pid"])
        limited = self._jobs_index_limited(request)
        if limited is not None:
            return limited
        scopes = set(request.query.getall("scope[]", [])) | set(request.query.getall("scope", []))
        if scopes - JOB_SCOPES:
            return _error(400, "scope does not have a valid value", key="error")
        jobs = [j for j in self.jobs if j.project_id == project.id and (not scopes or j.status in scopes)]
        resp = self._paginate(request, [self._job_obj(j) for j in sorted(jobs, key=lambda j: -j.id)])
        resp.headers.update(request.get(_RATELIMIT, {}))
        return resp

    def _project_job(self, request: web.Request) -> SimJob | None:
        project = self._visible_project(request, request.match_info["pid"])
        job = self._jobs.get(int(request.match_info["jid"]))
        return job if project is not None and job is not None and job.project_id == project.id else None

    async def _get_job(self, request: web.Request) -> web.Response:
        job = self._project_job(request)
        return web.json_response(self._job_obj(job)) if job else _error(404, "404 Not found")

    async def _get_trace(self, request: web.Request) -> web.Response:
        job = self._project_job(request)
        return web.Response(body=bytes(job.trace), content_type="text/plain") if job else _error(404, "404 Not found")

    async def _cancel_job(self, request: web.Request) -> web.Response:
        job = self._project_job(request)
        if job is None:
            return _error(404, "404 Not found")
        return web.json_response(self._job_obj(self.cancel_job(job.id)), status=201)

    async def _create_runner(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        runner_type = p.get("runner_type")
        if runner_type is None:
            return _error(400, "runner_type is missing", key="error")
        if runner_type not in RUNNER_TYPES:
            return _error(400, "runner_type does not have a valid value", key="error")
        group_id = int(p["group_id"]) if p.get("group_id") not in (None, "") else None
        project_id = int(p["project_id"]) if p.get("project_id") not in (None, "") else None
        if runner_type == "group_type" and group_id not in self._groups:
            return _error(400 if group_id is None else 403, "400 Bad request - group_id is missing"
                          if group_id is None else "403 Forbidden")
        if runner_type == "project_type" and project_id not in self._projects:
            return _error(400 if project_id is None else 403, "400 Bad request - project_id is missing"
                          if project_id is None else "403 Forbidden")
        # app/services/ci/runners/create_runner_service.rb + the *_runner_strategy: an instance
        # runner needs an admin, a group runner the group's owner, a project runner a maintainer.
        user = request[_USER]
        allowed = self._admin(request) or (
            (runner_type == "group_type" and group_id is not None and self.access.group_role(user, group_id) >= OWNER)
            or (runner_type == "project_type" and project_id is not None and self._role(request, project_id) >= MAINTAINER)
        )
        if not allowed:
            return _error(403, "403 Forbidden - Insufficient permissions")
        note = p.get("maintenance_note")
        if note is not None and len(str(note)) > 1024:
            return _error(400, "maintenance_note is too long (maximum is 1024 characters)", key="error")
        if (refused := _maximum_timeout_refused(p.get("maximum_timeout"))) is not None:
            return refused
        with self._lock:
            self._ids["runner"] += 1
            runner = SimRunner(
                id=self._ids["runner"], token=_runner_token(runner_type), runner_type=runner_type,
                description=str(p.get("description") or ""), group_id=group_id, project_id=project_id,
                paused=_bool(p.get("paused", False)), locked=_bool(p.get("locked", False)),
                run_untagged=_bool(p.get("run_untagged", True)), tag_list=_tags(p.get("tag_list")),
                access_level=str(p.get("access_level") or "not_protected"),
                maximum_timeout=int(p["maximum_timeout"]) if p.get("maximum_timeout") else None,
                maintenance_note=note, created_at=self._clock(), creator_id=user.id,
                token_expires_at=self._clock() + self.runner_token_ttl_s if self.runner_token_ttl_s else None,
            )
            self._runners[runner.id] = runner
            self._registered.append(runner)
        return web.json_response({"id": runner.id, "token": runner.token, "token_expires_at": _iso(runner.token_expires_at)}, status=201)

    async def _assign_runner(self, request: web.Request) -> web.Response:
        """POST /projects/:id/runners (runner_id): enable a project runner in another project
        (lib/api/ci/runners.rb: authorize! :create_runner on the target, authenticate_enable_runner!)."""
        project = self._visible_project(request, request.match_info["pid"])
        if not (self._admin(request) or self._role(request, project.id) >= MAINTAINER):
            return _error(403, "403 Forbidden")
        p = await self._params(request)
        runner = self._runners.get(int(p.get("runner_id") or 0))
        if runner is None:
            return _error(404, "404 Runner Not Found")
        if runner.runner_type == "group_type":
            return _error(403, "403 Forbidden - Runner is a group runner")
        if not self._admin(request):
            if runner.locked:
                return _error(403, "403 Forbidden - Runner is locked")
            if not self._can_admin_runner(request, runner):  # :assign_runner
                return _error(403, "403 Forbidden - No access granted")
        if runner.runner_type != "project_type":
            return _error(400, "400 Bad request - Runner is not a project runner")
        if project.id in runner.projects:
            return _error(400, "Runner has already been taken", key="error")
        with self._lock:
            runner.assigned_projects.add(project.id)
        return web.json_response(self._runner_obj(runner), status=201)

    async def _unassign_runner(self, request: web.Request) -> web.Response:
        """DELETE /projects/:id/runners/:runner_id (authorize! :admin_project_runners; refused for
        the only project, app/services/ci/runners/unassign_runner_service.rb)."""
        project = self._visible_project(request, request.match_info["pid"])
        if not (self._admin(request) or self._role(request, project.id) >= MAINTAINER):
            return _error(403, "403 Forbidden")
        runner = self._runners.get(int(request.match_info["rid"]))
        if runner is None or project.id not in runner.projects:
            return _error(404, "404 Runner Not Found")
        if len(runner.projects) == 1:
            return _error(403, "403 Forbidden - Only one project associated with the runner. Please remove the runner instead")
        with self._lock:
            if runner.project_id == project.id:  # the owner project goes: the next one owns it
                runner.project_id = min(runner.assigned_projects)
                runner.assigned_projects.discard(runner.project_id)
            else:
                runner.assigned_projects.discard(project.id)
        return web.Response(status=204)

    async def _list_project_runners(self, request: web.Request) -> web.Response:
        """Ci::Runner.owned_or_instance_wide(project): its project runners and instance runners
        (authorize! :read_project_runners: maintainer)."""
        project = self._visible_project(request, request.match_info["pid"])
        if not (self._admin(request) or self._role(request, project.id) >= MAINTAINER):
            return _error(403, "403 Forbidden")
        runners = [r for r in self.runners if r.runner_type == "instance_type" or project.id in r.projects]
        return self._paginate(request, [self._runner_obj(r) for r in self._filtered_runners(request, runners)])

    async def _list_group_runners(self, request: web.Request) -> web.Response:
        """Ci::Runner.group_or_instance_wide(group) (authorize! :read_group_runners: owner)."""
        gid = request.match_info["gid"]
        if not (gid.isascii() and gid.isdigit()) or int(gid) not in self._groups:
            return _error(404, "404 Group Not Found")
        if not (self._admin(request) or self.access.group_role(request[_USER], int(gid)) >= OWNER):
            return _error(403, "403 Forbidden")
        runners = [r for r in self.runners if r.runner_type == "instance_type" or r.group_id == int(gid)]
        return self._paginate(request, [self._runner_obj(r) for r in self._filtered_runners(request, runners)])

    def _filtered_runners(self, request: web.Request, runners: Sequence[SimRunner]) -> list[SimRunner]:
        q = request.query
        # Grape `values:` ::Ci::Runner::AVAILABLE_STATUSES_INCL_DEPRECATED
        if q.get("status") and q["status"] not in ("active", "paused", "online", "offline", "never_contacted", "stale"):
            raise Denied(400, {"error": "status does not have a valid value"})
        wanted_tags = set(_tags(q.get("tag_list")))
        out = []
        for r in sorted(runners, key=lambda r: r.id):
            if r.id in self.skipped_in_listings:
                continue
            if q.get("type") and r.runner_type != q["type"]:
                continue
            if q.get("status") and not self._runner_scope(r, q["status"]):
                continue
            if "paused" in q and r.paused != _bool(q["paused"]):
                continue
            if not wanted_tags <= set(r.tag_list):
                continue
            out.append(r)
        return out

    async def _list_runners(self, request: web.Request) -> web.Response:
        owned = self._owned_runners(request[_USER])
        return self._paginate(request, [self._runner_obj(r) for r in self._filtered_runners(request, owned)])

    async def _list_all_runners(self, request: web.Request) -> web.Response:
        if not self._admin(request):  # authenticated_as_admin!
            return _error(403, "403 Forbidden")
        return self._paginate(request, [self._runner_obj(r) for r in self._filtered_runners(request, self.runners)])

    def _runner_for(self, request: web.Request) -> SimRunner:
        runner = self._runners.get(int(request.match_info["rid"]))
        if runner is None:
            raise not_found("Runner")
        return runner

    async def _get_runner(self, request: web.Request) -> web.Response:
        runner = self._runner_for(request)
        # authenticate_show_runner!: instance runners to everyone, others with :read_runner
        can_update = self._can_admin_runner(request, runner)
        if runner.runner_type != "instance_type" and not can_update:
            return _error(403, "403 Forbidden - No access granted")
        # RunnerDetails exposes `projects` only `if: options[:include_projects]`
        # (lib/api/entities/ci/runner_details.rb). lib/api/ci/runners.rb has passed no such option
        # (034daf00: never shown) and later an `include_projects` parameter defaulting to true
        # (newest read, 2026-12-06). The double takes the stricter reading: absent unless asked,
        # so no client can come to depend on it.
        include = _bool(request.query.get("include_projects", "false"))
        return web.json_response(self._runner_obj(runner, detail=True, can_update=can_update, include_projects=include))

    async def _update_runner(self, request: web.Request) -> web.Response:
        runner = self._runner_for(request)
        if not self._can_admin_runner(request, runner):
            return _error(403, "403 Forbidden - No access granted")
        p = await self._params(request)
        if (refused := _maximum_timeout_refused(p.get("maximum_timeout"))) is not None:
            return refused
        with self._lock:
            for key in ("paused", "locked", "run_untagged"):
                if key in p:
                    setattr(runner, key, _bool(p[key]))
            if "active" in p:  # deprecated inverse of paused
                runner.paused = not _bool(p["active"])
            if "tag_list" in p:
                runner.tag_list = _tags(p["tag_list"])
            for key in ("description", "access_level", "maintenance_note"):
                if key in p:
                    setattr(runner, key, p[key])
            if "maximum_timeout" in p:
                runner.maximum_timeout = int(p["maximum_timeout"]) if p["maximum_timeout"] else None
        self._bump_queue()  # Ci::Runner#tick_runner_queue on update
        return web.json_response(self._runner_obj(runner, detail=True))

    async def _delete_runner(self, request: web.Request) -> web.Response:
        runner = self._runner_for(request)
        # authenticate_delete_runner!: admins; otherwise not while assigned to several projects
        if not self._admin(request):
            if len(runner.projects) > 1:
                return _error(403, "403 Forbidden - Runner associated with more than one project")
            if not self._can_admin_runner(request, runner):
                return _error(403, "403 Forbidden - No access granted")
        with self._lock:
            self._runners.pop(runner.id, None)
        return web.Response(status=204)

    async def _runner_jobs(self, request: web.Request) -> web.Response:
        rid = self._runner_for(request).id
        status = request.query.get("status")
        if status and status not in ("running", "success", "failed", "canceled"):
            return _error(400, "status does not have a valid value", key="error")
        jobs = [j for j in self.jobs if j.runner_id == rid and (not status or j.status == status)]
        desc = request.query.get("sort", "desc") == "desc"
        return self._paginate(request, [self._job_obj(j) for j in sorted(jobs, key=lambda j: j.id, reverse=desc)])

    # ---------------------------------------------------------------- runner API handlers
    def _runner_by_token(self, token: Any) -> SimRunner | None:
        """The runner this token authenticates; an expired runner token authenticates nothing
        (app/models/ci/runner.rb token_expired?)."""
        if not isinstance(token, str) or not token:
            return None
        runner = next((r for r in self.runners if secrets.compare_digest(r.token.encode(), token.encode())), None)
        if runner is not None and runner.token_expires_at is not None and runner.token_expires_at <= self._clock():
            return None
        return runner

    async def _runner_from_body(self, request: web.Request) -> tuple[SimRunner | None, dict[str, Any], web.Response | None]:
        """The runner named by the body's `token`, or GitLab's 400 (no token) / 403 (unknown)."""
        p = await self._params(request)
        if not p.get("token"):
            return None, p, _error(400, "token is missing", key="error")
        runner = self._runner_by_token(p.get("token"))
        return runner, p, (_error(403, "403 Forbidden") if runner is None else None)

    async def _delete_runner_by_token(self, request: web.Request) -> web.Response:
        runner, _, refused = await self._runner_from_body(request)
        if refused is not None or runner is None:
            return refused or _error(403, "403 Forbidden")
        with self._lock:
            self._runners.pop(runner.id, None)
        return web.Response(status=204)

    async def _verify_runner(self, request: web.Request) -> web.Response:
        runner, p, refused = await self._runner_from_body(request)
        if refused is not None or runner is None:
            return refused or _error(403, "403 Forbidden")
        if p.get("system_id"):
            runner.system_ids.add(str(p["system_id"]))
        return web.json_response({"id": runner.id, "token": runner.token, "token_expires_at": None})

    async def _request_job(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        runner = self._runner_by_token(p.get("token"))
        if runner is None:
            return _error(403, "403 Forbidden")
        deadline = time.monotonic() + self.long_poll_s
        while True:
            with self._lock:
                runner.contacted_at = self._clock()
                if isinstance(p.get("info"), dict):
                    runner.info = {k: v for k, v in p["info"].items() if k != "features"}
                if p.get("system_id"):
                    runner.system_ids.add(str(p["system_id"]))
                pending = sorted((j for j in self._jobs.values() if j.status == "pending"), key=lambda j: j.id)
                job = next((j for j in pending if not runner.paused and self.can_pick(runner, j)), None)
                version = self._queue_version
            if job is not None:
                break
            # workhorse holds the request only while the runner's last_update is current
            left = deadline - time.monotonic()
            event = self._queue_changed
            if left <= 0 or event is None or p.get("last_update") != version:
                return web.Response(status=204, headers={"X-GitLab-Last-Update": version})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=left)
        with self._lock:
            job.status, job.started_at, job.runner_id = "running", self._clock(), runner.id
            job.token = "glcbt-" + secrets.token_urlsafe(20)
            if runner.maximum_timeout:
                job.timeout_s = min(job.timeout_s, runner.maximum_timeout)
            payload = self._job_payload(job, runner)
        self._emit(job)
        return web.json_response(payload, status=201)

    def _job_payload(self, job: SimJob, runner: SimRunner) -> dict[str, Any]:
        project = self._projects[job.project_id]
        repo = URL(self._base()).with_user("gitlab-ci-token").with_password(job.token or "")
        variables = {
            "CI": "true", "GITLAB_CI": "true", "CI_SERVER": "yes", "CI_SERVER_URL": self._base(),
            "CI_JOB_ID": str(job.id), "CI_JOB_NAME": job.name, "CI_JOB_STAGE": job.stage,
            "CI_JOB_URL": f"{self._base()}/{project.path_with_namespace}/-/jobs/{job.id}",
            "CI_PIPELINE_ID": str(job.pipeline_id), "CI_PROJECT_ID": str(project.id),
            "CI_PROJECT_NAME": project.name, "CI_PROJECT_PATH": project.path_with_namespace,
            "CI_COMMIT_SHA": job.sha, "CI_COMMIT_REF_NAME": job.ref, "CI_CONFIG_PATH": ".gitlab-ci.yml",
            "CI_RUNNER_ID": str(runner.id), "CI_RUNNER_DESCRIPTION": runner.description,
            "CI_RUNNER_TAGS": ", ".join(runner.tag_list),
        }
        var_list = [{"key": k, "value": v, "public": True, "masked": False} for k, v in variables.items()]
        var_list.append({"key": "CI_JOB_TOKEN", "value": job.token, "public": False, "masked": True})
        var_list += [{"key": k, "value": v, "public": False, "masked": False} for k, v in job.variables.items()]
        image: dict[str, Any] | None = None
        if job.image or job.image_platform:
            image = {"name": job.image or "", "entrypoint": None, "ports": [], "pull_policy": None}
            if job.image_platform:
                image["executor_opts"] = {"docker": {"platform": job.image_platform}}
        return {
            "id": job.id, "token": job.token, "allow_git_fetch": True,
            "job_info": {"id": job.id, "name": job.name, "stage": job.stage, "project_id": project.id,
                         "project_name": project.name, "time_in_queue_seconds": self._queued(job)},
            "git_info": {"repo_url": str(repo.join(URL(project.path_with_namespace + ".git"))), "ref": job.ref,
                         "sha": job.sha, "before_sha": "0" * 40, "ref_type": "branch",
                         "refspecs": [f"+refs/heads/{job.ref}:refs/remotes/origin/{job.ref}"], "depth": 20,
                         "repo_object_format": "sha1"},
            "runner_info": {"timeout": job.timeout_s, "runner_session_url": None},
            "variables": var_list,
            "steps": [{"name": "script", "script": job.script, "timeout": job.timeout_s, "when": "on_success",
                       "allow_failure": False}],
            "image": image, "services": [], "artifacts": None, "cache": [],
            "credentials": [{"type": "registry", "url": URL(self._base()).host, "username": "gitlab-ci-token",
                             "password": job.token}],
            "dependencies": [],
            "features": {"trace_sections": True, "token_mask_prefixes": ["glrt-", "glcbt-"],
                         "failure_reasons": ["script_failure", "runner_system_failure", "job_execution_timeout"]},
        }

    def _job_for_token(self, request: web.Request, token: Any) -> tuple[SimJob | None, web.Response | None]:
        job = self._jobs.get(int(request.match_info["jid"]))
        if job is None:
            return None, _error(404, "404 Not Found")
        if not (isinstance(token, str) and job.token and secrets.compare_digest(job.token.encode(), token.encode())):
            return None, _error(403, "403 Forbidden")
        if job.status != "running":
            resp = _error(403, "403 Forbidden  - Job is not running")
            resp.headers["Job-Status"] = job.status
            return None, resp
        return job, None

    async def _patch_trace(self, request: web.Request) -> web.Response:
        job, refused = self._job_for_token(request, request.headers.get("Job-Token") or request.query.get("token"))
        if job is None:
            return refused  # type: ignore[return-value]
        content_range = request.headers.get("Content-Range")
        if not content_range:
            return _error(400, "400 Missing header Content-Range")
        body = await request.read()
        start = int(content_range.split("-", 1)[0] or 0)
        with self._lock:
            # GitLab checks only the start: gitlab-runner's end offset is off by one (runner#3275)
            if start != len(job.trace):
                return web.Response(status=416, headers={"Range": f"0-{len(job.trace)}"})
            job.trace += body
        return web.Response(status=202, headers={
            "Job-Status": job.status, "Range": f"0-{len(job.trace)}",
            "X-GitLab-Trace-Update-Interval": str(self.trace_update_interval_s)})

    async def _update_job(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        job, refused = self._job_for_token(request, p.get("token"))
        if job is None:
            return refused  # type: ignore[return-value]
        state = p.get("state")
        output: dict[str, Any] = p["output"] if isinstance(p.get("output"), dict) else {}
        if state in ("success", "failed") and output.get("bytesize") is not None and int(output["bytesize"]) != len(job.trace):
            # The final update waits for the whole trace: 202 until GitLab has every byte the
            # runner says it wrote (app/services/ci/update_build_state_service.rb).
            return web.Response(status=202, text="202", headers={"Job-Status": job.status, "Range": f"0-{len(job.trace)}"})
        if state in ("success", "failed"):
            if p.get("exit_code") is not None:
                job.exit_code = int(p["exit_code"])
            self._finish(job, state, str(p.get("failure_reason") or "script_failure"))
        elif state not in (None, "running", "pending"):
            return _error(400, "state does not have a valid value", key="error")
        return web.Response(status=200, text="200", headers={
            "Job-Status": job.status, "X-GitLab-Trace-Update-Interval": str(self.trace_update_interval_s)})

    # ---------------------------------------------------------------- /_sim control surface
    async def _sim_add_job(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        script = p.get("script") or ["echo hello"]
        job = self.add_job(
            project_id=int(p.get("project_id", 1)), tags=_tags(p.get("tags")), name=str(p.get("name", "job")),
            script=[script] if isinstance(script, str) else list(script), image_platform=p.get("image_platform"),
            stage=str(p.get("stage", "test")), image=p.get("image"), variables=p.get("variables") or None,
        )
        return web.json_response(self._job_obj(job), status=201)

    async def _sim_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _sim_faults(self, request: web.Request) -> web.Response:
        p = await self._params(request)
        try:
            self.set_fault(str(p.get("mode", "none")), float(p.get("seconds", 0)))
        except ValueError as exc:
            return _error(400, str(exc), key="error")
        return web.json_response({"mode": p.get("mode", "none"), "seconds": float(p.get("seconds", 0))})


def _presented_token(request: web.Request) -> str:
    """The PRIVATE-TOKEN header, else an `Authorization: Bearer` one (lib/gitlab/auth/auth_finders.rb)."""
    token = request.headers.get("PRIVATE-TOKEN") or ""
    auth = request.headers.get("Authorization", "")
    if not token and auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    return token


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
