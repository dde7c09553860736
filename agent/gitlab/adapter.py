"""The GitLab adapter: pending jobs for the configured scope, and this host's runner
registrations. A thin layer over python-gitlab; callers see our models and one error type.

API calls per observation (docs/runners/gitlab-api-cost.md):
- scope `projects`: one `GET /projects/:id/jobs?scope[]=pending&scope[]=running` per project
  (+1 per 100 jobs beyond the first page);
- scope `groups`: one `GET /groups/:id/projects?include_subgroups=true` per group per 100
  projects (cached for `project_refresh` seconds), then as `projects`;
- scope `instance`: one GraphQL `Query.jobs(statuses: [PENDING, RUNNING])` per 100 jobs,
  whatever the number of projects (admin token: that query is empty for other users);
- registrations: one `GET /runners?type=...` per 100 runners, made every pass.
Every call has a timeout; 429 and 5xx are retried with backoff (python-gitlab's
retry_transient_errors, honouring Retry-After) up to `max_retries` times.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import gitlab
import gitlab.exceptions as glexc
import requests
from pydantic import Field, SecretStr

from ..config import GitLabConfig
from ..model import Frozen, Job

__all__ = ["GitLabAdapter", "GitLabError", "Registration", "CreatedRunner", "RunningJob", "QueueSnapshot", "description_prefix"]

T = TypeVar("T")


class GitLabError(RuntimeError):
    """Any failure talking to GitLab; str() is one line and never holds a token."""


class Registration(Frozen):
    id: int
    description: str
    tags: list[str] = Field(default_factory=list)
    status: str | None = Field(None, description="GitLab's runner status: online, offline, ...")

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


class QueueSnapshot(Frozen):
    pending: list[Job]
    running: list[RunningJob]


def description_prefix(hostname: str) -> str:
    """Every runner this host registers is described `autogit:<host>:<name>`; the fleet view and
    leak clean-up find this host's registrations by it."""
    return f"autogit:{hostname}:"


def _gid(global_id: str) -> int:
    """GraphQL global id → REST id: 'gid://gitlab/Ci::Build/123' → 123."""
    return int(global_id.rsplit("/", 1)[1])


def _job_from_api(data: dict[str, Any], project_id: int) -> Job:
    return Job(
        id=data["id"],
        project_id=(data.get("pipeline") or {}).get("project_id", project_id),
        tags=data.get("tag_list") or [],
        created_at=data["created_at"],
        name=data.get("name"),
        web_url=data.get("web_url"),
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

    # --- plumbing -----------------------------------------------------------------------------
    async def _call(self, fn: Callable[[], T]) -> T:
        """Run one blocking python-gitlab call in a thread, mapping every error to GitLabError."""

        def counted() -> T:
            self.calls += 1
            return fn()

        try:
            return await asyncio.to_thread(counted)
        except glexc.GitlabError as exc:
            code = getattr(exc, "response_code", None)
            raise GitLabError(f"GitLab answered {code or 'an error'}: {str(exc.error_message)[:200]}") from None
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
            rows = await self._call(partial(self._list, f"/groups/{group}/projects", {"include_subgroups": True, "simple": True}))
            ids.update(r["id"] for r in rows)
        self._projects, self._projects_at = sorted(ids), time.monotonic()
        return self._projects

    async def observe_queue(self) -> QueueSnapshot:
        """Pending jobs (the planner's input) and running ones (who is busy), in one call per
        project: `scope[]=pending&scope[]=running`; instance-wide, one GraphQL query."""
        if self.config.scope.kind == "instance":
            return await self._observe_instance_queue()
        pending: list[Job] = []
        running: list[RunningJob] = []
        for project in await self._scope_projects():
            rows = await self._call(partial(self._list, f"/projects/{project}/jobs", {"scope[]": ["pending", "running"]}))
            for row in rows:
                if row.get("status") == "pending":
                    pending.append(_job_from_api(row, project))
                elif row.get("status") == "running":
                    runner = row.get("runner") or {}
                    running.append(RunningJob(id=row["id"], project_id=project, runner_id=runner.get("id")))
        return QueueSnapshot(pending=pending, running=running)

    _JOBS_QUERY = (
        "query($after: String) { jobs(statuses: [PENDING, RUNNING], first: 100, after: $after) {"
        " nodes { id name status tags createdAt project { id } runner { id } }"
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
                    pending.append(Job(id=job_id, project_id=project_id, tags=node.get("tags") or [], created_at=node["createdAt"], name=node.get("name")))
                elif node["status"] == "RUNNING":
                    runner = node.get("runner")
                    running.append(RunningJob(id=job_id, project_id=project_id, runner_id=_gid(runner["id"]) if runner else None))
            if not jobs["pageInfo"]["hasNextPage"]:
                return QueueSnapshot(pending=pending, running=running)
            after = jobs["pageInfo"]["endCursor"]

    async def get_job(self, project_id: int, job_id: int) -> tuple[str, Job]:
        """One job (webhooks carry no tags, so the agent fetches the job): (status, job)."""
        row = await self._call(lambda: self._gl.http_get(f"/projects/{project_id}/jobs/{job_id}", **self._retry))
        assert isinstance(row, dict)
        return row.get("status", ""), _job_from_api(row, project_id)

    # --- registrations ----------------------------------------------------------------------------
    def _runner_target(self) -> dict[str, Any]:
        scope = self.config.scope
        runner_type = self.config.runner_type or {"instance": "instance_type", "groups": "group_type", "projects": "project_type"}[scope.kind]
        target: dict[str, Any] = {"runner_type": runner_type}
        if runner_type == "group_type":
            target["group_id"] = scope.groups[0]
        elif runner_type == "project_type":
            target["project_id"] = scope.projects[0]
        return target

    async def create_runner(self, description: str, tags: Iterable[str], run_untagged: bool) -> CreatedRunner:
        """POST /user/runners (the runner-authentication-token workflow); the token comes back once."""
        data = {
            **self._runner_target(),
            "description": description,
            "tag_list": list(tags),
            "run_untagged": run_untagged,
            "locked": True,
            "maintenance_note": "Managed by autogit-agent; it deletes this runner when the runner goes.",
        }
        row = await self._call(lambda: self._gl.http_post("/user/runners", post_data=data, **self._retry))
        assert isinstance(row, dict)
        created = CreatedRunner(id=row["id"], token=SecretStr(row["token"]))
        if data["runner_type"] == "project_type":
            # A project runner serves its own project only; enable it in the scope's others
            # (POST /projects/:id/runners, "Assign a runner to project").
            try:
                for project in self.config.scope.projects[1:]:
                    await self._call(
                        partial(self._gl.http_post, f"/projects/{project}/runners", post_data={"runner_id": created.id}, **self._retry)
                    )
            except GitLabError:
                await self.delete_runner(created.id)  # never leave a half-made registration
                raise
        return created

    async def delete_runner(self, runner_id: int) -> None:
        try:
            await self._call(lambda: self._gl.http_delete(f"/runners/{runner_id}", **self._retry))
        except GitLabError as exc:
            if "404" not in str(exc):  # already gone: the goal is reached
                raise

    async def list_registrations(self) -> list[Registration]:
        """The runners of every AutoGit host this token can see (one listing serves both this
        host's leak clean-up and the fleet view), found by their `autogit:` description."""
        path = "/runners/all" if self._runner_target()["runner_type"] == "instance_type" else "/runners"
        rows = await self._call(lambda: self._list(path, {}))
        return [
            Registration(id=r["id"], description=r.get("description") or "", tags=r.get("tag_list") or [], status=r.get("status"))
            for r in rows
            if (r.get("description") or "").startswith("autogit:")
        ]
