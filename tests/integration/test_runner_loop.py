"""The end-to-end runner loop on the real Docker engine:

GitLab simulator (a named double of GitLab) → reconciler → runner containers (the gitlab-runner
double, built locally, docker executor) → job containers on the job's platform → jobs finished.
Nothing of the project's own is mocked.
"""

from __future__ import annotations

import pytest
from runner_harness import Harness, finished

from autogit.agent.model import RunnerKind, WaitReason

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def test_thirty_mixed_jobs_run_on_matching_runners_and_nothing_leaks(harness: Harness):
    sim = harness.sim
    arch = harness.host.arch
    assert {"arm64", "riscv64"} <= set(harness.host.emulated), "QEMU binfmt with the F flag is set up by scripts/dev-setup"
    specs = (
        [([], None, "echo plain; uname -m")] * 10
        + [([arch], None, "echo native; uname -m")] * 8
        + [(["arm64"], "linux/arm64", "uname -m")] * 5
        + [(["riscv64"], "linux/riscv64", "uname -m")] * 5
        + [(["s390x"], "linux/s390x", "uname -m")] * 2
    )
    images = {"linux/arm64": harness.images.job_arm64, "linux/riscv64": harness.images.job_riscv64, "linux/s390x": harness.images.job}
    ids = []
    for i, (tags, platform, script) in enumerate(specs):
        job = sim.add_job(project_id=1 + i % 2, tags=tags, script=[script], name=f"job{i}", image_platform=platform,
                          image=images.get(platform or ""))  # fmt: skip
        ids.append(job.id)
    servable = [i for i, s in zip(ids, specs) if "s390x" not in s[0]]
    unservable = [i for i, s in zip(ids, specs) if "s390x" in s[0]]

    await harness.until(lambda: finished(sim, servable), timeout=240, what="28 servable jobs to finish")

    # Every job succeeded on a runner whose tags contain its tags, and foreign code really ran.
    for job_id, (tags, platform, _) in zip(ids, specs):
        if job_id in unservable:
            continue
        job = sim.job(job_id)
        trace = job.trace.decode(errors="replace")
        assert job.status == "success", (job_id, job.status, trace[-500:])
        assert set(tags) <= harness.runner_tags[job.runner_id]
        if platform == "linux/arm64":
            assert "aarch64" in trace
        if platform == "linux/riscv64":
            assert "riscv64" in trace
    # No runner started for a special job took an ordinary one.
    for job_id, (tags, _, _) in zip(ids, specs):
        job = sim.job(job_id)
        if job_id not in unservable and not (set(tags) - {arch}):
            assert not {"arm64", "riscv64"} & harness.runner_tags[job.runner_id]

    # The unservable jobs wait with their reason.
    waits = {w.job: w for w in harness.state.plan.waiting}
    for job_id in unservable:
        assert waits[job_id].reason is WaitReason.NO_MATCHING_HARDWARE and waits[job_id].missing_tags == ["s390x"]
    assert sim.job(unservable[0]).status == "pending"

    # Idle runners are reaped back to zero: no container, no registration left.
    for job_id in unservable:
        sim.cancel_job(job_id)
    await harness.until(lambda: not sim.runners, timeout=60, what="runners to be reaped")
    assert await harness.runtime.list() == []
    assert not list((harness.config.runner.config_dir).glob("*"))
    history = harness.state.bus.history()
    deleted = [e.data["gitlab_id"] for e in history if e.type == "registration.deleted"]
    started = [e.data["gitlab_id"] for e in history if e.type == "runner.started"]
    assert sorted(deleted) == sorted(started)  # each registration deleted exactly once
    kinds = {e.data.get("kind") for e in history if e.type == "runner.started"}
    assert {RunnerKind.NATIVE.value, RunnerKind.EMULATED.value} <= kinds


def use_runner_version(harness: Harness, version: str) -> None:
    """Run the gitlab-runner double claiming this version (before any runner starts)."""
    image = harness.images.runner if version == "17.11.3" else harness.images.runner_v19
    harness.config = harness.config.model_copy(update={"runner": harness.config.runner.model_copy(update={"image": image})})
    harness.runtime.config = harness.config.runner
    harness.reconciler = harness.new_reconciler()


@pytest.mark.parametrize("version", ["17.11.3", "19.3.0"])
async def test_a_job_tagged_for_an_emulated_arch_without_a_platform_fails_and_says_how(harness: Harness, version: str):
    """gitlab-runner has no runner-level platform: such a job would run amd64 code and pass, and so
    would one whose image is amd64 though it asks for linux/arm64 (v17 runs a local image as its own
    architecture; v19.3 does too on a dockerd older than API 1.49). The emulated runner's
    pre_build_script fails both, with the line that fixes it, under either version's rule."""
    use_runner_version(harness, version)
    sim = harness.sim
    unasked = sim.add_job(tags=["arm64"], script=["uname -m"], name="no-platform").id
    wrong = sim.add_job(tags=["arm64"], script=["uname -m"], name="amd64-image", image=harness.images.job, image_platform="linux/arm64").id
    asked = sim.add_job(tags=["arm64"], script=["uname -m"], name="platform", image=harness.images.job_arm64, image_platform="linux/arm64").id
    await harness.until(lambda: finished(sim, [unasked, wrong, asked]), timeout=120, what="three arm64 jobs")
    job = sim.job(unasked)
    trace = job.trace.decode(errors="replace")
    assert (job.status, job.failure_reason) == ("failed", "script_failure"), trace[-800:]
    assert "tagged for linux/arm64 but runs on x86_64" in trace and "docker: {platform: linux/arm64}" in trace
    assert sim.job(wrong).status == "failed", sim.job(wrong).trace.decode(errors="replace")[-800:]
    assert sim.job(asked).status == "success" and "aarch64" in sim.job(asked).trace.decode()
    assert f"gitlab-runner {version}" in sim.job(asked).trace.decode()


async def test_one_job_runners_take_exactly_one_job_each_and_leave_nothing(harness: Harness):
    harness.config = harness.config.model_copy(update={"runner": harness.config.runner.model_copy(update={"mode": "one-job"})})
    harness.runtime.config = harness.config.runner
    harness.reconciler = harness.new_reconciler()
    sim = harness.sim
    ids = [sim.add_job(project_id=1, script=["echo one-job", "sleep 1"], name=f"o{i}").id for i in range(3)]
    await harness.until(lambda: finished(sim, ids) and not sim.runners, timeout=120, what="3 one-job runs and clean-up")
    assert all(sim.job(i).status == "success" for i in ids)
    runner_ids = [sim.job(i).runner_id for i in ids]
    assert len(set(runner_ids)) == 3, "each one-job runner took exactly one job"
    assert await harness.runtime.list() == []


async def test_a_drain_past_its_deadline_aborts_the_job_and_a_kill_leaves_nothing(harness: Harness):
    """SIGQUIT, then at drain_timeout SIGTERM (gitlab-runner aborts the job and removes its
    containers), then SIGKILL only past force_timeout; whatever is left is removed with the runner."""
    sim = harness.sim
    long = sim.add_job(project_id=1, script=["sleep 300"], name="long").id
    await harness.until(lambda: sim.job(long).status == "running", timeout=60, what="the long job to run")
    # The deadline shrinks after the runner was registered (a reload): its maximum_timeout, which
    # the agent keeps within the drain deadline, was the old one, so only the agent can end it.
    harness.config = harness.config.model_copy(update={"runner": harness.config.runner.model_copy(update={"drain_timeout": 2, "force_timeout": 1})})
    harness.runtime.config = harness.config.runner
    harness.reconciler = harness.new_reconciler()
    (runner,) = await harness.runtime.list()
    harness.state.drain_runner(runner.name, "test")  # an operator drains it
    await harness.until(lambda: sim.job(long).status == "failed" and not sim.runners, timeout=60, what="abort and removal")
    types = [e.type for e in harness.state.bus.history() if e.data.get("runner") == runner.name]
    assert types.index("runner.draining") < types.index("runner.aborting") < types.index("runner.removed")
    assert "runner.killed" not in types  # the double aborted within force_timeout
    assert "aborted" in sim.job(long).trace.decode()


@pytest.mark.parametrize("version", ["17.11.3", "19.3.0"])
async def test_job_containers_a_killed_runner_left_are_removed_with_it(harness: Harness, version: str):
    """Cache volumes carry only gitlab-runner's label, `runner.id` = its short token, whose form
    changed in v18.2 (helpers/shorten_token.go): for GitLab's glrt-t1_ tokens the agent must look
    for both forms or leak the volumes of a runner ≥ 18.2."""
    use_runner_version(harness, version)
    sim = harness.sim
    long = sim.add_job(project_id=1, script=["sleep 300"], name="long").id
    await harness.until(lambda: sim.job(long).status == "running", timeout=60, what="the long job to run")
    (runner,) = await harness.runtime.list()
    await harness.runtime.force_kill(runner.name)  # SIGKILL: gitlab-runner cleans nothing
    left = harness.leftovers()
    assert any(name != runner.name for name in left), "the job's containers outlive a killed runner"
    sim.cancel_job(long)
    await harness.until(lambda: not sim.runners, timeout=60, what="the dead runner to be removed")
    assert harness.leftovers() == []


async def test_no_job_outlives_the_drain_deadline_through_maximum_timeout(harness: Harness):
    """The agent registers runners with GitLab's maximum_timeout = runner.drain_timeout."""
    sim = harness.sim
    job = sim.add_job(project_id=1, script=["echo ok"]).id
    await harness.until(lambda: finished(sim, [job]), timeout=60, what="the job")
    runner = next(r for r in sim.runners if r.id == sim.job(job).runner_id) if sim.runners else None
    limit = runner.maximum_timeout if runner else sim.job(job).timeout_s
    assert limit == int(harness.config.runner.drain_timeout)
