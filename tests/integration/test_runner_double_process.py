"""The gitlab-runner DOUBLE's signal, cancel and health rules, run as a plain process with the shell
executor against the GitLab simulator (both doubles; no Docker needed, so these run everywhere).
Each rule is gitlab-runner's, cited beside it in gitlab_double/runner_image/entrypoint.py; the
docker executor's own rules are pinned in test_runner_image.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gitlab
import pytest

from autogit.gitlab_double import GitLabSimulator

DOUBLE = Path(__file__).resolve().parents[2] / "gitlab_double" / "runner_image" / "entrypoint.py"
NONE = {"GIT_STRATEGY": "none"}  # the double's shell executor clones nothing


class DoubleProcess:
    def __init__(self, sim: GitLabSimulator, tmp: Path, command: list[str], shutdown_timeout: int = 120) -> None:
        gl = gitlab.Gitlab(sim.url, private_token=sim.private_token, timeout=10)
        gl.auth()
        assert gl.user is not None
        self.registration = gl.user.runners.create({"runner_type": "instance_type", "run_untagged": True, "description": "double"})
        self.name = f"double-{self.registration.id}"
        config = tmp / f"config-{self.registration.id}.toml"
        config.write_text(
            f"concurrent = 1\ncheck_interval = 1\nshutdown_timeout = {shutdown_timeout}\n[[runners]]\n"
            f'  name = "{self.name}"\n  url = "{sim.url}"\n  token = "{self.registration.token}"\n'
            f'  executor = "shell"\n  limit = 1\n  unhealthy_interval = "1h"\n  builds_dir = "{tmp / "builds"}"\n'
        )  # fmt: skip
        config.chmod(0o600)
        argv = [part.format(name=self.name, config=str(config)) for part in command]
        self.log = tmp / f"double-{self.registration.id}.log"
        self.proc = subprocess.Popen([sys.executable, "-u", str(DOUBLE), *argv], stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.logs():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no {text!r} in the double's log:\n{self.logs()[-3000:]}")
            time.sleep(0.1)


@pytest.fixture
def start_double(gitlab_sim: GitLabSimulator, tmp_path: Path) -> Iterator[Callable[..., DoubleProcess]]:
    started: list[DoubleProcess] = []

    def start(command: list[str], **kw: int) -> DoubleProcess:
        double = DoubleProcess(gitlab_sim, tmp_path, command, **kw)
        started.append(double)
        return double

    yield start
    for double in started:
        if double.proc.poll() is None:
            double.proc.kill()
            double.proc.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, double: DoubleProcess) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; log:\n{double.logs()[-3000:]}")
        time.sleep(0.1)


RUN = ["run", "--config", "{config}"]
RUN_SINGLE = ["run-single", "--config", "{config}", "--runner", "{name}", "--max-builds", "1"]


def test_a_second_signal_during_the_forceful_shutdown_exits_at_once(gitlab_sim: GitLabSimulator, start_double) -> None:
    """commands/multi.go handleForcefulShutdown: another stop signal returns "forced exit" and the
    process ends without waiting for anything (commands/single.go: logrus.Fatalln("forced exit"))."""
    double = start_double(RUN, shutdown_timeout=300)
    job = gitlab_sim.add_job(name="long", script=["sleep 300"], variables=NONE)
    wait_for(lambda: gitlab_sim.job(job.id).status == "running", 60, "the job to run", double)
    gitlab_sim.set_fault("500", 600)  # the abort's final update cannot land: the forceful shutdown goes on
    double.signal(signal.SIGTERM)
    double.wait_log("forceful shutdown")
    time.sleep(1)
    assert double.proc.poll() is None, "still inside its 300 s forceful shutdown"
    double.signal(signal.SIGQUIT)  # any stop signal, SIGQUIT too
    assert double.proc.wait(timeout=30) == 1
    assert "forced exit" in double.logs()


def test_run_single_sigquit_waits_out_the_sleep_after_a_403(gitlab_sim: GitLabSimulator, start_double) -> None:
    """commands/single.go processBuild: after an unhealthy (403) request it sleeps
    common.NotHealthyCheckInterval (300 s) or until abortSignal, fed only after SIGTERM; SIGQUIT
    just marks it finished. So a drained one-job runner may take 300 s to exit."""
    double = start_double(RUN_SINGLE)
    double.wait_log("Starting runner")
    with gitlab_sim._lock:  # its token refused: 403
        reg = next(r for r in gitlab_sim.runners if r.id == double.registration.id)
        reg.token = "glrt-t1_rotatedelsewhere"
    double.wait_log("Runner is not healthy!")
    double.signal(signal.SIGQUIT)
    double.wait_log("Requested quit")
    time.sleep(5)
    assert double.proc.poll() is None, "SIGQUIT cut short run-single's 300 s sleep"
    double.signal(signal.SIGTERM)  # the forceful path ends the sleep
    assert double.proc.wait(timeout=30) == 0


def test_a_canceled_job_ends_that_job_only(gitlab_sim: GitLabSimulator, start_double) -> None:
    """A trace update answered 403 with Job-Status canceled aborts that job's context (network/
    trace.go); the runner takes the next job, and a SIGTERM later is still a forceful shutdown."""
    double = start_double(RUN)
    ticking = gitlab_sim.add_job(name="ticking", script=["while true; do echo tick; sleep 1; done"], variables=NONE)
    wait_for(lambda: gitlab_sim.job(ticking.id).status == "running", 60, "the job to run", double)
    gitlab_sim.cancel_job(ticking.id)
    double.wait_log(f"Job {ticking.id} finished")
    second = gitlab_sim.add_job(name="second", script=["echo second-ran"], variables=NONE)
    wait_for(lambda: gitlab_sim.job(second.id).status in ("success", "failed"), 60, "the second job", double)
    assert gitlab_sim.job(second.id).status == "success", gitlab_sim.job(second.id).trace.decode()
    assert "second-ran" in gitlab_sim.job(second.id).trace.decode()
    assert double.proc.poll() is None
    third = gitlab_sim.add_job(name="third", script=["sleep 300"], variables=NONE)
    wait_for(lambda: gitlab_sim.job(third.id).status == "running", 60, "the third job", double)
    double.signal(signal.SIGTERM)
    assert double.proc.wait(timeout=30) == 0
    assert gitlab_sim.job(third.id).status == "failed" and "aborted" in gitlab_sim.job(third.id).trace.decode()


def test_only_a_403_counts_as_unhealthy(gitlab_sim: GitLabSimulator, start_double) -> None:
    """network/gitlab.go RequestJob: 403 (and a client that cannot be built) is unhealthy; a request
    that fails (refused, timed out: doJSON's -1) or a 5xx keeps the runner healthy, asking again
    every check_interval (commands/health_helper.go counts only the unhealthy ones)."""
    double = start_double(RUN)
    double.wait_log("Starting runner")
    gitlab_sim.set_fault("reset", 6)  # connections dropped unanswered: more than 3 failed requests
    time.sleep(6)
    gitlab_sim.set_fault("500", 4)  # then 5xx
    time.sleep(4)
    gitlab_sim.set_fault("none")
    job = gitlab_sim.add_job(name="after-outage", script=["echo back"], variables=NONE)
    wait_for(lambda: gitlab_sim.job(job.id).status == "success", 30, "the job after the outage", double)
    assert "disabled for" not in double.logs()


def test_version_answers_like_the_real_binary() -> None:
    """main.go sets cli.VersionPrinter to common/version.go's Printer: the Extended() block."""
    for version, revision in (("17.11.3", "3995fbff"), ("19.3.0", "9cbf0074")):
        env = os.environ | {"GITLAB_RUNNER_DOUBLE_VERSION": version}
        out = subprocess.run([sys.executable, str(DOUBLE), "--version"], capture_output=True, text=True, env=env, timeout=30)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert [line.split(":", 1)[0] for line in lines] == ["Version", "Git revision", "Git branch", "GO version", "Built", "OS/Arch"]
        assert lines[0] == f"Version:      {version}" and lines[1] == f"Git revision: {revision}"
