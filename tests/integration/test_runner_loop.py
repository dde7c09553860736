"""The end-to-end runner loop on the real Docker engine:

GitLab simulator (a named double of GitLab) → reconciler → runner containers (a named double of
gitlab-runner, built locally, speaking the job protocol through PyPI's gitlab-python-runner) →
jobs finished. Nothing of the project's own is mocked.
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
    ids = []
    for i, (tags, platform, script) in enumerate(specs):
        job = sim.add_job(project_id=1 + i % 2, tags=tags, script=[script], name=f"job{i}", image_platform=platform)
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
