"""The secrets of a real `autogit-agent run` process: read once, then gone from its
/proc/<pid>/environ (what root, and the agent's own user outside ProtectProc=, could read there,
and what every child would inherit); a systemd credential wins over the environment; a reload
keeps the token the environment gave at start; a short webhook secret draws one warning line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from agent_process import AgentProcess

from autogit.agent.api.client import AgentClient

pytestmark = [pytest.mark.docker]

WEBHOOK_SECRET = "short-secret"  # under 16 characters: warned about


async def gitlab_ok(agent: AgentProcess, timeout: float = 60) -> None:
    """Until the agent's status says GitLab answers (its token was accepted)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert agent.alive, agent.tail()
        try:
            async with AgentClient(agent.socket) as client:
                last = (await client.status()).gitlab
            if last.ok:
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(f"GitLab never healthy: {last}\n{agent.tail()}")


def environ_of(agent: AgentProcess) -> bytes:
    assert agent.process is not None
    return Path(f"/proc/{agent.process.pid}/environ").read_bytes()


def new_agent(sim, runner_image, tmp_path: Path, token: str) -> AgentProcess:
    return AgentProcess(f"s{time.monotonic_ns() % 10**8}", tmp_path, sim.url, runner_image, token, fleet={"enabled": False})


async def test_the_token_and_webhook_secret_leave_the_agents_environment(sim, runner_image, tmp_path):
    agent = new_agent(sim, runner_image, tmp_path, sim.private_token)
    agent.start(env={"AUTOGIT_WEBHOOK_SECRET": WEBHOOK_SECRET})
    try:
        await gitlab_ok(agent)  # the token was read and used...
        environ = environ_of(agent)
        assert b"PATH=" in environ  # (the file is readable and holds the rest)
        for secret in (sim.private_token, WEBHOOK_SECRET, "AUTOGIT_GITLAB_TOKEN", "AUTOGIT_WEBHOOK_SECRET"):
            assert secret.encode() not in environ, f"{secret} is still in /proc/<pid>/environ"  # ...and is gone
        async with AgentClient(agent.socket) as client:
            await client.reload("secrets test")  # the environment no longer has it: the value read at start stands
            await asyncio.sleep(1)
            status = await client.status()
        assert status.config is not None and status.config.reloads == 1
        assert "AUTOGIT_GITLAB_TOKEN (secret)" not in status.config.applied
        await gitlab_ok(agent)
        warnings = [line for line in agent.tail(20000).splitlines() if "webhook secret is shorter than 16" in line]
        assert len(warnings) == 1, agent.tail()
        assert WEBHOOK_SECRET not in agent.tail(20000) and sim.private_token not in agent.tail(20000)
    finally:
        agent.stop()


async def test_a_systemd_credential_wins_over_the_environment(sim, runner_image, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "gitlab-token").write_text(sim.private_token + "\n")
    wrong = "glpat-WRONG-TOKEN-IN-THE-ENV-FILE"
    agent = new_agent(sim, runner_image, tmp_path, wrong)
    agent.start(env={"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        await gitlab_ok(agent)  # with the wrong token it would be refused (401)
        environ = environ_of(agent)
        assert wrong.encode() not in environ and b"AUTOGIT_GITLAB_TOKEN" not in environ
    finally:
        agent.stop()
