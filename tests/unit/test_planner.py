"""Every scheduling rule of the planner, one table-like test each."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

import pytest

from autogit.agent.model import Gpu, Host, Job, Policy, Runner, RunnerKind, WaitReason
from autogit.agent.planner import fair_order, plan

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOST = Host(hostname="h", arch="amd64", emulated=["arm64"], cpus=64, memory_mb=262144)
POLICY = Policy(max_runners=10, idle_timeout=300, runner_cpus=1, runner_memory_mb=1024, reserved_cpus=0, reserved_memory_mb=0)


def job(id: int, tags=(), project: int = 1, age_s: int = 60) -> Job:
    return Job(id=id, project_id=project, tags=list(tags), created_at=NOW - timedelta(seconds=age_s))


def runner(id: str, tags=("amd64", "x86_64"), busy=False, idle_s: float | None = 10, **kw) -> Runner:
    kind = kw.pop("kind", RunnerKind.NATIVE)
    return Runner(
        id=id,
        tags=list(tags),
        busy=busy,
        idle_since=None if busy or idle_s is None else NOW - timedelta(seconds=idle_s),
        run_untagged=kw.pop("run_untagged", kind is RunnerKind.NATIVE),
        kind=kind,
        **kw,
    )


def gpu(id: str, memory_mb: int = 81559, model="NVIDIA H100 80GB HBM3", **kw) -> Gpu:
    return Gpu(id=id, vendor="nvidia", model=model, memory_mb=memory_mb, **kw)


def run(jobs=(), runners=(), policy=POLICY, host=HOST, now=NOW):
    return plan(host, list(runners), list(jobs), policy, now)


def waits(p):
    return {w.job: w for w in p.waiting}


def test_untagged_job_starts_a_native_runner_that_takes_untagged_jobs():
    p = run([job(1)])
    assert len(p.start) == 1
    s = p.start[0]
    assert (s.kind, s.run_untagged, s.platform, s.for_jobs) == (RunnerKind.NATIVE, True, "linux/amd64", [1])
    assert set(s.tags) == {"amd64", "x86_64"}


def test_parallel_jobs_get_parallel_runners_one_job_each():
    p = run([job(i) for i in range(1, 5)])
    assert [s.for_jobs for s in p.start] == [[1], [2], [3], [4]]


def test_idle_runner_is_reused_instead_of_starting_one():
    p = run([job(1, ["amd64"])], [runner("r1")])
    assert p.start == [] and [(s.job, s.runner) for s in p.served] == [(1, "r1")]


def test_untagged_job_never_counts_on_a_runner_without_run_untagged():
    special = runner("r1", tags=["arm64"], kind=RunnerKind.EMULATED, platform="linux/arm64")
    p = run([job(1)], [special])
    assert len(p.start) == 1 and p.start[0].kind is RunnerKind.NATIVE


def test_job_tags_must_be_a_subset_of_runner_tags():
    p = run([job(1, ["amd64", "docker"])], [runner("r1")])
    w = waits(p)[1]
    assert w.reason is WaitReason.NO_MATCHING_HARDWARE and w.missing_tags == ["docker"]


def test_extra_tags_widen_every_profile():
    p = run([job(1, ["amd64", "docker"])], policy=POLICY.model_copy(update={"extra_tags": ["docker"]}))
    assert p.start and set(p.start[0].tags) == {"amd64", "x86_64", "docker"}


def test_foreign_arch_job_gets_an_emulated_runner_with_only_its_tags():
    p = run([job(1, ["arm64"])])
    s = p.start[0]
    assert (s.kind, s.tags, s.run_untagged, s.platform) == (RunnerKind.EMULATED, ["arm64"], False, "linux/arm64")


def test_foreign_arch_alias_tag_is_understood():
    p = run([job(1, ["aarch64"])])
    assert p.start[0].platform == "linux/arm64" and p.start[0].tags == ["aarch64"]


def test_emulation_disabled_in_policy():
    p = run([job(1, ["arm64"])], policy=POLICY.model_copy(update={"emulation": False}))
    assert waits(p)[1].reason is WaitReason.EMULATION_DISABLED and not p.start


def test_foreign_arch_without_binfmt_is_no_matching_hardware_naming_the_tag():
    p = run([job(1, ["riscv64"])])
    w = waits(p)[1]
    assert w.reason is WaitReason.NO_MATCHING_HARDWARE and w.missing_tags == ["riscv64"]
    assert "binfmt" in w.detail


def test_tags_that_exist_but_never_together():
    p = run([job(1, ["arm64", "amd64"])])
    w = waits(p)[1]
    assert w.reason is WaitReason.NO_MATCHING_HARDWARE and "never" not in w.detail and "all of" in w.detail


def test_emulated_runner_does_not_count_for_ordinary_jobs():
    arm = runner("r-arm", tags=["arm64"], kind=RunnerKind.EMULATED, platform="linux/arm64")
    p = run([job(1, ["amd64"]), job(2)], [arm])
    assert [s.kind for s in p.start] == [RunnerKind.NATIVE, RunnerKind.NATIVE]


def test_max_runners_caps_starts_and_says_so():
    p = run([job(i) for i in range(1, 6)], [runner("busy", busy=True)], policy=POLICY.model_copy(update={"max_runners": 3}))
    assert len(p.start) == 2
    w = waits(p)
    assert set(w) == {3, 4, 5} and all(x.reason is WaitReason.WAITING_FOR_CAPACITY for x in w.values())
    assert "max_runners (3)" in w[3].detail


def test_per_arch_cap():
    policy = POLICY.model_copy(update={"max_per_arch": {"arm64": 1}})
    p = run([job(1, ["arm64"]), job(2, ["arm64"]), job(3)], policy=policy)
    assert [s.platform for s in p.start] == ["linux/arm64", "linux/amd64"]
    assert "max_per_arch[arm64]" in waits(p)[2].detail


def test_cpu_budget_cap():
    host = HOST.model_copy(update={"cpus": 4})
    policy = POLICY.model_copy(update={"runner_cpus": 2, "reserved_cpus": 1})
    p = run([job(i) for i in range(1, 4)], host=host, policy=policy)
    assert len(p.start) == 1 and "CPU budget" in waits(p)[2].detail


def test_memory_budget_cap():
    host = HOST.model_copy(update={"memory_mb": 8192})
    policy = POLICY.model_copy(update={"runner_memory_mb": 3000, "reserved_memory_mb": 1024})
    p = run([job(i) for i in range(1, 4)], host=host, policy=policy)
    assert len(p.start) == 2 and "memory budget" in waits(p)[3].detail


def test_idle_runner_reaped_after_timeout_not_before():
    p = run([], [runner("old", idle_s=301), runner("young", idle_s=299)])
    assert [(s.runner, s.reason) for s in p.stop] == [("old", "idle-timeout")]


def test_idle_since_unknown_is_never_reaped():
    p = run([], [runner("r", idle_s=None)])
    assert p.stop == []


def test_busy_runner_is_never_stopped_even_when_old():
    r = Runner(id="b", tags=["amd64"], busy=True, idle_since=NOW - timedelta(days=3), run_untagged=True)
    p = run([], [r])
    assert p.stop == []


def test_warm_pool_keeps_idle_runners_and_fills_up():
    policy = POLICY.model_copy(update={"warm_pool": 2})
    p = run([], [runner("a", idle_s=1000)], policy=policy)
    assert p.stop == [] and len(p.start) == 1 and p.start[0].for_jobs == []


def test_warm_pool_keeps_the_most_recently_used():
    policy = POLICY.model_copy(update={"warm_pool": 1})
    p = run([], [runner("a", idle_s=1000), runner("b", idle_s=400)], policy=policy)
    assert [s.runner for s in p.stop] == ["a"]


def test_paused_starts_nothing_but_still_reaps():
    policy = POLICY.model_copy(update={"paused": True, "warm_pool": 1})
    p = run([job(1)], [runner("old", tags=["arm64"], kind=RunnerKind.EMULATED, idle_s=999)], policy=policy)
    assert p.start == [] and waits(p)[1].reason is WaitReason.SCALING_PAUSED
    assert [s.runner for s in p.stop] == ["old"]


def test_idle_runner_of_the_wrong_kind_makes_room_when_capped():
    policy = POLICY.model_copy(update={"max_runners": 1})
    arm = runner("arm", tags=["arm64"], kind=RunnerKind.EMULATED, platform="linux/arm64", idle_s=5)
    p = run([job(1)], [arm], policy=policy)
    assert [(s.runner, s.reason) for s in p.stop] == [("arm", "make-room")]
    assert p.start == [] and waits(p)[1].reason is WaitReason.WAITING_FOR_CAPACITY


def test_draining_runner_takes_no_job_and_goes_when_idle():
    p = run([job(1)], [runner("d", draining=True)])
    assert [(s.runner, s.reason) for s in p.stop] == [("d", "drained")]
    assert len(p.start) == 1


def test_fair_order_round_robins_projects_oldest_first():
    jobs = [job(i, project=1, age_s=1000 - i) for i in range(1, 6)] + [job(100, project=2, age_s=10)]
    assert [j.id for j in fair_order(jobs)][:3] == [1, 100, 2]


def test_no_project_starves_under_a_cap():
    policy = POLICY.model_copy(update={"max_runners": 2})
    jobs = [job(i, project=1, age_s=1000 - i) for i in range(1, 50)] + [job(999, project=2, age_s=1)]
    p = run(jobs, policy=policy)
    assert sorted(j for s in p.start for j in s.for_jobs) == [1, 999]


# --- GPUs -----------------------------------------------------------------------------------

GPU_HOST = HOST.model_copy(update={"gpus": [gpu("big", 81559), gpu("small", 23034, model="NVIDIA L4")]})


def test_gpu_job_gets_exactly_one_gpu_and_a_runner_with_only_its_tags():
    p = run([job(1, ["gpu"])], host=GPU_HOST)
    s = p.start[0]
    assert (s.kind, s.tags, s.run_untagged) == (RunnerKind.GPU, ["gpu"], False)
    assert s.gpu == "small"  # smallest that fits keeps the big GPU free


def test_gpu_bin_packing_keeps_the_big_gpu_for_the_job_that_needs_it():
    p = run([job(1, ["gpu"], age_s=100), job(2, ["gpu", "h100"], age_s=50)], host=GPU_HOST)
    assert {s.for_jobs[0]: s.gpu for s in p.start} == {1: "small", 2: "big"}


def test_a_gpu_is_never_shared():
    held = runner("g", tags=["gpu"], kind=RunnerKind.GPU, gpu="small", busy=True, run_untagged=False)
    p = run([job(1, ["gpu", "l4"]), job(2, ["gpu", "l4"])], [held], host=GPU_HOST)
    assert p.start == [] and "held" in waits(p)[1].detail


def test_unhealthy_and_drained_gpus_are_not_scheduled():
    host = HOST.model_copy(update={"gpus": [gpu("a", healthy=False), gpu("b", drained=True)]})
    p = run([job(1, ["gpu"])], host=host)
    w = waits(p)[1]
    assert p.start == [] and w.reason is WaitReason.GPU_UNAVAILABLE and "a, b" in w.detail


def test_busy_runner_on_a_lost_gpu_is_drained_not_stopped():
    held = runner("g", tags=["gpu"], kind=RunnerKind.GPU, gpu="gone", busy=True, run_untagged=False)
    p = run([], [held], host=GPU_HOST)
    assert p.stop == [] and [(d.runner, d.reason) for d in p.drain] == [("g", "gpu-gone")]


def test_idle_runner_on_an_unhealthy_gpu_is_stopped():
    host = HOST.model_copy(update={"gpus": [gpu("a", healthy=False)]})
    idle = runner("g", tags=["gpu"], kind=RunnerKind.GPU, gpu="a", run_untagged=False)
    p = run([], [idle], host=host)
    assert [(s.runner, s.reason) for s in p.stop] == [("g", "gpu-unhealthy")]


def test_ordinary_jobs_never_land_on_gpu_runners():
    idle_gpu = runner("g", tags=["gpu", "cuda"], kind=RunnerKind.GPU, gpu="big", run_untagged=False)
    p = run([job(1), job(2, ["amd64"])], [idle_gpu], host=GPU_HOST)
    assert {s.runner for s in p.served} == {"start:0", "start:1"}


def test_idle_gpu_runner_with_other_tags_makes_room_for_a_waiting_gpu_job():
    host = HOST.model_copy(update={"gpus": [gpu("only")]})
    idle_gpu = runner("g", tags=["cuda"], kind=RunnerKind.GPU, gpu="only", run_untagged=False, idle_s=1)
    p = run([job(1, ["gpu", "h100"])], [idle_gpu], host=host)
    assert [(s.runner, s.reason) for s in p.stop] == [("g", "make-room")]


def test_gpu_scheduling_off_gives_a_reason():
    p = run([job(1, ["gpu"])], host=GPU_HOST, policy=POLICY.model_copy(update={"gpus": False}))
    assert waits(p)[1].reason is WaitReason.GPU_UNAVAILABLE


def test_host_without_gpus_refuses_gpu_jobs_clearly():
    p = run([job(1, ["gpu", "cuda"])])
    w = waits(p)[1]
    assert w.reason is WaitReason.NO_MATCHING_HARDWARE and w.missing_tags == ["cuda", "gpu"]


@pytest.mark.parametrize("naive", [True, False])
def test_naive_times_are_utc(naive):
    now = NOW.replace(tzinfo=None) if naive else NOW
    p = plan(HOST, [runner("old", idle_s=301)], [], POLICY, now)
    assert [s.runner for s in p.stop] == ["old"]


# --- unresponsive runners (gitlab-runner stopped asking for jobs) --------------------------------


def test_an_idle_runner_that_leaves_a_matching_job_pending_past_pickup_timeout_is_replaced():
    policy = POLICY.model_copy(update={"pickup_timeout": 30})
    p = run([job(1, age_s=45)], [runner("r1", idle_s=40)], policy=policy)
    assert [(s.runner, s.reason) for s in p.stop] == [("r1", "unresponsive")]
    assert len(p.start) == 1 and p.start[0].for_jobs == [1]  # not counted as capacity: a fresh one is started


def test_a_runner_gets_pickup_timeout_before_it_is_taken_for_unresponsive():
    policy = POLICY.model_copy(update={"pickup_timeout": 30})
    for job_age, idle_s in ((45, 20), (20, 45)):  # the runner or the job is too recent
        p = run([job(1, age_s=job_age)], [runner("r1", idle_s=idle_s)], policy=policy)
        assert p.stop == [] and p.start == [] and [s.runner for s in p.served] == ["r1"]


def test_only_a_runner_that_matches_the_overdue_job_is_unresponsive():
    policy = POLICY.model_copy(update={"pickup_timeout": 30})
    arm = runner("arm", tags=["arm64", "aarch64"], kind=RunnerKind.EMULATED, platform="linux/arm64", idle_s=100)
    p = run([job(1, tags=["amd64"], age_s=100)], [arm, runner("busy", busy=True)], policy=policy)
    assert "arm" not in {s.runner for s in p.stop if s.reason == "unresponsive"}
    assert all(s.runner != "busy" for s in p.stop)  # a busy runner is never stopped


def test_fair_order_takes_the_time_a_job_entered_the_queue():
    # a later stage's job is created with its pipeline but queued only when the stage starts
    early_created_late_queued = job(1, age_s=600).model_copy(update={"queued_at": NOW - timedelta(seconds=5)})
    queued_before = job(2, age_s=60)
    assert [j.id for j in fair_order([early_created_late_queued, queued_before])] == [2, 1]
