"""An incomplete queue read is not a complete one (ISSUE 19, 5a).

One project of the scope answers 404 (or 403, or times out) while the others answer: its jobs,
pending or running, are unknown. Before, the read was planned as complete: a runner running that
project's job looked idle, was stopped at idle_timeout and its job aborted at drain_timeout.
Now the adapter names the unread projects (with where their runners are registered), and every
runner that could run their jobs is held as busy-unknown: never reaped while the read is
incomplete. GitLab double, real Docker engine, the real reconciler."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr
from runner_harness import Harness, finished

from autogit.agent.config import GitLabConfig
from autogit.agent.gitlab.adapter import GitLabAdapter
from autogit.agent.model import UnreadProject
from autogit.gitlab_double.access import MAINTAINER
from autogit.gitlab_double.gitlab_sim import GitLabSimulator

MISSING = 9999  # in the configured scope, unknown to GitLab: its listing answers 404


async def test_the_adapter_names_the_project_it_could_not_read_and_reads_the_others(sim: GitLabSimulator):
    job = sim.add_job(project_id=2, tags=[], script=["true"])
    config = GitLabConfig(url=sim.url, scope={"kind": "projects", "projects": [1, MISSING, 2]}, max_retries=0, request_timeout=3)
    queue = await GitLabAdapter(config, SecretStr(sim.private_token)).observe_queue()
    assert [j.id for j in queue.pending] == [job.id]
    assert queue.unread == [UnreadProject(project_id=MISSING, reach="project:1", error=queue.problems[0])]
    assert f"project {MISSING}" in queue.problems[0]


@pytest.mark.docker
async def test_a_runner_is_not_reaped_as_idle_while_a_project_it_serves_cannot_be_read(sim: GitLabSimulator, runner_image, tmp_path):
    """The token's user maintains projects 1 and 2; once a runner serves both, the user loses
    project 2 (an admin removed the membership): its jobs listing now answers 404, and what the
    runner may be running there is unknown."""
    user = sim.access.add_user("maint")
    for project in (1, 2):
        sim.access.add_member(user, project=project, role=MAINTAINER)
    token = sim.access.add_token(user, {"api"})
    h = Harness(sim, runner_image, tmp_path, token=token, scope={"kind": "projects", "projects": [1, 2]}, idle_timeout=1)
    try:
        job = sim.add_job(project_id=2, tags=[], script=["echo done"]).id
        await h.until(lambda: finished(sim, [job]), 120, "the job to finish")
        (runner,) = await h.runtime.list()
        del sim.access.project_members[2][user.id]
        # Idle for many times idle_timeout: a complete read would have reaped it long ago.
        for _ in range(8):
            await h.reconciler.reconcile_once(full_poll=True)
            await asyncio.sleep(0.5)
        assert [c.name for c in await h.runtime.list()] == [runner.name]
        assert all(c.stop_requested_at is None for c in await h.runtime.list())
        plan = h.state.plan
        assert plan is not None and plan.stop == []
        assert [(x.runner, x.reason) for x in plan.held] == [(runner.name, "busy-unknown")] and "2" in plan.held[0].detail
        assert any("project 2" in line for line in h.state.gitlab.problems)
        # Readable again: the runner is known idle, and reaped.
        sim.access.add_member(user, project=2, role=MAINTAINER)
        await h.until(lambda: not sim.runners, 60, "the idle runner to be reaped")
    finally:
        await h.cleanup()
    assert h.leftovers() == []
