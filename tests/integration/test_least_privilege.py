"""The agent under the least privilege GitLab allows, for every scope kind, against the strict
GitLab double (tests/integration/test_gitlab_permissions.py pins its rules) and the gitlab-runner
double on the real Docker engine: jobs in every project and group are served, registrations are
deleted without a 403, a refusal is one clear line that never stops the rest of the work, and no
endpoint is hammered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from runner_harness import Harness, RunnerImages, finished
from test_gitlab_permissions import world

from autogit.agent.api.client import format_status
from autogit.agent.api.views import status_view
from autogit.gitlab_double import GitLabSimulator

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
async def strict(request: pytest.FixtureRequest) -> AsyncIterator[tuple[GitLabSimulator, dict[str, str]]]:
    sim, tokens = world(**(getattr(request, "param", None) or {}))
    await sim.start()
    try:
        yield sim, tokens
    finally:
        await sim.stop()


async def run_harness(h: Harness, until, what: str, timeout: float = 120) -> None:
    try:
        await h.until(until, timeout, what)
    finally:
        await h.cleanup()
    assert h.leftovers() == []


def events(h: Harness, kind: str) -> list[Any]:
    return [e for e in h.state.bus.history() if e.type == kind]


async def test_projects_scope_with_a_maintainer_token_serves_both_projects(strict, runner_image: RunnerImages, tmp_path):
    sim, t = strict
    h = Harness(sim, runner_image, tmp_path, token=t["maint_api"], idle_timeout=1)
    jobs = [sim.add_job(project_id=p, script=["echo ok"]).id for p in (1, 2, 1, 2)]
    await run_harness(h, lambda: finished(sim, jobs) and not sim.runners, "jobs in both projects and the clean-up")
    assert all(sim.job(j).status == "success" for j in jobs)
    assert events(h, "registration.delete-failed") == [] and events(h, "runner.start-failed") == []
    assert h.state.gitlab.problems == []
    # One jobs listing per project per full pass, one registration listing per pass: nothing hammered.
    passes = h.state.reconcile_count
    assert sim.calls.get("GET /api/v4/projects/{pid}/jobs", 0) <= 2 * passes
    assert sim.calls.get("GET /api/v4/runners", 0) <= passes


@pytest.mark.parametrize("strict", [{"version": (16, 11)}], indirect=True)
async def test_one_project_on_gitlab_16_with_create_runner_and_read_api_only(strict, runner_image: RunnerImages, tmp_path):
    """16.x has no manage_runner: the agent deletes each runner with the runner's own token
    (DELETE /runners, no user scope needed); pausing before a stop is refused and said once."""
    sim, t = strict
    h = Harness(sim, runner_image, tmp_path, token=t["maint"], scope={"kind": "projects", "projects": [1]}, idle_timeout=1)
    jobs = [sim.add_job(project_id=1, script=["echo ok"]).id for _ in range(2)]
    await run_harness(h, lambda: finished(sim, jobs) and not sim.runners, "jobs and the clean-up")
    assert all(sim.job(j).status == "success" for j in jobs)
    assert events(h, "registration.delete-failed") == []
    refused = [e.message for e in events(h, "gitlab.refused")]
    assert refused and all("lacks a scope" in m and "PUT /runners/:id" in m for m in refused), refused
    assert len(refused) == 1, "said once, not every pass"


async def test_groups_scope_registers_in_every_group(strict, runner_image: RunnerImages, tmp_path):
    sim, t = strict
    h = Harness(sim, runner_image, tmp_path, token=t["owner"], scope={"kind": "groups", "groups": [1, 3]}, idle_timeout=30)
    jobs = {1: sim.add_job(project_id=1, script=["echo g1"]).id, 3: sim.add_job(project_id=3, script=["echo g3"]).id}
    groups_of: dict[int, int | None] = {}

    def done() -> bool:
        for r in sim.runners:
            groups_of[r.id] = r.group_id
        return finished(sim, jobs.values())

    await run_harness(h, done, "a job in each group")
    assert all(sim.job(j).status == "success" for j in jobs.values())
    assert groups_of[sim.job(jobs[1]).runner_id] == 1 and groups_of[sim.job(jobs[3]).runner_id] == 3
    assert events(h, "runner.start-failed") == []


async def test_groups_scope_with_a_maintainer_of_two_groups_serves_them_with_project_runners(strict, runner_image: RunnerImages, tmp_path, caplog):
    """ADR-011: only Owners create group runners; a Maintainer of groups 1 and 3 is served
    through project runners in the projects with jobs, said once per group, nothing refused."""
    sim, t = strict
    h = Harness(sim, runner_image, tmp_path, token=t["group_maint"], scope={"kind": "groups", "groups": [1, 3]}, idle_timeout=1)
    jobs = {p: sim.add_job(project_id=p, script=[f"echo p{p}"]).id for p in (1, 2, 3)}
    with caplog.at_level("WARNING", logger="autogit.gitlab"):
        await run_harness(h, lambda: finished(sim, jobs.values()) and not sim.runners, "a job in each project and the clean-up")
    assert all(sim.job(j).status == "success" for j in jobs.values())
    owners = {r.id: (r.runner_type, r.project_id) for r in sim.registered()}
    assert {p: owners[sim.job(j).runner_id] for p, j in jobs.items()} == {p: ("project_type", p) for p in (1, 2, 3)}
    assert events(h, "runner.start-failed") == [] and events(h, "registration.delete-failed") == []
    said = [r.getMessage() for r in caplog.records if r.name == "autogit.gitlab"]
    assert sorted(m.split(":")[0] for m in said) == ["group 1", "group 3"], said


async def test_groups_scope_with_a_developer_is_one_refusal_naming_the_owner_role(strict, runner_image: RunnerImages, tmp_path):
    """ADR-011: a Developer of the group may create neither a group runner nor project runners:
    one refusal line naming the Owner role, not retried every pass, and no runner."""
    sim, t = strict
    h = Harness(sim, runner_image, tmp_path, token=t["group_dev"], scope={"kind": "groups", "groups": [3]}, idle_timeout=1)
    sim.add_job(project_id=3, script=["echo never"])
    try:
        for _ in range(10):
            await h.reconciler.reconcile_once(full_poll=True)
            await asyncio.sleep(0.2)
    finally:
        await h.cleanup()
    failed = [e.message for e in events(h, "runner.start-failed")]
    assert len(failed) == 1 and "Owner role in group 3" in failed[0] and "\n" not in failed[0], failed
    assert sim.registered() == [] and h.leftovers() == []
    assert any("Owner role in group 3" in p for p in h.state.gitlab.problems)


@pytest.mark.parametrize("strict", [{"admin_mode": True}], indirect=True)
async def test_instance_scope_with_admin_mode_needs_the_admin_mode_scope(strict, runner_image: RunnerImages, tmp_path):
    sim, t = strict
    h = Harness(sim, runner_image, tmp_path, token=t["lonely_admin_mode"], scope={"kind": "instance"}, idle_timeout=1)
    job = sim.add_job(project_id=3, script=["echo instance"]).id
    await run_harness(h, lambda: finished(sim, [job]) and not sim.runners, "the job and the clean-up")
    assert sim.job(job).status == "success"
    assert sim.runners == [] and events(h, "registration.delete-failed") == []


async def test_a_registration_it_cannot_delete_is_retried_with_backoff_and_blocks_nothing(strict, runner_image: RunnerImages, tmp_path):
    sim, t = strict
    h = Harness(sim, runner_image, tmp_path, token=t["maint_api"], idle_timeout=1)
    # Left by someone else under this host's name: a runner of project 1 also enabled in
    # project 3, where the agent's user has no role. Non-admins cannot delete it.
    ghost = sim.add_runner(description=f"autogit:{h.hostname}:ghost", project_id=1, also=[3])
    jobs = [sim.add_job(project_id=p, script=["echo ok"]).id for p in (1, 2)]
    await run_harness(h, lambda: finished(sim, jobs) and len(sim.runners) == 1, "jobs served while the ghost stays")
    assert all(sim.job(j).status == "success" for j in jobs)
    failed = events(h, "registration.delete-failed")
    assert failed and "Maintainer role" in failed[0].message and str(ghost) in failed[0].message
    assert len(failed) <= 2, "retried with backoff, not every pass"
    assert any("Maintainer role" in p for p in h.state.gitlab.problems)
    # the same line reaches the socket's status and `autogit-agent status`
    text = format_status(status_view(h.state, h.hostname))
    assert "gitlab refuses:" in text and f"DELETE /runners/{ghost}" in text


async def test_a_busy_runner_survives_a_listing_that_misses_it(strict, runner_image: RunnerImages, tmp_path):
    sim, t = strict
    h = Harness(sim, runner_image, tmp_path, token=t["maint_api"], idle_timeout=1)
    job = sim.add_job(project_id=1, script=["sleep 6", "echo survived"]).id
    await h.until(lambda: sim.job(job).status == "running", 60, "the job to run")
    sim.skipped_in_listings.add(sim.job(job).runner_id)  # offset pagination skipped it
    for _ in range(8):
        await h.reconciler.reconcile_once(full_poll=True)
        await asyncio.sleep(0.3)
    assert [c.gitlab_id for c in await h.runtime.list()] == [sim.job(job).runner_id]
    sim.skipped_in_listings.clear()
    await run_harness(h, lambda: finished(sim, [job]) and not sim.runners, "the job and the clean-up")
    assert sim.job(job).status == "success" and "survived" in sim.job(job).trace.decode()
    assert not any("registration is gone" in e.message for e in events(h, "runner.removed"))


async def test_a_runner_that_never_contacts_gitlab_is_reported_not_counted(strict, runner_image: RunnerImages, tmp_path):
    sim, t = strict
    h = Harness(sim, runner_image, tmp_path, token=t["maint_api"], idle_timeout=600, pickup_timeout=4)
    # runners reach GitLab by a URL that answers nothing
    h.config = h.config.model_copy(update={"runner": h.config.runner.model_copy(update={"gitlab_url": "http://127.0.0.1:9"})})
    h.runtime.config = h.config.runner
    h.reconciler = h.new_reconciler()
    sim.add_job(project_id=1, script=["echo never"])
    try:
        await h.until(lambda: any("has not contacted GitLab" in p for p in h.state.gitlab.problems), 60, "the report")
        stopped = [e for e in h.state.bus.history() if e.type == "runner.stopping" and e.data.get("reason") == "never-contacted"]
        assert stopped, "not counted as capacity: stopped and replaced"
    finally:
        await h.cleanup()
        for r in list(sim.runners):
            sim._runners.pop(r.id, None)
    assert h.leftovers() == []
