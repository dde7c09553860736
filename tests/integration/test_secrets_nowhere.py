"""Where an operator, a local user or a job could look, no secret is: a real `autogit-agent run`
serves a job through a real runner container, and meanwhile and afterwards its GitLab token, its
webhook secret and every runner token GitLab issued to it are absent from every GET answer of the
socket API (status, GPUs, runners, jobs, plan, fleet, the event history, /metrics), from the
agent's log, from every process's command line on the host, and from the runner containers'
environment, command and labels (what `docker inspect` shows to the docker group).

The TUI draws only what the socket API answers, so the API's answers bound what it can show."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import aiohttp
import docker
import pytest
from agent_process import AgentProcess
from runner_harness import finished

from autogit.agent.api.openapi import ROUTES

pytestmark = [pytest.mark.docker]


async def socket_answers(path: Path) -> dict[str, bytes]:
    """The body of every GET route of the API document, the event stream's replay included."""
    answers: dict[str, bytes] = {}
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session:
        for route in ROUTES:
            if route.method != "GET":
                continue
            if route.name == "events":  # a stream: take what the replay and one second bring
                async with session.get("http://agent/v1/events", params={"since": "0"}) as resp:
                    assert resp.status == 200
                    chunks = bytearray()
                    try:
                        async with asyncio.timeout(1):
                            async for chunk in resp.content.iter_any():
                                chunks += chunk
                    except TimeoutError:
                        pass
                    answers[route.path] = bytes(chunks)
                continue
            async with session.get(f"http://agent{route.path}") as resp:
                assert resp.status == 200, (route.path, resp.status)
                answers[route.path] = await resp.read()
    assert b"runner.started" in answers["/v1/events"], "the replay holds the run's events"
    return answers


def process_arguments() -> dict[str, bytes]:
    """Every process's command line on this host (runner containers' processes included)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isascii() and proc.name.isdigit():
            try:
                found[proc.name] = (proc / "cmdline").read_bytes()
            except OSError:
                pass  # gone meanwhile
    return found


def container_views(client: docker.DockerClient, hostname: str) -> dict[str, bytes]:
    views = {}
    for c in client.containers.list(all=True, filters={"label": f"io.autogit.host={hostname}"}):
        config = c.attrs["Config"]
        views[c.name] = repr(
            [config.get("Env"), config.get("Cmd"), config.get("Entrypoint"), c.attrs.get("Args"), config.get("Labels")]
        ).encode()
    return views


async def test_no_secret_reaches_the_api_the_log_argv_or_containers(sim, runner_image, tmp_path):
    webhook_secret = secrets.token_hex(32)
    agent = AgentProcess(f"n{time.monotonic_ns() % 10**8}", tmp_path, sim.url, runner_image, sim.private_token,
                         fleet={"enabled": False}, webhook={"enabled": True, "listen": "127.0.0.1:0"})  # fmt: skip
    client = docker.from_env()
    runner_tokens: set[str] = set()
    seen: dict[str, bytes] = {}

    def look() -> None:
        runner_tokens.update(r.token for r in sim.runners)
        for pid, argv in process_arguments().items():
            seen[f"argv of pid {pid}"] = argv
        for name, view in container_views(client, agent.hostname).items():
            seen[f"container {name}"] = view

    agent.start(env={"AUTOGIT_WEBHOOK_SECRET": webhook_secret})
    try:
        job = sim.add_job(project_id=1, tags=[], script=["sleep 2", "echo done"]).id
        deadline = time.monotonic() + 120
        while not finished(sim, [job]):
            assert agent.alive and time.monotonic() < deadline, agent.tail()
            look()
            await asyncio.sleep(0.5)
        look()
        assert sim.job(job).status == "success", sim.job(job)
        assert runner_tokens, "GitLab issued the agent a runner token"
        for path, body in (await socket_answers(agent.socket)).items():
            seen[f"socket GET {path}"] = body
    finally:
        agent.stop()
    seen["the agent's log"] = agent.log.read_bytes()

    for secret in {sim.private_token, webhook_secret, *runner_tokens}:
        leaks = [where for where, text in seen.items() if secret.encode() in text]
        assert leaks == [], f"a secret ({secret[:6]}…) is in: {leaks}"
