"""The acting gate of leader election (ADR-014) on the real reconciler, the GitLab double and
the real Docker engine: a follower observes, decides and publishes every pass and carries
nothing out; the gate is asked before each action, so a Lease lost mid-plan stops the rest."""

from __future__ import annotations

from runner_harness import Harness, finished

from autogit.agent.fleet import PRESENCE_DESCRIPTION_PREFIX


async def test_a_follower_observes_and_plans_but_registers_and_starts_nothing(harness: Harness):
    sim = harness.sim
    leads = False
    harness.reconciler.may_act = lambda: leads
    jobs = [sim.add_job(project_id=1, script=["echo ok"]).id for _ in range(2)]
    for _ in range(3):
        plan = await harness.reconciler.reconcile_once(full_poll=True)
    assert plan is not None and len(plan.start) == 2  # what the leader would do, decided all the same
    assert sorted(j.id for j in harness.state.jobs) == sorted(jobs)  # the queue is observed and published
    assert sim.runners == [] and await harness.runtime.list() == []  # but nothing registered, nothing started
    leads = True
    await harness.until(lambda: finished(sim, jobs), 120, "both jobs once it leads")
    assert all(sim.job(j).status == "success" for j in jobs)


async def test_a_lease_lost_mid_plan_stops_the_actions_left(harness: Harness):
    sim = harness.sim
    answers = iter([True, True])  # _act's own check, then the first start's; the Lease is lost after it
    harness.reconciler.START_CONCURRENCY = 1
    harness.reconciler.may_act = lambda: next(answers, False)
    jobs = [sim.add_job(project_id=1, script=["echo ok"]).id for _ in range(3)]
    plan = await harness.reconciler.reconcile_once(full_poll=True)
    assert plan is not None and len(plan.start) == 3
    assert len(sim.runners) == 1 and len(await harness.runtime.list()) == 1  # one start, then nothing more
    harness.reconciler.may_act = lambda: True
    await harness.until(lambda: finished(sim, jobs), 120, "the jobs once it leads again")


async def test_the_fleet_presence_heartbeat_is_the_leader_s_alone(sim, runner_image, tmp_path):
    h = Harness(sim, runner_image, tmp_path, fleet={"enabled": True, "hold_off": 4, "membership_ttl": 4, "heartbeat_interval": 1})
    leads = False
    h.reconciler.may_act = lambda: leads
    try:
        for _ in range(3):
            await h.reconciler.reconcile_once(full_poll=True)
            h.reconciler._fleet_next = 0.0  # a heartbeat due on every pass
        assert presences(sim) == []  # a follower publishes no presence
        leads = True
        await h.reconciler.reconcile_once(full_poll=True)
        assert presences(sim) == [f"{PRESENCE_DESCRIPTION_PREFIX}{h.hostname}"]
    finally:
        for r in list(sim.runners):  # the presence outlives an agent by design (docs/runners/fleet.md): removed here
            await h.gitlab.delete_runner(r.id)
        await h.cleanup()


def presences(sim) -> list[str]:
    return sorted(r.description for r in sim.runners if r.description.startswith(PRESENCE_DESCRIPTION_PREFIX))
