"""GitLab Job Hook webhooks: the listener's checks over real HTTP, and the simulator's hooks
waking the real reconciler so a runner starts long before the next poll."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr
from runner_harness import Harness

from autogit.agent.config import WebhookConfig
from autogit.agent.events import EventBus
from autogit.agent.gitlab.webhook import WebhookListener
from autogit.gitlab_double.gitlab_sim import GitLabSimulator

SECRET = "s3cret-webhook-token"
HOOK = {"object_kind": "build", "build_id": 41, "build_status": "pending", "project_id": 1, "build_name": "x"}


@pytest.fixture
async def listener():
    seen: list[tuple[int, int, str]] = []

    async def on_job(project_id: int, job_id: int, status: str) -> None:
        seen.append((project_id, job_id, status))

    bus = EventBus()
    hook = WebhookListener(WebhookConfig(enabled=True, listen="127.0.0.1:0", max_body_bytes=4096), SecretStr(SECRET), bus, on_job)
    await hook.start()
    hook.seen = seen
    yield hook
    await hook.stop()


async def _post(hook: WebhookListener, headers: dict[str, str], body: bytes) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{hook.port}/hooks/gitlab", data=body, headers=headers) as resp:
            return resp.status


async def test_listener_reads_gitlabs_documented_job_hook(listener):
    """GitLab's own Job Hook example (tests/upstream/gitlab/job_hook.json, with its source):
    the listener takes the project, the job and its status from it, and nothing else."""
    body = (Path(__file__).resolve().parents[1] / "upstream" / "gitlab" / "job_hook.json").read_bytes()
    assert await _post(listener, {"X-Gitlab-Event": "Job Hook", "X-Gitlab-Token": SECRET}, body) == 202
    async with asyncio.timeout(5):
        while not listener.seen:
            await asyncio.sleep(0.01)
    assert listener.seen == [(380, 1977, "created")]


async def test_listener_accepts_only_signed_job_hooks(listener):
    body = json.dumps(HOOK).encode()
    job_hook = {"X-Gitlab-Event": "Job Hook"}
    assert await _post(listener, job_hook, body) == 401  # unsigned
    assert await _post(listener, job_hook | {"X-Gitlab-Token": SECRET[:-1] + "X"}, body) == 401  # wrong
    assert await _post(listener, job_hook | {"X-Gitlab-Token": SECRET}, b"{not json") == 400
    assert await _post(listener, {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}, body) == 202  # ignored
    assert await _post(listener, job_hook | {"X-Gitlab-Token": SECRET}, b"x" * 8192) == 413  # over max_body_bytes
    assert listener.seen == []
    assert await _post(listener, job_hook | {"X-Gitlab-Token": SECRET}, body) == 202
    async with asyncio.timeout(5):  # the lookup runs after the answer
        while not listener.seen:
            await asyncio.sleep(0.01)
    assert listener.seen == [(1, 41, "pending")]
    assert (listener.refused, listener.accepted) == (3, 1)
    # One event per client address per REFUSAL_EVENT_INTERVAL: the three refusals above came from one.
    refusals = [e for e in listener.bus.history() if e.type == "webhook.refused"]
    assert len(refusals) == 1 and all(SECRET not in e.message for e in refusals)


@pytest.mark.docker
async def test_webhook_scales_up_before_the_next_poll(runner_image, tmp_path):
    sim = GitLabSimulator(host="127.0.0.1")
    await sim.start()
    sim.add_project(2, "autogit/other", group_id=1)
    h = Harness(sim, runner_image, tmp_path)
    # Polling every 10 minutes: only the webhook can bring the runner up within the test.
    h.config = h.config.model_copy(update={"gitlab": h.config.gitlab.model_copy(update={"poll_interval": 600})})
    h.reconciler = h.new_reconciler()

    async def on_job(project_id: int, job_id: int, _status: str) -> None:
        status, job = await h.gitlab.get_job(project_id, job_id)
        h.reconciler.hint_job(status, job)

    hook = WebhookListener(WebhookConfig(enabled=True, listen="127.0.0.1:0"), SecretStr(SECRET), h.state.bus, on_job)
    await hook.start()
    sim.add_webhook(f"http://127.0.0.1:{hook.port}/hooks/gitlab", SECRET)
    loop = asyncio.create_task(h.reconciler.run_forever())
    try:
        await asyncio.sleep(0.5)  # the first (full) pass: nothing pending yet
        job = sim.add_job(project_id=1, script=["echo via webhook"])
        async with asyncio.timeout(60):
            while sim.job(job.id).status != "success":
                await asyncio.sleep(0.1)
        started = [e for e in h.state.bus.history() if e.type == "runner.started"]
        assert started and started[0].data["for_jobs"] == [job.id]
        assert hook.accepted >= 1 and hook.refused == 0
    finally:
        h.reconciler.stop()
        await loop
        await hook.stop()
        await h.cleanup()
        await sim.stop()


async def test_the_hook_is_answered_before_the_job_lookup():
    """GitLab waits 10 s at most for a hook and disables failing ones: the answer cannot wait
    for a GitLab API call."""
    release = asyncio.Event()
    looked_up: list[int] = []

    async def slow_lookup(project_id: int, job_id: int, status: str) -> None:
        await release.wait()  # a GitLab that is slow to answer the job lookup
        looked_up.append(job_id)

    bus = EventBus()
    hook = WebhookListener(WebhookConfig(enabled=True, listen="127.0.0.1:0"), SecretStr(SECRET), bus, slow_lookup)
    await hook.start()
    try:
        status = await _post(hook, {"X-Gitlab-Event": "Job Hook", "X-Gitlab-Token": SECRET}, json.dumps(HOOK).encode())
        assert status == 202 and looked_up == []  # answered while the lookup still waits
        release.set()
        async with asyncio.timeout(5):
            while not looked_up:
                await asyncio.sleep(0.01)
        assert looked_up == [41]
    finally:
        await hook.stop()
