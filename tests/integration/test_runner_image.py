"""The runner double image (tests/doubles/runner_image) against the GitLab simulator, both named
doubles, on the real Docker engine: PyPI's gitlab-python-runner inside the container holds the
simulator to the job protocol, and foreign-architecture jobs really run foreign code (QEMU
through binfmt_misc with the F flag)."""

from __future__ import annotations

import ipaddress
import platform
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gitlab
import pytest

from autogit.agent.sim import GitLabSimulator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BUILD = Path(__file__).resolve().parents[1] / "doubles" / "runner_image" / "build.sh"
NATIVE = {"x86_64": "x86_64", "amd64": "x86_64"}.get(platform.machine(), platform.machine())
ON_BRIDGE = [{"host": "0.0.0.0"}]  # the container reaches the simulator through the bridge gateway


@pytest.fixture(scope="session")
def runner_image(docker_client: Any) -> str:
    out = subprocess.run(["sh", str(BUILD)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


class RunnerContainer:
    """Registers a runner in the simulator and starts the double with a read-only 0600 config."""

    def __init__(self, client: Any, image: str, sim: GitLabSimulator, tmp: Path, tags: list[str],
                 command: list[str] | None = None) -> None:
        gl = gitlab.Gitlab(sim.url, private_token=sim.private_token, timeout=10)
        gl.auth()
        assert gl.user is not None
        self.registration = gl.user.runners.create({"runner_type": "instance_type", "tag_list": tags,
                                                    "run_untagged": True, "description": "double"})
        ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]  # Docker 20.10 may omit Gateway
        gateway = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"])[1])
        config = tmp / f"config-{uuid.uuid4().hex[:8]}.toml"
        config.write_text(
            "concurrent = 1\ncheck_interval = 1\nshutdown_timeout = 30\n\n[[runners]]\n"
            f'  name = "double-{self.registration.id}"\n  url = "http://{gateway}:{sim.port}"\n'
            f'  token = "{self.registration.token}"\n  executor = "shell"\n  limit = 1\n'
        )
        config.chmod(0o600)
        self.container = client.containers.run(
            image, command, detach=True, name=f"autogit-test-runner-{uuid.uuid4().hex[:8]}",
            volumes={str(config): {"bind": "/etc/gitlab-runner/config.toml", "mode": "ro"}},
            labels={"autogit.test": "runner-double"},
        )

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        return int(self.container.wait(timeout=timeout)["StatusCode"])

    def remove(self) -> None:
        self.container.remove(force=True)


@pytest.fixture
def start_runner(docker_client: Any, runner_image: str, tmp_path: Path) -> Iterator[Callable[..., RunnerContainer]]:
    started: list[RunnerContainer] = []

    def start(sim: GitLabSimulator, tags: list[str] | None = None, command: list[str] | None = None) -> RunnerContainer:
        runner = RunnerContainer(docker_client, runner_image, sim, tmp_path, tags or [], command)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.remove()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, runner: RunnerContainer) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; runner log:\n{runner.logs()[-3000:]}")
        time.sleep(0.2)


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_native_and_emulated_jobs_succeed(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    plain = gitlab_sim.add_job(name="plain", script=["echo native on $(uname -m)", "test -n \"$CI_JOB_ID\""])
    arm = gitlab_sim.add_job(tags=["arm64"], name="arm", script=["uname -m"], image_platform="linux/arm64")
    rv = gitlab_sim.add_job(tags=["riscv64"], name="rv", script=["uname -m"], image_platform="linux/riscv64")
    failing = gitlab_sim.add_job(name="fails", script=["echo before", "false", "echo never"])
    runner = start_runner(gitlab_sim, ["arm64", "riscv64"])

    ids = [plain.id, arm.id, rv.id, failing.id]
    wait_for(lambda: all(gitlab_sim.job(i).status in ("success", "failed") for i in ids), 120, "4 jobs", runner)

    assert [gitlab_sim.job(i).status for i in ids] == ["success", "success", "success", "failed"]
    assert all(gitlab_sim.job(i).runner_id == runner.registration.id for i in ids)
    assert f"native on {NATIVE}" in gitlab_sim.job(plain.id).trace.decode()
    arm_trace, rv_trace = gitlab_sim.job(arm.id).trace.decode(), gitlab_sim.job(rv.id).trace.decode()
    assert "aarch64" in arm_trace.replace("$ uname -m", "") and NATIVE not in arm_trace
    assert "riscv64" in rv_trace.replace("$ uname -m", "") and NATIVE not in rv_trace
    failed_trace = gitlab_sim.job(failing.id).trace.decode()
    assert "before" in failed_trace and "never" not in failed_trace.replace("$ echo never", "")
    assert gitlab_sim.job(failing.id).failure_reason == "script_failure"
    assert runner.registration.token not in runner.logs(), "no runner token in the container log"


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_sigquit_finishes_the_running_job_then_exits(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    runner = start_runner(gitlab_sim)
    busy = gitlab_sim.add_job(name="busy", script=["sleep 3", "echo finished-after-quit"])
    wait_for(lambda: gitlab_sim.job(busy.id).status == "running", 60, "the job to start", runner)
    runner.container.kill(signal="SIGQUIT")
    later = gitlab_sim.add_job(name="later")

    assert runner.wait_exit(timeout=60) == 0
    assert gitlab_sim.job(busy.id).status == "success"
    assert "finished-after-quit" in gitlab_sim.job(busy.id).trace.decode()
    time.sleep(1.5)  # more than check_interval: a runner that still polled would have taken it
    assert gitlab_sim.job(later.id).status == "pending", "a draining runner takes no new job"


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_sigterm_aborts_the_job_and_exits_soon(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    runner = start_runner(gitlab_sim)
    long = gitlab_sim.add_job(name="long", script=["sleep 300"])
    wait_for(lambda: gitlab_sim.job(long.id).status == "running", 60, "the job to start", runner)
    started = time.monotonic()
    runner.container.kill(signal="SIGTERM")
    assert runner.wait_exit(timeout=30) == 0
    assert time.monotonic() - started < 15
    assert gitlab_sim.job(long.id).status == "failed"
    assert "aborted" in gitlab_sim.job(long.id).trace.decode()


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_max_builds_runs_one_job_then_exits(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    first, second = gitlab_sim.add_job(name="one"), gitlab_sim.add_job(name="two")
    runner = start_runner(gitlab_sim, command=["run", "--max-builds", "1"])
    assert runner.wait_exit(timeout=60) == 0
    assert sorted([gitlab_sim.job(first.id).status, gitlab_sim.job(second.id).status]) == ["pending", "success"]
