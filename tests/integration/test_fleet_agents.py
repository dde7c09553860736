"""Three agents on one GitLab form a fleet through GitLab alone (presence registrations, ADR-009):
one runner per job, not one per job per host; a dead host's jobs are taken over. Three real
reconcilers (distinct hostnames, config dirs) against the GitLab double and the gitlab-runner
double on the real Docker engine."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from runner_harness import Harness, RunnerImages, finished

from autogit.agent.fleet import join_settle
from autogit.gitlab_double import GitLabSimulator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FLEET = {"enabled": True, "hold_off": 4, "membership_ttl": 4, "heartbeat_interval": 1}


def fleet_of(sim: GitLabSimulator, images: RunnerImages, tmp_path, n: int = 3, **scaling) -> list[Harness]:
    tag = uuid.uuid4().hex[:6]
    return [Harness(sim, images, tmp_path, fleet=FLEET, hostname=f"f{tag}{i}", idle_timeout=3, **scaling) for i in range(n)]


async def form(hosts: list[Harness]) -> None:
    """Until every host sees all of them, then until each has settled (fleet.join_settle): a
    newcomer ranks last meanwhile, so jobs would all go to whoever settled first."""
    await drive(hosts, lambda: all(h.state.live_hosts == {x.hostname for x in hosts} for h in hosts), 30, "every host to see all three")
    settled = time.monotonic() + join_settle(FLEET["heartbeat_interval"])
    await drive(hosts, lambda: time.monotonic() >= settled, 30, "the members to settle")


async def drive(hosts: list[Harness], until, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for h in hosts:
            await h.reconciler.reconcile_once(full_poll=True)
            h.remember_runners()
        if until():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def started(hosts: list[Harness]) -> list[tuple[str, list[int]]]:
    return [(h.hostname, e.data["for_jobs"]) for h in hosts for e in h.state.bus.history() if e.type == "runner.started"]


async def cleanup(sim: GitLabSimulator, hosts: list[Harness]) -> None:
    for h in hosts:
        await h.cleanup()
    for r in list(sim.runners):  # the presence registrations
        if r.description.startswith("autogit-presence:"):
            sim._runners.pop(r.id, None)
    for h in hosts:
        assert h.leftovers() == []


async def test_n_jobs_get_n_runners_across_three_hosts(sim, runner_image, tmp_path):
    hosts = fleet_of(sim, runner_image, tmp_path)
    try:
        await form(hosts)
        jobs = [sim.add_job(project_id=1 + i % 2, script=["sleep 1", "echo ok"]).id for i in range(6)]
        first = hosts[0]
        await first.reconciler.reconcile_once(full_poll=True)
        # the first host to look gives every job an owner, and plans only for its own
        assert sorted(o.job for o in first.state.ownership) == sorted(jobs)
        assert all(o.owner in {h.hostname for h in hosts} for o in first.state.ownership)
        mine = [o.job for o in first.state.ownership if o.mine]
        assert sorted(j for e in first.state.bus.history() if e.type == "runner.started" for j in e.data["for_jobs"]) == sorted(mine)
        await drive(hosts, lambda: finished(sim, jobs), 120, "six jobs")
        assert all(sim.job(j).status == "success" for j in jobs)
        starts = started(hosts)
        # GitLab gives a new runner the oldest job it matches, not the one it was started for, so
        # count runners, not which job each was for: N jobs, N runners (one more at most while a
        # registration is not yet in every host's listing: docs/runners/fleet.md).
        assert len(starts) <= len(jobs) + 1, f"runners started: {starts}"
        assert len(sim.runners_ever()) - 3 <= len(jobs) + 1  # registrations, less the 3 presences
        assert len({host for host, _ in starts}) >= 2, "the jobs spread over the fleet"
    finally:
        await cleanup(sim, hosts)


async def test_a_dead_hosts_jobs_are_taken_over(sim, runner_image, tmp_path):
    """A host dies (power loss) holding pending jobs: once its presence is older than
    membership_ttl the others own them and serve them. (A job already running on its runners
    dies with them; GitLab fails it as stuck, as with any runner that vanishes.)"""
    hosts = fleet_of(sim, runner_image, tmp_path)
    try:
        await form(hosts)
        victim, survivors = hosts[0], hosts[1:]
        jobs = [sim.add_job(project_id=1, script=["echo ok"]).id for _ in range(9)]
        # The victim dies before it acts on them: the survivors see it live and leave it its share.
        for h in survivors:
            await h.reconciler.reconcile_once(full_poll=True)
        victims_jobs = {o.job for o in survivors[0].state.ownership if o.owner == victim.hostname}
        assert victims_jobs, "with three hosts and nine jobs the victim owns some"
        assert any(f"owned by {victim.hostname}" in o.describe() for o in survivors[0].state.ownership)
        await drive(survivors, lambda: finished(sim, jobs), 120, "every job, the dead host's too")
        assert all(sim.job(j).status == "success" for j in jobs)
        await drive(survivors, lambda: all(victim.hostname not in h.state.live_hosts for h in survivors), 30, "the dead host to leave")
        takers = {host for host, for_jobs in started(survivors) if set(for_jobs) & victims_jobs}
        assert takers <= {h.hostname for h in survivors}
    finally:
        await cleanup(sim, hosts)


async def test_a_job_only_one_host_can_serve_goes_to_that_host(sim, runner_image, tmp_path):
    hosts = fleet_of(sim, runner_image, tmp_path)
    # host 0 alone offers an extra tag (e.g. a licensed tool)
    special = hosts[0]
    special.config = special.config.model_copy(update={"scaling": special.config.scaling.model_copy(update={"extra_tags": ["licensed"]})})
    special.reconciler = special.new_reconciler()
    try:
        await form(hosts)
        job = sim.add_job(project_id=1, tags=["licensed"], script=["echo ok"]).id
        await drive(hosts, lambda: finished(sim, [job]), 90, "the licensed job")
        assert [host for host, jobs_ in started(hosts) if job in jobs_] == [special.hostname]
    finally:
        await cleanup(sim, hosts)
