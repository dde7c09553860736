"""The GitLab adapter: pending jobs for the configured scope, and this host's runner
registrations. A thin layer over python-gitlab; callers see our models and one error type.

API calls per observation (docs/runners/gitlab-api-cost.md):
- scope `projects`: one `GET /projects/:id/jobs?scope[]=pending&scope[]=running` per project
  (+1 per 100 jobs beyond the first page);
- scope `groups`: one `GET /groups/:id/projects?include_subgroups=true` per group per 100
  projects (cached for `project_refresh` seconds), then as `projects`; a token that is not an
  administrator's also asks, at each refresh, which groups its user owns and, per group it does
  not own, which projects it maintains (ADR-011);
- scope `instance`: one GraphQL `Query.jobs(statuses: [PENDING, RUNNING])` per 100 jobs,
  whatever the number of projects (admin token: that query is empty for other users);
- registrations: one `GET /runners?type=...` per 100 runners (no type under a groups scope,
  whose project runners are ours too), made every pass.
Every call has a timeout; 429 and 5xx are retried with backoff (python-gitlab's
retry_transient_errors, honouring Retry-After) up to `max_retries` times.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import gitlab
import gitlab.exceptions as glexc
import requests
from pydantic import Field, SecretStr, ValidationError, field_validator

from ..config import GitLabConfig
from ..digits import parse_uint
from ..errors import AdapterError
from ..model import Frozen, Job, UnreadProject, UtcDatetime

__all__ = ["GitLabAdapter", "GitLabError", "Registration", "CreatedRunner", "RunningJob", "QueueSnapshot", "description_prefix"]

T = TypeVar("T")

log = logging.getLogger("autogit.gitlab")


class GitLabError(AdapterError):
    """Any failure talking to GitLab; str() is one line and never holds a token. `status` is
    GitLab's HTTP status (None: unreachable); `permission` marks a refusal that retrying
    cannot fix until an operator changes the token, its scopes or its user's role. A branch of
    the adapters' error tree (agent/errors.py), so the reconciler catches one family."""

    def __init__(self, message: str, status: int | None = None, permission: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.permission = permission


def _refusal(exc: glexc.GitlabError, what: str, needs: str) -> GitLabError:
    """GitLab's refusal as one line naming the missing scope or role (lib/api/api_guard.rb
    renders insufficient_scope with the scopes that would do; forbidden! carries the reason)."""
    code = getattr(exc, "response_code", None)
    body: Any = getattr(exc, "error_message", "") or ""
    if isinstance(body, dict):
        detail = str(body.get("error_description") or body.get("message") or body.get("error") or body)
        scopes = body.get("scope")
    else:
        detail, scopes = str(body), None
    try:
        raw = (getattr(exc, "response_body", b"") or b"").decode(errors="replace")
        if raw.startswith("{"):
            doc = json.loads(raw)
            scopes = scopes or doc.get("scope")
            detail = str(doc.get("error_description") or doc.get("message") or detail)
    except ValueError:
        pass
    detail = detail[:200]
    if code == 401:
        return GitLabError(f"GitLab refused the token ({detail}) for {what}: give the agent a valid token", code, permission=True)
    if code == 403 and scopes:
        return GitLabError(f"the GitLab token lacks a scope for {what}: it needs one of: {scopes}", code, permission=True)
    if code == 403:
        return GitLabError(f"GitLab refused {what} ({detail}): the token's user needs {needs}", code, permission=True)
    return GitLabError(f"GitLab answered {code or 'an error'} to {what}: {detail}", code)


def _redirected(exc: requests.TooManyRedirects, what: str) -> GitLabError:
    """A redirect the adapter refused to follow, in one line: where it pointed (scheme, host and
    port only: a path or query could carry anything) and the setting to fix."""
    response = exc.response
    status = response.status_code if response is not None else None
    try:
        target = urlsplit((response.headers.get("Location") or "") if response is not None else "")
        where = f"{target.scheme}://{target.hostname}" + (f":{target.port}" if target.port else "") if target.hostname else "another path"
    except ValueError:  # a Location with a bad port
        where = "an address that is not a URL"
    return GitLabError(
        f"GitLab redirected {what} ({status or 'a redirect'}) to {where}: set gitlab.url to the address GitLab's API answers on "
        "(the agent follows no redirect: it would carry the token there)", status,
    )  # fmt: skip


class Registration(Frozen):
    id: int
    description: str
    tags: list[str] = Field(default_factory=list)
    status: str | None = Field(
        None, description="GitLab's REST status (deprecated_rest_status): online, offline, stale, never_contacted, or paused for a "
        "paused runner whether it is online or not; read `online` and `paused` for those."
    )
    paused: bool = False
    run_untagged: bool = False
    online: bool | None = Field(None, description="GitLab's `online` (contacted within its online window); None: not said.")
    contacted_at: UtcDatetime | None = Field(None, description="From GET /runners/:id (the list entity lacks it); None: not read.")
    reach: str | None = Field(None, description="Where it is registered (`group:<id>`, `project:<id>`), from its details; None: instance-wide or not read.")

    @property
    def host(self) -> str | None:
        """The host named in an `autogit:<host>:<name>` description."""
        parts = self.description.split(":", 2)
        return parts[1] if len(parts) == 3 and parts[0] == "autogit" else None

    @property
    def name(self) -> str:
        return self.description.split(":", 2)[-1]


class CreatedRunner(Frozen):
    id: int
    token: SecretStr


class RunningJob(Frozen):
    id: int
    project_id: int
    runner_id: int | None
    tags: list[str] = Field(default_factory=list, description="GitLab's tag_list.")
    queued_duration: float | None = Field(None, description="GitLab's queued_duration: seconds from pending to running; None: not given.")

    @field_validator("queued_duration", mode="before")
    @classmethod
    def _seconds_or_unknown(cls, value: object) -> object:
        # Anything but a number of seconds is unknown: never an error that stops the observation.
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None


class QueueSnapshot(Frozen):
    pending: list[Job]
    running: list[RunningJob]
    problems: list[str] = Field(default_factory=list, description="Projects that could not be read, one line each.")
    unread: list[UnreadProject] = Field(
        default_factory=list, description="The projects behind `problems`: their jobs, pending or running, are unknown this read."
    )


def _reach_of_runner(row: dict[str, Any]) -> str | None:
    """Where a runner is registered, from GET /runners/:id (lib/api/entities/ci/runner_details.rb:
    `groups` of a group runner, `projects` of a project runner, the first one it was created in)."""
    kind = row.get("runner_type")
    if kind == "group_type" and row.get("groups"):
        return f"group:{row['groups'][0]['id']}"
    if kind == "project_type" and row.get("projects"):
        return f"project:{row['projects'][0]['id']}"
    return None


def description_prefix(hostname: str) -> str:
    """Every runner this host registers is described `autogit:<host>:<name>`; the fleet view and
    leak clean-up find this host's registrations by it."""
    return f"autogit:{hostname}:"


def _gid(global_id: str) -> int:
    """GraphQL global id → REST id: 'gid://gitlab/Ci::Build/123' → 123."""
    return int(global_id.rsplit("/", 1)[1])


def _row_problem(job_id: object, project_id: object, exc: ValidationError) -> str:
    """One line naming the job and the field GitLab accepted but our models refuse, e.g. a tag
    with a comma (GitLab keeps a quoted one whole: lib/gitlab/ci/tags/parser.rb)."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "row"
    return f"job {job_id} of project {project_id} skipped: {field}: {first['msg']} (input {first.get('input')!r})"[:300]


def _job_from_api(data: dict[str, Any], project_id: int, reach: str | None = None) -> Job:
    # Ci::Build#queued_duration: seconds in the queue so far. What the job spent before it was
    # queued (waiting for earlier stages) is its age less that, counted in whole seconds so that
    # two reads of the same job agree.
    queued = data.get("queued_duration")
    queued_at = None
    if data.get("status") == "pending" and isinstance(queued, int | float) and data.get("created_at"):
        created = datetime.fromisoformat(str(data["created_at"]).replace("Z", "+00:00"))
        waited_before = round((datetime.now(UTC) - created).total_seconds() - float(queued))
        queued_at = created + timedelta(seconds=max(0, waited_before))
    return Job(
        id=data["id"],
        queued_at=queued_at,
        project_id=(data.get("pipeline") or {}).get("project_id", project_id),
        tags=data.get("tag_list") or [],
        created_at=data["created_at"],
        name=data.get("name"),
        web_url=data.get("web_url"),
        reach=[reach] if reach else [],
    )


class GitLabAdapter:
    def __init__(self, config: GitLabConfig, token: SecretStr, project_refresh: float = 300.0) -> None:
        if config.url is None:
            raise ValueError("gitlab.url is not set")
        self.config = config
        self._gl = gitlab.Gitlab(
            str(config.url).rstrip("/"),
            private_token=token.get_secret_value(),
            timeout=config.request_timeout,
            retry_transient_errors=config.max_retries > 0,
            ssl_verify=str(config.ca_file) if config.ca_file else config.verify_tls,
            per_page=100,
        )
        self._project_refresh = project_refresh
        # GitLab's GraphQL docs authenticate with a bearer token (a personal access token works).
        self._graphql_headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        self._projects: list[int] = []
        self._projects_at = 0.0
        # python-gitlab takes max_retries per request (with retry_transient_errors, on 429/5xx).
        self._retry: dict[str, Any] = {"max_retries": config.max_retries}
        self.calls = 0  # API calls made (for the cost figures and metrics)
        self._is_admin: bool | None = None
        self._group_of: dict[int, int] = {}  # project → the configured group it was found under
        self._runner_tags: dict[int, list[str]] = {}  # GET /runners/:id, once per runner
        self._runner_untagged: dict[int, bool] = {}
        self._runner_reach: dict[int, str | None] = {}
        self._runner_contacted: dict[int, datetime | None] = {}
        # GitLab's RateLimit-* answer headers (lib/gitlab/application_rate_limiter.rb), last seen
        self.rate_limit: dict[str, int] = {}
        self._bad_rows: set[int] = set()  # pending jobs our models refuse, said once each
        # ADR-011: groups not owned by the token's user, said once each; a project it maintains
        self._fallback_said: set[int] = set()
        self._fallback_project: int | None = None
        self._not_owned: set[int] = set()
        self._gl.session.hooks["response"].append(self._note_rate_limit)
        # No redirect is followed: requests would resend the PRIVATE-TOKEN header and the body
        # (a runner token) to wherever Location points (it strips only Authorization on a host
        # change), and python-gitlab's RedirectError quotes the redirected URL. GitLab's API
        # answers where gitlab.url says; a redirect means that setting is wrong (_call says so).
        self._gl.session.max_redirects = 0

    # --- plumbing -----------------------------------------------------------------------------
    def on_answer(self, hook: Callable[[requests.Response], object]) -> None:
        """Call `hook` with each HTTP answer GitLab gives this adapter, retries included (metrics)."""
        self._gl.session.hooks["response"].append(hook)

    def _note_rate_limit(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        for header in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            value = parse_uint(resp.headers.get(header))
            if value is not None:
                self.rate_limit[header.split("-", 1)[1].lower()] = value

    def min_poll_interval(self, now: float | None = None) -> float:
        """Seconds between full polls that keep the jobs listing within GitLab's per-user limit
        (600 a minute by default: lib/api/ci/jobs.rb jobs_index), using at most half of it so the
        user's other clients and this host's webhook lookups keep room; longer while GitLab said
        the budget is spent."""
        per_pass = max(1, len(self._projects) if self.config.scope.kind == "groups" else len(self.config.scope.projects))
        limit = self.rate_limit.get("limit") or 600
        interval = per_pass * 60.0 / (limit / 2)
        if self.rate_limit.get("remaining") == 0 and "reset" in self.rate_limit:
            interval = max(interval, self.rate_limit["reset"] - (now if now is not None else time.time()))
        return interval

    async def _call(self, fn: Callable[[], T], what: str = "a GitLab API call", needs: str = "access to it") -> T:
        """Run one blocking python-gitlab call in a thread, mapping every error to GitLabError."""

        def counted() -> T:
            self.calls += 1
            return fn()

        try:
            return await asyncio.to_thread(counted)
        except glexc.GitlabError as exc:
            raise _refusal(exc, what, needs) from None
        except requests.TooManyRedirects as exc:
            raise _redirected(exc, what) from None
        except requests.RequestException as exc:
            raise GitLabError(f"GitLab unreachable: {type(exc).__name__}") from None

    def _list(self, path: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        # http_list with iterator=True follows GitLab's pagination (Link / X-Next-Page headers).
        return list(self._gl.http_list(path, query_data={**query, "per_page": 100}, iterator=True, **self._retry))

    # --- queue --------------------------------------------------------------------------------
    async def _scope_projects(self) -> list[int]:
        scope = self.config.scope
        if scope.kind == "projects":
            return list(scope.projects)
        if self._projects and time.monotonic() - self._projects_at < self._project_refresh:
            return self._projects
        ids: set[int] = set()
        for group in scope.groups:
            # with_shared defaults to true (lib/api/groups.rb): projects of other namespaces shared
            # with the group come only when configured, and a group runner never reaches them
            # (they get project runners of their own).
            for shared in (False, True) if scope.include_shared else (False,):
                query = {"include_subgroups": True, "simple": True, "with_shared": shared}
                rows = await self._call(partial(self._list, f"/groups/{group}/projects", query),
                                        f"GET /groups/{group}/projects", f"a membership of group {group}")  # fmt: skip
                for r in rows:
                    if r["id"] not in ids:
                        ids.add(r["id"])
                        self._group_of[r["id"]] = -r["id"] if shared else group
        if self._scope_runner_type() == "group_type":
            await self._project_runners_where_not_owner()
        self._projects, self._projects_at = sorted(ids), time.monotonic()
        return self._projects

    async def _project_runners_where_not_owner(self) -> None:
        """ADR-011. GitLab lets only a group's Owners (and admins) create group runners
        (app/policies/group_policy.rb: `rule { owner }` enables :create_runner), and a project's
        Maintainers create its project runners (app/policies/project_policy.rb). For a configured
        group the token's user does not own, its projects where the user is a Maintainer are
        served by project runners of their own (reach `project:<id>`), said once per group; the
        others keep the group reach, whose refusal names the Owner role. Two calls per refresh:
        `GET /groups?min_access_level=50`, then the group's projects at Maintainer
        (app/finders/groups_finder.rb, group_projects_finder.rb: min_access_level)."""
        self._fallback_project, self._not_owned = None, set()
        if await self.admin():
            return
        owned_rows = await self._call(partial(self._list, "/groups", {"min_access_level": 50, "all_available": False}),
                                      "GET /groups?min_access_level=50", "a valid token")  # fmt: skip
        owned = {int(r["id"]) for r in owned_rows}
        for group in self.config.scope.groups:
            if group in owned:
                continue
            self._not_owned.add(group)
            query = {"include_subgroups": True, "simple": True, "with_shared": False, "min_access_level": 40}
            rows = await self._call(partial(self._list, f"/groups/{group}/projects", query),
                                    f"GET /groups/{group}/projects?min_access_level=40", f"a membership of group {group}")  # fmt: skip
            maintained = sorted(int(r["id"]) for r in rows if self._group_of.get(int(r["id"])) == group)
            for project in maintained:
                self._group_of[project] = -project  # a project runner of its own, as a shared project
            if maintained and self._fallback_project is None:
                self._fallback_project = maintained[0]
            if maintained and group not in self._fallback_said:
                # with no project to fall back to, the registration's refusal (one line naming
                # the Owner role) says it all
                self._fallback_said.add(group)
                log.warning("group %s: the token's user is not its Owner, and only Owners create group runners; "
                            "its %d project(s) where the user is a Maintainer are served with project runners", group, len(maintained))  # fmt: skip

    def in_scope(self, project_id: int) -> bool:
        """Whether `project_id` is in the configured scope as last read: any project of an
        `instance` scope, a listed one of a `projects` scope, a discovered one of a `groups`
        scope (none before the first discovery: a webhook's lookup then waits for the poll)."""
        kind = self.config.scope.kind
        if kind == "instance":
            return True
        if kind == "projects":
            return project_id in self.config.scope.projects
        return project_id in self._projects

    def reach_of(self, project_id: int) -> str | None:
        """Where a runner that serves this project's jobs is registered: `project:<id>` of the
        scope's first project (the others are assigned), `group:<id>` of the configured group the
        project was found under (a group runner serves its group and subgroups only), or None for
        an instance runner."""
        runner_type = self._scope_runner_type()
        if runner_type == "group_type":
            group = self._group_of.get(project_id)
            if group is not None and group < 0:  # shared into the group: a project runner of its own
                return f"project:{project_id}"
            return f"group:{group}" if group is not None else None
        if runner_type == "project_type":
            return f"project:{self.config.scope.projects[0]}"
        return None

    async def observe_queue(self) -> QueueSnapshot:
        """Pending jobs (the planner's input) and running ones (who is busy), in one call per
        project: `scope[]=pending&scope[]=running`; instance-wide, one GraphQL query."""
        if self.config.scope.kind == "instance":
            return await self._observe_instance_queue()
        pending: list[Job] = []
        running: list[RunningJob] = []
        problems: list[str] = []
        unread: list[UnreadProject] = []
        projects = await self._scope_projects()
        for project in projects:
            try:
                rows = await self._call(partial(self._list, f"/projects/{project}/jobs", {"scope[]": ["pending", "running"]}),
                                        f"GET /projects/{project}/jobs", f"the Reporter role in project {project}")  # fmt: skip
            except GitLabError as exc:
                if exc.status == 401 or (exc.status not in (403, 404) and len(unread) + 1 == len(projects)):
                    raise  # the token refused outright, or GitLab answered for no project: the whole observation is unknown
                # One project refused, gone or timed out: the others are still served, and what
                # runs in this one is unknown, never read as nothing (ISSUE 19, 5a).
                line = str(exc) if exc.status != 404 else f"project {project}: not found, or not visible to the token's user"
                problems.append(line)
                unread.append(UnreadProject(project_id=project, reach=self.reach_of(project), error=line))
                continue
            reach = self.reach_of(project)
            for row in rows:
                if row.get("status") == "pending":
                    job = self._parse_row(row.get("id"), project, partial(_job_from_api, row, project, reach))
                    if job is not None:
                        pending.append(job)
                elif row.get("status") == "running":
                    runner = row.get("runner") or {}
                    running.append(RunningJob(id=row["id"], project_id=project, runner_id=runner.get("id"), tags=row.get("tag_list") or [], queued_duration=row.get("queued_duration")))
        return QueueSnapshot(pending=pending, running=running, problems=problems, unread=unread)

    def _parse_row(self, job_id: Any, project_id: Any, parse: Callable[[], Job]) -> Job | None:
        """One pending row as a Job, or None: a row GitLab accepts but our models refuse is
        skipped, with one log line naming the job and the field the first time it is seen, so
        that the rest of the queue is planned (a bad row never stops the others)."""
        try:
            return parse()
        except ValidationError as exc:
            if isinstance(job_id, int) and job_id not in self._bad_rows:
                self._bad_rows.add(job_id)
                log.warning("%s", _row_problem(job_id, project_id, exc))
            return None

    _JOBS_QUERY = (
        "query($after: String) { jobs(statuses: [PENDING, RUNNING], first: 100, after: $after) {"
        " nodes { id name status tags createdAt queuedAt queuedDuration project { id } runner { id } }"
        " pageInfo { hasNextPage endCursor } } }"
    )

    def _graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        # python-gitlab's GraphQL client is experimental (no pagination, no rate limits): one
        # POST through its session, with its auth headers, timeout and TLS settings.
        url = self._gl.url.rstrip("/") + "/api/graphql"
        for attempt in range(self.config.max_retries + 1):
            resp = self._gl.session.post(
                url, json={"query": query, "variables": variables}, headers=self._graphql_headers,
                timeout=self.config.request_timeout, verify=self._gl.ssl_verify,
            )  # fmt: skip
            if resp.status_code in (429, 500, 502, 503, 504) and attempt < self.config.max_retries:
                time.sleep(float(resp.headers.get("Retry-After") or 0.5 * 2**attempt))
                continue
            if resp.status_code != 200:
                raise GitLabError(f"GitLab answered {resp.status_code} to GraphQL")
            doc = resp.json()
            if doc.get("errors"):
                raise GitLabError(f"GitLab GraphQL error: {str(doc['errors'][0].get('message'))[:200]}")
            return doc["data"]
        raise GitLabError("GitLab GraphQL: retries exhausted")

    async def _observe_instance_queue(self) -> QueueSnapshot:
        pending: list[Job] = []
        running: list[RunningJob] = []
        after: str | None = None
        while True:
            data = await self._call(partial(self._graphql, self._JOBS_QUERY, {"after": after}))
            jobs = data["jobs"]
            for node in jobs["nodes"]:
                job_id, project_id = _gid(node["id"]), _gid(node["project"]["id"])
                if node["status"] == "PENDING":
                    job = self._parse_row(job_id, project_id, partial(
                        Job, id=job_id, project_id=project_id, tags=node.get("tags") or [], created_at=node["createdAt"],
                        queued_at=node.get("queuedAt"), name=node.get("name")))  # fmt: skip
                    if job is not None:
                        pending.append(job)
                elif node["status"] == "RUNNING":
                    runner = node.get("runner")
                    running.append(RunningJob(id=job_id, project_id=project_id, runner_id=_gid(runner["id"]) if runner else None,
                                              tags=node.get("tags") or [], queued_duration=node.get("queuedDuration")))  # fmt: skip
            if not jobs["pageInfo"]["hasNextPage"]:
                return QueueSnapshot(pending=pending, running=running)
            after = jobs["pageInfo"]["endCursor"]

    async def get_job(self, project_id: int, job_id: int) -> tuple[str, Job]:
        """One job (webhooks carry no tags, so the agent fetches the job): (status, job)."""
        row = await self._call(lambda: self._gl.http_get(f"/projects/{project_id}/jobs/{job_id}", **self._retry),
                               f"GET /projects/{project_id}/jobs/{job_id}", f"the Reporter role in project {project_id}")  # fmt: skip
        assert isinstance(row, dict)
        try:
            return row.get("status", ""), _job_from_api(row, project_id, self.reach_of(project_id))
        except ValidationError as exc:
            raise GitLabError(_row_problem(job_id, project_id, exc)) from None

    # --- registrations ----------------------------------------------------------------------------
    def _scope_runner_type(self) -> str:
        return self.config.runner_type or {"instance": "instance_type", "groups": "group_type", "projects": "project_type"}[self.config.scope.kind]

    def _runner_target(self, reach: str | None = None) -> dict[str, Any]:
        scope = self.config.scope
        runner_type = self._scope_runner_type()
        target: dict[str, Any] = {"runner_type": runner_type}
        if runner_type == "group_type" and reach and reach.startswith("project:"):
            target = {"runner_type": "project_type", "project_id": int(reach.split(":", 1)[1])}
        elif runner_type == "group_type" and reach is None and self._fallback_project is not None and scope.groups[0] in self._not_owned:
            # a registration with no job to reach (the fleet's presence) where the first group
            # is not owned: a project runner of a project the user maintains (ADR-011)
            target = {"runner_type": "project_type", "project_id": self._fallback_project}
        elif runner_type == "group_type":
            target["group_id"] = int(reach.split(":", 1)[1]) if reach and reach.startswith("group:") else scope.groups[0]
        elif runner_type == "project_type":
            target["project_id"] = scope.projects[0]
        return target

    @staticmethod
    def _needs(target: dict[str, Any]) -> str:
        """Who may create (and delete) such a runner (app/services/ci/runners/create_runner_service.rb)."""
        if target["runner_type"] == "group_type":
            return f"the Owner role in group {target['group_id']}"
        if target["runner_type"] == "project_type":
            return f"the Maintainer role in project {target['project_id']}"
        return "administrator access (and, with Admin Mode on, the admin_mode scope)"

    async def create_runner(self, description: str, tags: Iterable[str], run_untagged: bool, reach: str | None = None,
                            maximum_timeout: int | None = None) -> CreatedRunner:  # fmt: skip
        """POST /user/runners (the runner-authentication-token workflow); the token comes back once."""
        target = self._runner_target(reach)
        multi_project = self.config.scope.kind == "projects" and target["runner_type"] == "project_type" and len(self.config.scope.projects) > 1
        data = {
            **target,
            "description": description,
            "tag_list": list(tags),
            "run_untagged": run_untagged,
            # A locked runner cannot be assigned to other projects by non-admins ("Runner is
            # locked", lib/api/ci/runners.rb); a single-project runner stays locked.
            "locked": not multi_project,
            "maintenance_note": "Managed by autogit-agent; it deletes this runner when the runner goes.",
        }
        if maximum_timeout:
            data["maximum_timeout"] = maximum_timeout
        row = await self._call(lambda: self._gl.http_post("/user/runners", post_data=data, **self._retry),
                               "POST /user/runners", self._needs(target))  # fmt: skip
        assert isinstance(row, dict)
        created = CreatedRunner(id=row["id"], token=SecretStr(row["token"]))
        if multi_project:
            # A project runner serves its own project only; enable it in the scope's others
            # (POST /projects/:id/runners, "Assign a runner to project": scope api, Maintainer).
            try:
                for project in self.config.scope.projects[1:]:
                    await self._call(
                        partial(self._gl.http_post, f"/projects/{project}/runners", post_data={"runner_id": created.id}, **self._retry),
                        f"POST /projects/{project}/runners", f"the Maintainer role in project {project}",
                    )
            except GitLabError:
                await self.delete_runner(created.id, created.token)  # never leave a half-made registration
                raise
        return created

    async def delete_runner(self, runner_id: int, token: SecretStr | None = None, *, unassign: bool = True) -> None:
        """With the runner's own token when the agent still has it: `DELETE /runners` of the
        runner API needs no user scope or role at all (lib/api/ci/runner.rb), on every GitLab
        version. Otherwise by id (scope manage_runner from 17.1, else api); a project runner
        assigned to several projects is unassigned first, as non-admins must."""
        if token is not None:
            try:
                # In the JSON body, as gitlab-runner sends it (network/gitlab.go UnregisterRunner,
                # doJSON), never in the query string: a URL lands in proxy and access logs.
                await self._call(lambda: self._gl.http_delete("/runners", post_data={"token": token.get_secret_value()}, **self._retry),
                                 "DELETE /runners (runner token)", "nothing")  # fmt: skip
                return
            except GitLabError as exc:
                if exc.status not in (403, 404):  # 403: the token is no longer valid; try by id
                    raise
        try:
            await self._call(lambda: self._gl.http_delete(f"/runners/{runner_id}", **self._retry),
                             f"DELETE /runners/{runner_id}", self._needs(self._runner_target()))  # fmt: skip
        except GitLabError as exc:
            if exc.status == 404:  # already gone: the goal is reached
                return
            if exc.status == 403 and "more than one project" in str(exc) and unassign:
                for project in self.config.scope.projects[1:]:
                    try:
                        await self._call(partial(self._gl.http_delete, f"/projects/{project}/runners/{runner_id}", **self._retry),
                                         f"DELETE /projects/{project}/runners/{runner_id}", f"the Maintainer role in project {project}")  # fmt: skip
                    except GitLabError as inner:
                        if inner.status != 404:
                            raise
                await self.delete_runner(runner_id, unassign=False)
                return
            raise

    async def runner_exists(self, runner_id: int) -> bool | None:
        """GET /runners/:id: True, False (404: GitLab says it is gone), or None (cannot tell)."""
        try:
            row = await self._call(lambda: self._gl.http_get(f"/runners/{runner_id}", **self._retry), f"GET /runners/{runner_id}",
                                   self._needs(self._runner_target()))  # fmt: skip
        except GitLabError as exc:
            if exc.status == 404:
                return False
            return None
        if isinstance(row, dict):
            self._runner_tags[runner_id] = list(row.get("tag_list") or [])
            self._runner_untagged[runner_id] = bool(row.get("run_untagged"))
            self._runner_reach[runner_id] = _reach_of_runner(row)
            contacted = row.get("contacted_at")
            self._runner_contacted[runner_id] = datetime.fromisoformat(str(contacted).replace("Z", "+00:00")) if contacted else None
        return True

    async def set_paused(self, runner_id: int, paused: bool = True) -> None:
        """PUT /runners/:id paused: GitLab assigns a paused runner no new job, so none lands on a
        runner that is draining (scope manage_runner from 17.1, else api)."""
        await self._call(lambda: self._gl.http_put(f"/runners/{runner_id}", post_data={"paused": paused}, **self._retry),
                         f"PUT /runners/{runner_id}", self._needs(self._runner_target()))  # fmt: skip

    async def admin(self) -> bool:
        """Whether the token acts as an administrator (GET /user is_admin; /runners/all then
        tells whether Admin Mode lets it)."""
        if self._is_admin is None:
            row = await self._call(lambda: self._gl.http_get("/user", **self._retry), "GET /user", "a valid token")
            self._is_admin = bool(isinstance(row, dict) and row.get("is_admin"))
        return self._is_admin

    async def _visible_runners(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """The runners this token can see: `GET /runners/all` for an admin token (or an instance
        scope, which needs one), else the user's owned runners, `GET /runners`, also where Admin
        Mode refuses the admin listing."""
        runner_type = self._runner_target()["runner_type"]
        if runner_type == "instance_type" or await self.admin():
            try:
                return await self._call(lambda: self._list("/runners/all", query), "GET /runners/all",
                                        "administrator access (and, with Admin Mode on, the admin_mode scope)")  # fmt: skip
            except GitLabError as exc:
                if exc.status != 403 or runner_type == "instance_type":
                    raise
        return await self._call(lambda: self._list("/runners", query), "GET /runners", self._needs(self._runner_target()))

    async def list_registrations(self) -> list[Registration]:
        """The runners of every AutoGit host this token can see (one listing serves both this
        host's leak clean-up and the fleet view), found by their `autogit:` description.

        `GET /runners` lists the runners the user owns through memberships only
        (app/models/user.rb ci_owned_runners): an administrator who is a member of nothing sees
        none there, so an admin token lists `GET /runners/all` (of the type this scope uses),
        and falls back to the owned listing where Admin Mode refuses it. List entities carry no
        tag_list (lib/api/entities/ci/runner.rb): tags come from `GET /runners/:id`, once per
        runner, cached."""
        # Under a groups scope, project runners are ours too (shared projects; ADR-011): no type filter.
        runner_type = self._scope_runner_type()
        rows = await self._visible_runners({} if runner_type == "group_type" else {"type": runner_type})
        out = []
        for r in rows:
            description = r.get("description") or ""
            if not description.startswith("autogit:"):
                continue
            online = r.get("online")
            out.append(Registration(id=r["id"], description=description, tags=self._runner_tags.get(r["id"], []),
                                    status=r.get("status"), paused=bool(r.get("paused")) or r.get("active") is False,
                                    online=online if isinstance(online, bool) else None))  # fmt: skip
        live = {r.id for r in out}
        for stale in set(self._runner_tags) - live:
            del self._runner_tags[stale]
            self._runner_reach.pop(stale, None)
            self._runner_contacted.pop(stale, None)
        return out

    # --- fleet presence (agent/fleet.py, ADR-009) ----------------------------------------------------
    async def publish_presence(self, registration_id: int | None, body: dict[str, Any]) -> int:
        """Create this host's presence registration, or refresh its note; returns its id. A
        refresh of one that is gone (404) creates it again. Without an id (a fresh start, or
        a restart: ids are not kept on disk) the host's existing presence is adopted, so a
        restart never leaves a second one behind; extra ones (a crash between create and the
        first refresh) are deleted."""
        if registration_id is None:
            rows = await self._visible_runners({"tag_list": ",".join(body["tag_list"])})
            mine = sorted(int(r["id"]) for r in rows if r.get("description") == body["description"])
            if mine:
                registration_id = mine[0]
                for extra in mine[1:]:
                    await self.delete_runner(extra)
        if registration_id is not None:
            try:
                await self._call(lambda: self._gl.http_put(f"/runners/{registration_id}", post_data={"maintenance_note": body["maintenance_note"]},
                                                           **self._retry), f"PUT /runners/{registration_id}", self._needs(self._runner_target()))  # fmt: skip
                return registration_id
            except GitLabError as exc:
                if exc.status != 404:
                    raise
        target = self._runner_target()
        row = await self._call(lambda: self._gl.http_post("/user/runners", post_data={**target, **body}, **self._retry),
                               "POST /user/runners (presence)", self._needs(target))  # fmt: skip
        assert isinstance(row, dict)
        return int(row["id"])

    async def read_presences(self, tag: str) -> list[tuple[int, str, str | None, str | None]]:
        """Every presence registration: (id, description, maintenance note, contacted_at). The
        list entity has neither note nor contact time, so each is read with GET /runners/:id."""
        rows = await self._visible_runners({"tag_list": tag})
        out = []
        for r in rows:
            detail = await self._call(partial(self._gl.http_get, f"/runners/{r['id']}", **self._retry), f"GET /runners/{r['id']}",
                                      self._needs(self._runner_target()))  # fmt: skip
            if isinstance(detail, dict):
                out.append((int(r["id"]), str(detail.get("description") or ""), detail.get("maintenance_note"), detail.get("contacted_at")))
        return out

    async def fill_tags(self, registrations: list[Registration], budget: int = 10) -> list[Registration]:
        """The registrations with their tags, fetching at most `budget` unknown ones per call."""
        for reg in registrations:
            if reg.id not in self._runner_tags and budget > 0:
                budget -= 1
                await self.runner_exists(reg.id)
        return [r.model_copy(update={"tags": self._runner_tags.get(r.id, r.tags), "run_untagged": self._runner_untagged.get(r.id, r.run_untagged),
                                     "reach": self._runner_reach.get(r.id, r.reach), "contacted_at": self._runner_contacted.get(r.id, r.contacted_at)})
                for r in registrations]  # fmt: skip
