"""Fault tests on the real Docker engine: the agent killed with -9 and restarted, the Docker
engine restarted under the agent, and the GitLab API failing (500s, then hanging) for 20 s."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from runner_harness import Harness, finished, runner_settings, short_token_labels

from autogit.agent.state import AgentPhase

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def _cleanup(h: Harness) -> None:
    await h.cleanup()


# --- kill -9 of the agent in the middle ---------------------------------------------------------


def _agent_process(config: Path, token: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_SOCKET")}
    env["AUTOGIT_GITLAB_TOKEN"] = token
    exe = Path(sys.executable).parent / "autogit-agent"
    return subprocess.Popen([str(exe), "run", "--config", str(config)], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def test_kill_9_and_restart_loses_nothing_and_duplicates_nothing(sim, runner_image, tmp_path):
    host = f"k{os.getpid() % 100000}"
    config = {
        "hostname": host,
        "gitlab": {"url": sim.url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 0.5, "max_retries": 0, "request_timeout": 3},
        "scaling": {"max_runners": 3, "idle_timeout": 2, "runner_cpus": 0, "runner_memory_mb": 0},
        "runner": runner_settings(runner_image, tmp_path),
        "api": {"socket": str(tmp_path / "agent.sock")},
        "gpu": {"vendors": []},
        "fleet": {"enabled": False},  # a lone agent: no presence registration outlives the test
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = [sim.add_job(project_id=1, tags=[], script=["sleep 4", "echo done"], name=f"j{i}").id for i in range(6)]
    log = tmp_path / "agent.log"
    agent = _agent_process(path, sim.private_token, log)
    docker_ps = ["docker", "ps", "-q", "--filter", f"label=io.autogit.host={host}"]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(sim.job(j).status == "running" for j in jobs):
            await asyncio.sleep(0.3)
        assert any(sim.job(j).status == "running" for j in jobs), log.read_text()[-2000:]
        before = subprocess.run(docker_ps, capture_output=True, text=True).stdout.split()
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        # The runners outlive the agent: jobs go on while it is down.
        await asyncio.sleep(1)
        assert subprocess.run(docker_ps, capture_output=True, text=True).stdout.split() == before
        runners_before_restart = {r.id for r in sim.runners}

        agent = _agent_process(path, sim.private_token, log)
        deadline = time.monotonic() + 150
        tokens = {r.token for r in sim.runners}
        while time.monotonic() < deadline and not (finished(sim, jobs) and not sim.runners):
            tokens |= {r.token for r in sim.runners}
            await asyncio.sleep(0.5)
        assert finished(sim, jobs) and not sim.runners, log.read_text()[-3000:]
        # No lost job (each ran once, successfully) and no duplicate runner: the restarted agent
        # adopted the runners it found instead of registering new ones for the same jobs.
        assert all(sim.job(j).status == "success" for j in jobs)
        assert len({sim.job(j).runner_id for j in jobs} - runners_before_restart) <= len(jobs) - len(runners_before_restart)
        assert sim._ids["runner"] <= len(jobs)
        assert subprocess.run(docker_ps + ["-a"], capture_output=True, text=True).stdout.split() == []
        assert short_token_labels(tokens) == [], "job containers or volumes left behind"
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(20)
        except subprocess.TimeoutExpired:
            agent.kill()
        for cid in subprocess.run(docker_ps + ["-a"], capture_output=True, text=True).stdout.split():
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


# --- the Docker engine restarted under the agent --------------------------------------------------


def _restart_dockerd() -> None:
    if Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=120)
        return
    pid = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    assert pid, "dockerd is not running as a plain process here"
    os.kill(int(pid[0]), signal.SIGTERM)
    # dockerd stops its containers first (their stop signal, then its shutdown-timeout of 15 s)
    for _ in range(600):
        if subprocess.run(["pidof", "dockerd"], capture_output=True).returncode != 0:
            return
        time.sleep(0.1)
    raise AssertionError("dockerd did not stop within 60 s")


def _start_dockerd() -> None:
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return
    with open("/var/log/dockerd.log", "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(120):
        if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError("dockerd did not come back")


async def test_docker_engine_restart_under_the_agent(sim, runner_image, tmp_path):
    h = Harness(sim, runner_image, tmp_path, idle_timeout=600)
    try:
        first = [sim.add_job(project_id=1, tags=[], script=["echo one"]).id for _ in range(2)]
        await h.until(lambda: finished(sim, first), 120, "the first jobs")
        runners = {c.name for c in await h.runtime.list()}
        assert runners

        _restart_dockerd()
        try:
            plan = await h.reconciler.reconcile_once()  # Docker is down: report, keep, never crash
            assert plan is None and h.state.docker.ok is False and h.state.phase is AgentPhase.DEGRADED
        finally:
            _start_dockerd()

        second = [sim.add_job(project_id=1, tags=[], script=["echo two"]).id for _ in range(2)]
        await h.until(lambda: finished(sim, second), 120, "jobs after the Docker restart")
        assert h.state.docker.ok is True
        assert all(sim.job(j).status == "success" for j in first + second)
        # Registrations and containers still match one to one: nothing leaked either way.
        containers = await h.runtime.list()
        assert sorted(c.gitlab_id for c in containers) == sorted(r.id for r in sim.runners)
    finally:
        await _cleanup(h)


# --- GitLab failing for 20 s ---------------------------------------------------------------------------


async def test_gitlab_failing_for_20s_leaves_busy_runners_alone(sim, runner_image, tmp_path):
    h = Harness(sim, runner_image, tmp_path, idle_timeout=1)
    try:
        jobs = [sim.add_job(project_id=1, tags=[], script=["sleep 15", "echo survived"]).id for _ in range(2)]
        await h.until(lambda: all(sim.job(j).status == "running" for j in jobs), 120, "both jobs running")
        busy = sorted(c.name for c in await h.runtime.list())

        sim.set_fault("500", 10)
        fault_end = time.monotonic() + 20
        saw_500 = saw_timeout = False
        # A hanging request answers normally once the window closes, so stop checking a little
        # more than one request timeout (3 s here) before the end.
        while time.monotonic() < fault_end - 4:
            if time.monotonic() > fault_end - 10 and not saw_timeout:
                sim.set_fault("timeout", fault_end - time.monotonic())
            plan = await h.reconciler.reconcile_once()
            assert plan is None and h.state.gitlab.ok is False and h.state.phase is AgentPhase.DEGRADED
            saw_500 |= "500" in (h.state.gitlab.error or "")
            saw_timeout |= time.monotonic() > fault_end - 10
            # Busy runners untouched: same containers, none asked to stop.
            now = await h.runtime.list()
            assert sorted(c.name for c in now) == busy and all(c.stop_requested_at is None for c in now)
            await asyncio.sleep(0.5)
        assert saw_500 and saw_timeout
        while time.monotonic() < fault_end:
            await asyncio.sleep(0.2)
        sim.set_fault("none")

        await h.until(lambda: finished(sim, jobs) and not sim.runners, 120, "recovery: jobs done, runners reaped")
        assert h.state.gitlab.ok is True and h.state.phase is AgentPhase.RUNNING
        assert all(sim.job(j).status == "success" for j in jobs), [sim.job(j).trace.decode()[-300:] for j in jobs]
        assert await h.runtime.list() == []
        events = [e.type for e in h.state.bus.history()]
        assert "gitlab.failing" in events and "gitlab.ok" in events
    finally:
        await _cleanup(h)



# --- GitLab down long enough that gitlab-runner gives up asking ----------------------------------------


async def test_runners_that_stopped_asking_during_an_outage_do_not_strand_jobs(sim, runner_image, tmp_path):
    """gitlab-runner stops asking for unhealthy_interval after 3 job requests answered 403 (60 min by
    default; network/gitlab.go RequestJob, commands/health_helper.go: an outage, a dropped
    connection or a 5xx never does). Here the agent's setting is left at that default to show the
    planner's safety net: the idle runner that leaves a job pending past pickup_timeout is not
    capacity, it is replaced."""
    h = Harness(sim, runner_image, tmp_path, idle_timeout=600, pickup_timeout=8)
    h.config = h.config.model_copy(update={"runner": h.config.runner.model_copy(update={"unhealthy_interval": 3600})})
    h.runtime.config = h.config.runner
    h.reconciler = h.new_reconciler()
    try:
        first = sim.add_job(project_id=1, script=["echo before"]).id
        await h.until(lambda: finished(sim, [first]), 90, "the first job")
        (container,) = await h.runtime.list()
        idle = container.name
        # its token refused for a while (403): 3+ unhealthy requests at check_interval 1 s
        with sim._lock:
            registration = next(r for r in sim.runners if r.id == container.gitlab_id)
            token, registration.token = registration.token, "glrt-t3_refusedforawhile"
        await asyncio.sleep(7)
        with sim._lock:
            registration.token = token
        stranded = sim.add_job(project_id=1, script=["echo after"]).id
        await h.until(lambda: finished(sim, [stranded]), 90, "the job after the outage")
        assert sim.job(stranded).status == "success"
        stops = [e for e in h.state.bus.history() if e.type == "runner.stopping" and e.data.get("reason") == "unresponsive"]
        assert [e.data["runner"] for e in stops] == [idle]
    finally:
        await _cleanup(h)
