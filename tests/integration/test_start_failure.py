"""A runner that cannot be started (ISSUE 19, 5b): a mistyped `runner.image` made the Docker
library's error escape the runtime untranslated; every pass then created and deleted a GitLab
registration, with no backoff, and the operator saw "reconcile pass failed". Now the runtime says
it in the adapters' error tree, the start backs off, and the cause is one line in the event, the
journal and status. Real Docker engine, GitLab double."""

from __future__ import annotations

import logging

import pytest
from runner_harness import Harness

from autogit.agent.model import WaitReason

pytestmark = [pytest.mark.docker]

BAD_IMAGE = "autogit-test/no-such-runner-image:typo"


async def test_a_mistyped_runner_image_backs_off_and_says_why_once(harness: Harness, caplog: pytest.LogCaptureFixture):
    sim = harness.sim
    harness.config = harness.config.model_copy(update={"runner": harness.config.runner.model_copy(update={"image": BAD_IMAGE})})
    harness.runtime.config = harness.config.runner
    harness.reconciler = harness.new_reconciler()
    job = sim.add_job(project_id=1, tags=[], script=["true"], name="plain")

    with caplog.at_level(logging.WARNING, logger="autogit.reconciler"):
        for _ in range(3):
            await harness.reconciler.reconcile_once(full_poll=True)

    # One registration was created, and deleted again with its failed runner; none since.
    assert len(sim.registered()) == 1, [r.description for r in sim.registered()]
    assert sim.runners == []
    history = harness.state.bus.history()
    assert [e.type for e in history if e.type == "agent.error"] == []  # no "reconcile pass failed"
    (failed,) = [e for e in history if e.type == "runner.start-failed"]
    assert BAD_IMAGE in failed.message and "\n" not in failed.message and "next try in" in failed.message
    # The journal line carries the pass id and the same cause.
    lines = [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("[pass p") and BAD_IMAGE in lines[0]
    # Status says it, and the job says why it waits.
    assert any(BAD_IMAGE in line for line in harness.state.docker.problems)
    wait = {w.job: w for w in harness.state.plan.waiting}[job.id]
    assert wait.reason is WaitReason.WAITING_FOR_CAPACITY and "start backing off" in wait.detail and BAD_IMAGE in wait.detail
    assert await harness.runtime.list() == []


async def test_the_config_of_a_runner_that_was_never_created_is_removed_on_the_next_pass(harness: Harness):
    """The agent died between writing a runner's config (with its token) and creating it: the
    pass removes what no runner owns (RunnerRuntime.leftovers), and only that."""
    config_dir = harness.config.runner.docker.config_dir
    stale = config_dir / f"autogit-{harness.hostname}-native-deadbeef00"
    stale.mkdir(parents=True)
    (stale / "config.toml").write_text('[[runners]]\ntoken = "glrt-left-behind"\n')
    await harness.reconciler.reconcile_once(full_poll=True)
    assert not stale.exists()
