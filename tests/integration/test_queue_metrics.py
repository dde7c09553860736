"""Each queue-time series of /metrics, changed by driving the real reconciler against the GitLab
double and the real Docker engine (runners are the gitlab-runner double's containers): nothing of
the agent is mocked; the metrics are read from the agent's own registry as a scrape would."""

from __future__ import annotations

import time
import uuid

import pytest
from runner_harness import Harness, finished
from test_fleet_agents import FLEET, cleanup, drive, form

from autogit.agent.config import RunnerMode
from autogit.agent.metrics import AgentMetrics

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def instrument(h: Harness) -> AgentMetrics:
    """The wiring of agent/daemon.py: the state exported, the adapter's answers counted."""
    metrics = AgentMetrics()
    metrics.bind_state(h.state)
    metrics.watch_gitlab(h.gitlab)
    h.reconciler.metrics = metrics
    return metrics


def value(metrics: AgentMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def test_queue_time_ready_time_pending_ages_and_gitlab_calls(harness: Harness):
    sim = harness.sim
    metrics = instrument(harness)
    stuck = sim.add_job(project_id=1, tags=["s390x"], script=["true"], name="no-host-has-it").id
    jobs = [sim.add_job(project_id=1, script=["echo ok"], name=f"plain{i}").id for i in range(2)]
    time.sleep(1.1)  # the jobs have waited a measurable second before the agent first looks

    await harness.reconciler.reconcile_once(full_poll=True)
    # Pending jobs and the oldest wait, by tag set, from the queue GitLab showed.
    assert value(metrics, "autogit_pending_jobs", tags="") == 2
    assert value(metrics, "autogit_pending_jobs", tags="s390x") == 1
    assert value(metrics, "autogit_pending_oldest_seconds", tags="s390x") >= 1
    assert value(metrics, "autogit_pending_oldest_wait_seconds") >= 1
    assert value(metrics, "autogit_jobs_waiting", reason="no-matching-hardware") == 1
    assert value(metrics, "autogit_jobs_waiting", reason="gpu-unavailable") == 0  # every reason is exported
    # The runner started for them: pending → runner ready, at least the second they waited.
    assert value(metrics, "autogit_job_runner_ready_seconds_count", kind="native") >= 1
    assert value(metrics, "autogit_job_runner_ready_seconds_sum", kind="native") >= 1
    # GitLab's answers by endpoint class, and the jobs listing's rate-limit budget from its headers.
    assert value(metrics, "autogit_gitlab_requests_total", endpoint="jobs", code="200") >= 2  # projects 1 and 2
    assert value(metrics, "autogit_gitlab_requests_total", endpoint="runners", code="201") >= 1  # POST /user/runners
    assert value(metrics, "autogit_gitlab_ratelimit_limit", limit="throttle_jobs_index") == sim.jobs_index_limit
    assert 0 < value(metrics, "autogit_gitlab_ratelimit_remaining", limit="throttle_jobs_index") < sim.jobs_index_limit

    await harness.until(lambda: finished(sim, jobs), timeout=120, what="two plain jobs to finish")
    await harness.reconciler.reconcile_once(full_poll=True)
    # Queue time: GitLab's own queued_duration of each job, observed once, under the runner's kind.
    count = value(metrics, "autogit_job_queue_seconds_count", kind="native", tags="")
    assert count == 2, "each started job is observed exactly once"
    expected = sum(sim.job(j).started_at - sim.job(j).created_at for j in jobs)
    assert value(metrics, "autogit_job_queue_seconds_sum", kind="native", tags="") == pytest.approx(expected, abs=0.01)
    assert value(metrics, "autogit_job_queue_seconds_bucket", kind="native", tags="", le="1.0") == 0  # both waited over 1 s
    [stats] = metrics.queue_times.summary()
    assert (stats.tags, stats.jobs) == ("", 2) and stats.p50_s >= 1 and stats.p95_s >= stats.p50_s
    assert value(metrics, "autogit_pending_jobs", tags="") == 0
    sim.cancel_job(stuck)


async def test_a_runner_that_cannot_start_is_counted_by_cause(sim, runner_image, tmp_path):
    h = Harness(sim, runner_image, tmp_path)
    h.runtime.config = h.config.runner.model_copy(update={"image": "autogit-test/no-such-runner-image:none"})
    metrics = instrument(h)
    try:
        job = sim.add_job(project_id=1, script=["true"]).id
        await h.reconciler.reconcile_once(full_poll=True)
        assert value(metrics, "autogit_runner_start_failures_total", kind="native", cause="invalid-configuration") == 1
        assert value(metrics, "autogit_runner_start_failures_total", kind="native", cause="gitlab-refused") == 0
        sim.cancel_job(job)
    finally:
        await h.cleanup()
    assert [r.description for r in sim.runners] == [], "a failed start leaves no registration"


async def test_fleet_jobs_owned_and_taken_over_per_host(sim, runner_image, tmp_path):
    """One job at a time, on one-job runners (no idle runner is ever left to serve the next
    job): each job the survivor owns is claimed as `owner`; the first one the victim owns, the
    victim being dead but still live in the view, is taken over after the hold-off."""
    # A hold-off well inside the membership TTL: the survivor takes the victim's job over while
    # the victim still counts as live, rather than owning it once it has lapsed.
    fleet = FLEET | {"hold_off": 1.5, "membership_ttl": 60}
    tag = uuid.uuid4().hex[:6]
    hosts = [Harness(sim, runner_image, tmp_path, fleet=fleet, hostname=f"qm{tag}{i}", idle_timeout=3) for i in range(2)]
    for h in hosts:
        h.config = h.config.model_copy(update={"runner": h.config.runner.model_copy(update={"mode": RunnerMode.ONE_JOB})})
        h.runtime.config = h.config.runner
        h.reconciler = h.new_reconciler()
    victim, survivor = hosts
    metrics = instrument(survivor)
    try:
        await form(hosts)
        owners: dict[str, int] = {}
        for _ in range(12):  # ownership is a hash of the job: each host owns about half
            job = sim.add_job(project_id=1, script=["echo ok"]).id
            await survivor.reconciler.reconcile_once(full_poll=True)
            [owner] = [o.owner for o in survivor.state.ownership if o.job == job]
            assert value(metrics, "autogit_fleet_jobs", owner=owner) == 1
            owners[owner] = owners.get(owner, 0) + 1
            # The victim never acts: its job too is run by the survivor, once taken over.
            await drive([survivor], lambda job=job: finished(sim, [job]), 60, f"job {job}")
            # A one-job runner that has run its job is still registered until its container is
            # removed; in GitLab's view it is idle then, and the next job's ownership would name it
            # (claim: an idle runner, not owner). Next job only once it is gone.
            await drive([survivor], lambda: not [r for r in sim.runners if r.description.startswith(f"autogit:{survivor.hostname}:")],
                        60, "the used runner to go")  # fmt: skip
            if owner == victim.hostname:
                break
        assert owners.get(victim.hostname) == 1, f"no job of the victim's in 12: {owners}"
        assert value(metrics, "autogit_fleet_claimed_jobs_total", claim="owner") == owners.get(survivor.hostname, 0)
        assert value(metrics, "autogit_fleet_claimed_jobs_total", claim="takeover") == 1
    finally:
        await cleanup(sim, hosts)


async def test_gitlab_refusing_the_token_is_counted_by_code(sim, runner_image, tmp_path):
    """What the dashboard's refusals panel and the AutogitGitLabRefusesToken alert read."""
    h = Harness(sim, runner_image, tmp_path, token="glpat-not-a-token-gitlab-knows")
    metrics = instrument(h)
    try:
        assert value(metrics, "autogit_gitlab_requests_total", endpoint="jobs", code="401") == 0  # there before any refusal
        await h.reconciler.reconcile_once(full_poll=True)
        await h.reconciler.reconcile_once(full_poll=True)
        assert value(metrics, "autogit_gitlab_requests_total", endpoint="jobs", code="401") == 2  # one listing per pass: a 401 ends the observation
        assert value(metrics, "autogit_gitlab_requests_total", endpoint="jobs", code="200") == 0
        assert value(metrics, "autogit_agent_phase", phase="degraded") == 1
    finally:
        await h.cleanup()
