"""`autogit-agent run` as a real process: its own config file, state, runner directory and
socket, started the way systemd starts it (the token in the environment, never in argv)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from runner_harness import RunnerImages, runner_settings, short_token_labels

from autogit.agent.api.client import AgentClient
from autogit.agent.api.schema import FleetResponse
from autogit.agent.fleet import PRESENCE_DESCRIPTION_PREFIX, join_settle
from autogit.gitlab_double import GitLabSimulator

__all__ = [
    "FLEET", "ONLINE", "AgentProcess", "Fleet", "agent_environment", "all_see_each_other", "host_of_job", "job_runners", "presences",
    "idle_registrations", "until",
]  # fmt: skip

# Short bounds so that a test sees every transition: hold_off above twice the poll interval
# plus a listing (docs/runners/fleet.md), membership_ttl several heartbeats.
# forget_after above the GitLab double's online window of these tests (ONLINE = 4 s).
FLEET = {"enabled": True, "hold_off": 3, "membership_ttl": 4, "heartbeat_interval": 1, "forget_after": 6}
ONLINE = 4.0

AGENT = Path(sys.executable).parent / "autogit-agent"


def agent_environment(token: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without systemd's notify socket or umockdev's redirection (a
    process that should see a mocked /sys is given it explicitly, in `extra`)."""
    drop = ("NOTIFY_SOCKET", "UMOCKDEV_DIR", "LD_PRELOAD")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return env | {"AUTOGIT_GITLAB_TOKEN": token} | (extra or {})


class AgentProcess:
    """One agent host: `hostname` names its runners (`autogit:<hostname>:…`) and its presence."""

    def __init__(self, hostname: str, tmp: Path, gitlab_url: str, images: RunnerImages, token: str, **sections: Any) -> None:
        self.hostname = hostname
        self.token = token
        self.dir = tmp / hostname
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "agent.sock"
        self.log = self.dir / "agent.log"
        self.config_path = self.dir / "agent.yaml"
        runner = runner_settings(images, self.dir) | sections.pop("runner", {})
        config = {
            "hostname": hostname,
            "gitlab": {"url": gitlab_url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 0.5, "max_retries": 0,
                       "request_timeout": 3},
            "scaling": {"max_runners": 3, "idle_timeout": 3, "runner_cpus": 0, "runner_memory_mb": 0, "reserved_cpus": 0,
                        "reserved_memory_mb": 0},
            "runner": runner,
            "api": {"socket": str(self.socket)},
            "gpu": {"vendors": []},
        }  # fmt: skip
        for name, values in sections.items():
            config[name] = {**config.get(name, {}), **values}
        self.config_path.write_text(yaml.safe_dump(config))
        self.heartbeat_interval = float(config.get("fleet", {}).get("heartbeat_interval", 30))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, prefix: Sequence[str] | None = None, env: dict[str, str] | None = None) -> None:
        """`prefix`: e.g. nsenter into another network namespace; `env`: extra variables. A
        restart without them starts the agent as the previous start did."""
        self._prefix = list(prefix) if prefix is not None else getattr(self, "_prefix", [])
        self._env = env if env is not None else getattr(self, "_env", None)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*self._prefix, str(AGENT), "run", "--config", str(self.config_path)],
                env=agent_environment(self.token, self._env), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no clean-up of any kind, as on a crash or power loss of the agent."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def forgot(self) -> list[str]:
        """The fleet.forgot lines of this host's log: what it deleted for hosts gone for good."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if " fleet.forgot " in line]

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.hostname} ---\n" + (self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)")

    async def fleet(self) -> FleetResponse:
        """GET /v1/fleet on the agent's socket, as an operator would read it."""
        async with AgentClient(self.socket) as client:
            return await client.fleet()


# --- fleets of them ------------------------------------------------------------------------------


async def until(check: Callable[[], bool], timeout: float, what: str, hosts: Iterable[AgentProcess] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n" + "\n".join(h.tail() for h in hosts))


def job_runners(sim: GitLabSimulator, host: str) -> list[int]:
    """Every runner the host ever registered for jobs (its presence aside), deleted ones too."""
    return [r.id for r in sim.registered() if r.description.startswith(f"autogit:{host}:")]


def idle_registrations(sim: GitLabSimulator, host: str) -> list[int]:
    """The host's job-runner registrations that never ran a job. With one-job runners (each
    takes exactly one job, then is gone) every such registration is a duplicate start."""
    ran = {j.runner_id for j in sim.jobs}
    return [rid for rid in job_runners(sim, host) if rid not in ran]


def presences(sim: GitLabSimulator) -> list[str]:
    return sorted(r.description for r in sim.runners if r.description.startswith(PRESENCE_DESCRIPTION_PREFIX))


def host_of_job(sim: GitLabSimulator, job: int) -> str:
    runner_id = sim.job(job).runner_id
    return next(r.description.split(":")[1] for r in sim.registered() if r.id == runner_id)


async def all_see_each_other(hosts: list[AgentProcess], timeout: float = 60, settle: bool = True) -> None:
    """Every agent's /v1/fleet (the socket an operator reads) lists every host, live; then,
    with `settle`, until each has settled (a newcomer ranks last for fleet.join_settle)."""
    names = {h.hostname for h in hosts}

    async def seen() -> bool:
        for h in hosts:
            try:
                view = await h.fleet()
            except Exception:  # noqa: BLE001 - not listening yet
                return False
            if {x.hostname for x in view.hosts if x.live} != names:
                return False
        return True

    deadline = time.monotonic() + timeout
    while not await seen():
        if time.monotonic() > deadline:
            raise AssertionError("the fleet did not form\n" + "\n".join(h.tail() for h in hosts))
        await asyncio.sleep(0.3)
    if settle:
        await asyncio.sleep(join_settle(max(h.heartbeat_interval for h in hosts)))


class Fleet:
    """Agent processes on one GitLab; on close, every runner reaped and nothing left in Docker."""

    def __init__(self, sim: GitLabSimulator, images: RunnerImages, tmp: Path, n: int = 3, fleet: dict | None = None,
                 sections: dict[int, dict[str, Any]] | None = None) -> None:  # fmt: skip
        """`sections`: extra config sections of host i (e.g. {0: {"gpu": {"vendors": ["intel"]}}})."""
        self.sim = sim
        tag = uuid.uuid4().hex[:5]
        self.hosts = [
            AgentProcess(f"p{tag}{i}", tmp, sim.url, images, sim.private_token, fleet=fleet or FLEET, **(sections or {}).get(i, {}))
            for i in range(n)
        ]
        self.tokens: set[str] = set()

    def remember_tokens(self) -> None:
        self.tokens |= {r.token for r in self.sim.runners}

    async def close(self) -> None:
        """Let the live agents reap their idle runners (a killed one is started again for it:
        its runners outlived it), then stop them and check Docker holds nothing of theirs."""
        try:
            for h in self.hosts:
                if not h.alive:
                    h.start()
            await until(lambda: (self.remember_tokens(), not [r for r in self.sim.runners if r.description.startswith("autogit:")])[1],
                        90, "every runner of the fleet to be reaped", self.hosts)  # fmt: skip
        finally:
            for h in self.hosts:
                h.stop()
        for h in self.hosts:
            left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.autogit.host={h.hostname}"], capture_output=True, text=True)
            assert left.stdout.split() == [], f"{h.hostname} left containers"
        assert short_token_labels(self.tokens) == [], "job containers or volumes left behind"
        # one presence per host, whatever the restarts (a restarted agent adopts its own)
        assert presences(self.sim) == sorted(f"{PRESENCE_DESCRIPTION_PREFIX}{h.hostname}" for h in self.hosts)
