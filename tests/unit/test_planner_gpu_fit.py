"""GPU fit rules of the planner: memory floors, smallest that fits, MIG instances as GPUs."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

from autogit.agent.model import Gpu, Host, Job, Policy, Runner, RunnerKind, WaitReason
from autogit.agent.planner import plan

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = Policy(max_runners=10, idle_timeout=300, runner_cpus=1, runner_memory_mb=1024, reserved_cpus=0, reserved_memory_mb=0)

# What the drivers report (MiB): RTX 4090 24564 (→ 24 GiB), an L40S-sized 48 GiB board, H100
# 81559 (→ 80), and an H100 in MIG mode with a 1g.10gb (9984) and a 3g.40gb (40448) instance.
RTX4090 = Gpu(id="GPU-4090", vendor="nvidia", model="NVIDIA GeForce RTX 4090", memory_mb=24564, compute_capability="8.9")
L40S = Gpu(id="GPU-l40s", vendor="nvidia", model="NVIDIA L40S", memory_mb=49152, compute_capability="8.9")
H100 = Gpu(id="GPU-a-h100", vendor="nvidia", model="NVIDIA H100 80GB HBM3", memory_mb=81559, compute_capability="9.0")
SPLIT = Gpu(id="GPU-split", vendor="nvidia", model="NVIDIA H100 80GB HBM3", memory_mb=81559, compute_capability="9.0", mig_mode=True)
SLICE_10 = Gpu(
    id="MIG-10", vendor="nvidia", model="NVIDIA H100 80GB HBM3 MIG 1g.10gb", memory_mb=9984,
    compute_capability="9.0", mig_parent="GPU-split", mig_profile="1g.10gb",
)  # fmt: skip
SLICE_40 = SLICE_10.model_copy(
    update={"id": "MIG-40", "model": "NVIDIA H100 80GB HBM3 MIG 3g.40gb", "memory_mb": 40448, "mig_profile": "3g.40gb"}
)


def host(*gpus: Gpu) -> Host:
    return Host(hostname="h", arch="amd64", cpus=64, memory_mb=262144, gpus=list(gpus))


def job(id: int, tags, age_s: int = 60) -> Job:
    return Job(id=id, project_id=1, tags=list(tags), created_at=NOW - timedelta(seconds=age_s))


def gpu_runner(id: str, gpu: str, tags=("gpu",), busy=False) -> Runner:
    return Runner(
        id=id, tags=list(tags), kind=RunnerKind.GPU, gpu=gpu, busy=busy,
        idle_since=None if busy else NOW - timedelta(seconds=10),
    )  # fmt: skip


THREE_SIZES = host(RTX4090, L40S, H100)


def run(jobs, runners=(), on=THREE_SIZES):
    return plan(on, list(runners), list(jobs), POLICY, NOW)


def started(p) -> dict[int, str | None]:
    return {s.for_jobs[0]: s.gpu for s in p.start}


# --- memory floors and the smallest that fits ----------------------------------------------------


def test_a_memory_floor_takes_the_smallest_gpu_at_or_above_it():
    assert started(run([job(1, ["gpu", "vram-ge-40g"])])) == {1: "GPU-l40s"}
    assert started(run([job(1, ["gpu", "vram-ge-16g"])])) == {1: "GPU-4090"}
    assert started(run([job(1, ["gpu", "vram-ge-64g"])])) == {1: "GPU-a-h100"}


def test_the_smallest_fit_wins_even_when_a_bigger_gpu_sorts_first_by_id():
    # 'GPU-a-h100' < 'GPU-l40s' by id; memory decides first.
    assert started(run([job(1, ["gpu", "nvidia"])], on=host(H100, L40S))) == {1: "GPU-l40s"}


def test_a_floor_above_every_gpu_waits_naming_the_floor():
    p = run([job(1, ["gpu", "vram-ge-96g"])])
    [w] = p.waiting
    assert w.reason is WaitReason.NO_MATCHING_HARDWARE and w.missing_tags == ["vram-ge-96g"]
    assert p.start == []


def test_big_gpus_stay_free_for_the_jobs_that_need_them():
    p = run([job(1, ["gpu"], age_s=90), job(2, ["gpu", "vram-ge-24g"], age_s=60), job(3, ["gpu", "vram-ge-80g"], age_s=30)])
    assert started(p) == {1: "GPU-4090", 2: "GPU-l40s", 3: "GPU-a-h100"}


def test_compute_capability_floor_and_exact_tag():
    assert started(run([job(1, ["gpu", "cc-ge-9.0"])])) == {1: "GPU-a-h100"}
    assert started(run([job(1, ["gpu", "cc-ge-8.0"])])) == {1: "GPU-4090"}
    assert started(run([job(1, ["gpu", "cc-8.9", "vram-ge-32g"])])) == {1: "GPU-l40s"}


def test_an_idle_runner_on_the_smaller_gpu_is_reused_first():
    on_big, on_small = gpu_runner("r-a", "GPU-a-h100"), gpu_runner("r-b", "GPU-4090")
    p = run([job(1, ["gpu"])], [on_big, on_small])
    assert [(s.job, s.runner) for s in p.served] == [(1, "r-b")]


# --- MIG instances are GPUs of their own ------------------------------------------------------------

MIG_HOST = host(RTX4090, SPLIT, SLICE_10, SLICE_40)


def test_a_mig_job_gets_the_smallest_fitting_instance_by_its_uuid():
    p = run([job(1, ["mig"]), job(2, ["mig", "vram-ge-20g"])], on=MIG_HOST)
    assert started(p) == {1: "MIG-10", 2: "MIG-40"}
    assert {s.for_jobs[0]: s.tags for s in p.start} == {1: ["mig"], 2: ["mig", "vram-ge-20g"]}


def test_a_profile_tag_names_one_kind_of_slice():
    assert started(run([job(1, ["mig-3g.40gb"])], on=MIG_HOST)) == {1: "MIG-40"}


def test_a_gpu_in_mig_mode_is_never_handed_out_whole():
    p = run([job(1, ["gpu", "h100"])], on=MIG_HOST)
    [w] = p.waiting
    assert w.reason is WaitReason.GPU_UNAVAILABLE and "MIG mode" in w.detail and "GPU-split" in w.detail
    assert p.start == []


def test_whole_gpu_jobs_never_land_on_a_slice():
    # `gpu` means a whole GPU: with the H100 split, the 4090 is the only candidate.
    assert started(run([job(1, ["gpu", "cuda"])], on=MIG_HOST)) == {1: "GPU-4090"}


def test_a_job_asking_for_gpu_and_mig_is_told_why_it_never_fits():
    [w] = run([job(1, ["gpu", "mig"])], on=MIG_HOST).waiting
    assert w.reason is WaitReason.NO_MATCHING_HARDWARE and "a MIG instance carries `mig`" in w.detail


def test_a_parent_listed_with_instances_is_not_taken_whole_even_without_the_mig_flag():
    parent = SPLIT.model_copy(update={"mig_mode": False})
    p = run([job(1, ["gpu", "h100"])], on=host(parent, SLICE_10))
    assert p.start == [] and p.waiting[0].reason is WaitReason.GPU_UNAVAILABLE


def test_a_runner_on_the_whole_gpu_keeps_its_instances_free_of_new_runners_and_goes():
    # A runner started on the whole H100 before MIG was switched on still holds it: no slice
    # may be handed out beside it; busy it is drained, idle it is stopped.
    busy = gpu_runner("r-whole", "GPU-split", busy=True)
    p = run([job(1, ["mig"])], [busy], on=host(SPLIT, SLICE_10, SLICE_40))
    assert p.start == [] and p.waiting[0].reason is WaitReason.WAITING_FOR_CAPACITY
    assert [(d.runner, d.reason) for d in p.drain] == [("r-whole", "gpu-mig-mode")]
    idle = gpu_runner("r-whole", "GPU-split")
    p = run([], [idle], on=host(SPLIT, SLICE_10))
    assert [(s.runner, s.reason) for s in p.stop] == [("r-whole", "gpu-mig-mode")]


def test_a_held_instance_blocks_only_itself_not_its_sibling():
    p = run([job(1, ["mig"])], [gpu_runner("r1", "MIG-10", tags=["mig-1g.10gb"], busy=True)], on=MIG_HOST)
    assert started(p) == {1: "MIG-40"}


def test_an_instance_that_vanished_under_a_busy_runner_drains_it():
    p = run([], [gpu_runner("r1", "MIG-gone", tags=["mig"], busy=True)], on=MIG_HOST)
    assert [(d.runner, d.reason) for d in p.drain] == [("r1", "gpu-gone")]
