"""Every decision the reconciler used to make itself, now the planner's (`decide`), one test per rule:
removal of exited runners and orphans (two strikes), the stop deadlines, never-contacted runners,
operator drains, the quick-pass filter, the start backoff, registrations with no runner, pausing
before a stop, and busy state that is unknown (ISSUE 19, 5a) or known locally."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from autogit.agent.model import (
    Backoff,
    BusyEvidence,
    HostRegistration,
    Job,
    Lifecycle,
    Observation,
    QueueRead,
    RegistrationState,
    Runner,
    RunnerKind,
    RunnerStatus,
    UnreadProject,
    WaitReason,
)
from autogit.agent.planner import decide
from autogit.agent.scenario import load_scenario, plan_scenario

from test_planner import HOST, NOW, POLICY, job, runner

LIFE = Lifecycle(drain_timeout=3600, force_timeout=30, kill_grace=10)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def registered(id: str, gitlab_id: int, paused: bool = False, status: str = "online", **kw) -> Runner:
    return runner(id, gitlab_id=gitlab_id, registration=RegistrationState(id=gitlab_id, paused=paused, status=status), **kw)


def observe(runners=(), jobs=(), policy=POLICY, **kw) -> Observation:
    return Observation(host=HOST, runners=list(runners), jobs=list(jobs), policy=policy, now=NOW, lifecycle=LIFE, **kw)


def stops(p) -> dict[str, str]:
    return {s.runner: s.reason for s in p.stop}


# --- lifecycle ------------------------------------------------------------------------------------------


def test_an_exited_runner_is_removed_with_its_registration_and_not_counted():
    exited = registered("r1", 7).model_copy(update={"status": RunnerStatus.EXITED})
    one = POLICY.model_copy(update={"max_runners": 1})
    p = decide(observe([exited, registered("r2", 8)], policy=one))
    assert [(r.runner, r.reason, r.gitlab_id) for r in p.remove] == [("r1", "exited", 7)]
    # Gone, so not counted: with max_runners 1 a job still gets a runner.
    assert len(decide(observe([exited], [job(1)], policy=one)).start) == 1


def test_an_orphan_goes_on_the_second_404_in_a_row_a_stopped_one_on_the_first():
    one = runner("r1", gitlab_id=7, missing_strikes=1)
    assert decide(observe([one])).remove == []
    assert [r.reason for r in decide(observe([one.model_copy(update={"missing_strikes": 2})])).remove] == ["its GitLab registration is gone"]
    stopped = one.model_copy(update={"status": RunnerStatus.CREATING})
    assert [r.runner for r in decide(observe([stopped])).remove] == ["r1"]
    # Listed in GitLab: never an orphan, whatever was counted before.
    assert decide(observe([registered("r1", 7, missing_strikes=3)])).remove == []


def test_a_runner_never_registered_goes_only_once_it_is_not_running():
    assert decide(observe([runner("r1")])).remove == []
    assert [r.runner for r in decide(observe([runner("r1", status=RunnerStatus.CREATING)])).remove] == ["r1"]
    assert decide(observe([runner("r1", status=RunnerStatus.UNKNOWN)])).remove == []  # unknown is not exited


def test_stop_deadlines_abort_after_drain_timeout_and_kill_after_force_timeout_and_grace():
    stopping = runner("r1", busy=True, gitlab_id=1, stop_requested_at=ago(3599))
    p = decide(observe([stopping]))
    assert p.abort == [] and [(h.runner, h.reason, h.until) for h in p.held] == [("r1", "stopping", ago(3599) + timedelta(seconds=3600))]
    assert [a.runner for a in decide(observe([stopping.model_copy(update={"stop_requested_at": ago(3601)})])).abort] == ["r1"]
    aborting = stopping.model_copy(update={"stop_requested_at": ago(4000), "abort_requested_at": ago(39)})
    p = decide(observe([aborting]))
    assert p.kill == [] and p.abort == [] and p.held[0].reason == "aborting"
    assert [k.runner for k in decide(observe([aborting.model_copy(update={"abort_requested_at": ago(41)})])).kill] == ["r1"]


def test_a_stopping_runner_counts_and_is_never_stopped_again():
    p = decide(observe([runner("r1", idle_s=10_000, stop_requested_at=ago(5))], [job(1)], policy=POLICY.model_copy(update={"max_runners": 1})))
    assert p.stop == [] and p.start == [] and waits_for_capacity(p, 1)


def waits_for_capacity(p, job_id: int) -> bool:
    return any(w.job == job_id and w.reason is WaitReason.WAITING_FOR_CAPACITY for w in p.waiting)


def test_never_contacted_past_pickup_timeout_is_replaced_and_not_capacity():
    silent = registered("r1", 7, status="never_contacted", started_at=ago(200))
    p = decide(observe([silent], [job(1)]))
    assert stops(p) == {"r1": "never-contacted"} and len(p.start) == 1
    young = silent.model_copy(update={"started_at": ago(60)})
    assert decide(observe([young], [job(1)])).stop == []


def test_operator_drain_drains_a_busy_runner_and_stops_an_idle_one():
    p = decide(observe([runner("busy", busy=True, operator_drain=True), runner("idle", operator_drain=True)]))
    assert [(d.runner, d.reason) for d in p.drain] == [("busy", "operator")]
    assert stops(p) == {"idle": "operator"}


# --- gates ------------------------------------------------------------------------------------------------


def test_a_quick_pass_reaps_nothing_but_still_stops_what_lost_its_gpu():
    idle = runner("old", idle_s=10_000)
    assert stops(decide(observe([idle]))) == {"old": "idle-timeout"}
    quick = QueueRead(fresh=False)
    assert decide(observe([idle], queue=quick)).stop == []
    lost = runner("g", tags=["gpu"], kind=RunnerKind.GPU, gpu="GPU-gone", run_untagged=False)
    assert stops(decide(observe([lost], queue=quick))) == {"g": "gpu-gone"}


def test_a_start_backing_off_waits_saying_why_and_starts_once_it_ends():
    failed = Backoff(action="start", target="native", until=NOW + timedelta(seconds=30), cause="runner.image: image not found")
    p = decide(observe(jobs=[job(1), job(2, ["arm64"])], backoff=[failed]))
    assert [s.kind for s in p.start] == [RunnerKind.EMULATED]
    assert [s.runner for s in p.served] == ["start:0"]  # the served index follows the starts kept
    (wait,) = p.waiting
    assert wait.job == 1 and wait.reason is WaitReason.WAITING_FOR_CAPACITY and "runner.image: image not found" in wait.detail
    over = failed.model_copy(update={"until": NOW - timedelta(seconds=1)})
    assert len(decide(observe(jobs=[job(1)], backoff=[over])).start) == 1
    every = failed.model_copy(update={"target": "*"})  # GitLab refused: every kind waits
    assert decide(observe(jobs=[job(1), job(2, ["arm64"])], backoff=[every])).start == []


# --- registrations -----------------------------------------------------------------------------------


def test_a_registration_of_this_host_with_no_runner_is_deleted_unless_backing_off():
    regs = [HostRegistration(id=7, name="r1"), HostRegistration(id=9, name="gone")]
    p = decide(observe([registered("r1", 7)], registrations=regs))
    assert [d.gitlab_id for d in p.delete_registrations] == [9]
    refused = Backoff(action="delete-registration", target="9", until=NOW + timedelta(seconds=60), cause="403")
    assert decide(observe([registered("r1", 7)], registrations=regs, backoff=[refused])).delete_registrations == []


def test_a_runner_is_paused_in_gitlab_before_it_is_stopped_or_drained_once():
    p = decide(observe([registered("idle", 1, idle_s=10_000), registered("done", 2, paused=True, idle_s=10_000)]))
    assert [(x.runner, x.gitlab_id) for x in p.pause] == [("idle", 1)]
    refused = Backoff(action="pause", target="*", until=NOW + timedelta(seconds=900), cause="403 manage_runner")
    p = decide(observe([registered("idle", 1, idle_s=10_000)], backoff=[refused]))
    assert p.pause == [] and stops(p) == {"idle": "idle-timeout"}  # the stop goes on without the nicety


# --- busy state: unknown is busy, local evidence counts (ISSUE 19, 5a) ------------------------------


def test_an_incomplete_queue_read_holds_every_runner_that_could_run_the_unread_projects_jobs():
    idle = runner("r1", idle_s=10_000)  # past idle_timeout: reaped on a complete read
    unread = QueueRead(complete=False, unread=[UnreadProject(project_id=2, reach=None, error="403")])
    p = decide(observe([idle], queue=unread))
    assert p.stop == [] and [(h.runner, h.reason) for h in p.held] == [("r1", "busy-unknown")]
    assert "2" in p.held[0].detail
    # Not capacity for new jobs either: it may be running project 2's job.
    assert len(decide(observe([idle], [job(1)], queue=unread)).start) == 1


def test_an_unread_project_out_of_a_runners_reach_leaves_it_known():
    scoped = runner("r1", idle_s=10_000, reach="project:1")
    unread = QueueRead(complete=False, unread=[UnreadProject(project_id=2, reach="project:2")])
    assert stops(decide(observe([scoped], queue=unread))) == {"r1": "idle-timeout"}


def test_unknown_busy_is_never_taken_for_unresponsive_or_made_room_with():
    policy = POLICY.model_copy(update={"max_runners": 1, "pickup_timeout": 60})
    idle = runner("r1", idle_s=10_000)
    overdue = Job(id=1, project_id=1, tags=["arm64"], created_at=NOW - timedelta(seconds=600))
    assert stops(decide(observe([idle], [overdue], policy=policy))) == {"r1": "make-room"}
    unknown = idle.model_copy(update={"busy_by": BusyEvidence.UNKNOWN})
    assert decide(observe([unknown], [overdue], policy=policy)).stop == []


def test_job_workloads_of_its_own_make_a_runner_busy_whatever_gitlab_listed():
    local = runner("r1", busy=True, busy_by=BusyEvidence.LOCAL)
    p = decide(observe([local], [job(1)]))
    assert p.stop == [] and [s.runner for s in p.served] == ["start:0"]


def test_old_observations_still_decide_as_plan_does():
    from autogit.agent.planner import plan

    runners = [runner("a", idle_s=10_000), runner("b", busy=True), runner("c")]
    jobs = [job(1), job(2, ["arm64"])]
    assert decide(observe(runners, jobs)) == plan(HOST, runners, jobs, POLICY, NOW)


# --- scenarios: the new inputs, and the old files still load ----------------------------------------------

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.json")) + sorted((REPO / "agent/examples").glob("*.json")), ids=str)
def test_every_example_scenario_loads_and_plans(path: Path):
    plan, _ = plan_scenario(load_scenario(path))
    assert plan.served or plan.waiting or plan.stop


def test_the_lifecycle_example_states_every_new_input():
    plan, _ = plan_scenario(load_scenario(REPO / "examples/lifecycle.json"))
    assert [(r.runner[-4:], r.reason) for r in plan.remove] == [("aaaa", "exited"), ("cccc", "its GitLab registration is gone")]
    assert [a.runner[-4:] for a in plan.abort] == ["bbbb"]
    assert [(h.runner[-4:], h.reason) for h in plan.held] == [("eeee", "busy-unknown")]
    assert [(s.runner[-4:], s.reason) for s in plan.stop] == [("ffff", "idle-timeout")]
    assert [p.gitlab_id for p in plan.pause] == [16] and [d.gitlab_id for d in plan.delete_registrations] == [19]
    assert "start backing off" in plan.waiting[0].detail
