"""The gitlab-runner DOUBLE (gitlab_double/runner_image) against the GitLab simulator, both named
doubles, on the real Docker engine, with the docker executor: each job runs in its own job
container (and a helper container), foreign-architecture jobs in job images of that architecture
run by QEMU through binfmt_misc. These tests pin the gitlab-runner behaviours the agent depends
on, so the double cannot drift into leniency (rules and sources: entrypoint.py's docstring)."""

from __future__ import annotations

import ipaddress
import platform
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import gitlab
import pytest
import tomli_w
from runner_harness import RunnerImages

from autogit.agent.runtime.runner_config import platform_check_script, short_token_v17, short_token_v18_2
from autogit.gitlab_double import GitLabSimulator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NATIVE = {"x86_64": "x86_64", "amd64": "x86_64"}.get(platform.machine(), platform.machine())
ON_BRIDGE = [{"host": "0.0.0.0"}]  # the container reaches the simulator through the bridge gateway
GITLAB_RUNNER_LABEL = "com.gitlab.gitlab-runner.runner.id"


class RunnerContainer:
    """Registers a runner in the simulator and starts the double with a read-only 0600 config."""

    def __init__(self, client: Any, images: RunnerImages, sim: GitLabSimulator, tmp: Path, tags: list[str],
                 command: list[str] | None = None, extra: str = "", global_extra: str = "", docker_extra: str = "",
                 version: str = "17.11.3") -> None:  # fmt: skip
        self.version = version
        gl = gitlab.Gitlab(sim.url, private_token=sim.private_token, timeout=10)
        gl.auth()
        assert gl.user is not None
        self.registration = gl.user.runners.create({"runner_type": "instance_type", "tag_list": tags,
                                                    "run_untagged": True, "description": "double"})  # fmt: skip
        self.client = client
        ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]  # Docker 20.10 may omit Gateway
        gateway = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"])[1])
        self.name = f"double-{self.registration.id}"
        command = [part.format(name=self.name) for part in command] if command else None
        directory = tmp / f"config-{uuid.uuid4().hex[:8]}"
        directory.mkdir()
        config = directory / "config.toml"
        config.write_text(
            f"concurrent = 1\ncheck_interval = 1\nshutdown_timeout = 10\n{global_extra}\n[[runners]]\n"
            f'  name = "{self.name}"\n  url = "http://{gateway}:{sim.port}"\n'
            f'  token = "{self.registration.token}"\n  executor = "docker"\n  limit = 1\n{extra}'
            f'  [runners.docker]\n    image = "{images.job}"\n    helper_image = "{images.helper}"\n'
            f'    pull_policy = ["never"]\n    volumes = ["/cache"]\n'
            f'    container_labels = {{ "io.autogit.test" = "{self.name}" }}\n{docker_extra}'
        )  # fmt: skip
        config.chmod(0o600)
        self.container = client.containers.run(
            images.runner if version == "17.11.3" else images.runner_v19, command, detach=True, name=f"autogit-test-runner-{uuid.uuid4().hex[:8]}",
            volumes={str(directory): {"bind": "/etc/gitlab-runner", "mode": "ro"},
                     "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
            labels={"autogit.test": "runner-double"},
        )  # fmt: skip

    def short_token(self) -> str:
        """helpers/shorten_token.go of the version the double claims."""
        token = self.registration.token
        return short_token_v17(token) if self.version.startswith("17.") else short_token_v18_2(token)

    def job_containers(self) -> list[Any]:
        while True:  # the SDK inspects each listed container: one the runner removed meanwhile is not an error
            try:
                return self.client.containers.list(all=True, filters={"label": f"{GITLAB_RUNNER_LABEL}={self.short_token()}"})
            except docker.errors.NotFound:
                continue

    def volumes(self) -> list[Any]:
        return self.client.volumes.list(filters={"label": f"{GITLAB_RUNNER_LABEL}={self.short_token()}"})

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        return int(self.container.wait(timeout=timeout)["StatusCode"])

    def remove(self) -> None:
        self.container.remove(force=True, v=True)
        for c in self.job_containers():
            c.remove(force=True, v=True)
        for v in self.volumes():
            v.remove(force=True)


@pytest.fixture
def start_runner(docker_client: Any, runner_image: RunnerImages, tmp_path: Path) -> Iterator[Callable[..., RunnerContainer]]:
    started: list[RunnerContainer] = []

    def start(sim: GitLabSimulator, tags: list[str] | None = None, command: list[str] | None = None, **kw: Any) -> RunnerContainer:
        runner = RunnerContainer(docker_client, runner_image, sim, tmp_path, tags or [], command, **kw)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.remove()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, runner: RunnerContainer) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        runner.container.reload()
        if time.monotonic() > deadline or runner.container.status == "exited":
            raise AssertionError(f"timed out waiting for {what}; runner log:\n{runner.logs()[-3000:]}")
        time.sleep(0.2)


def done(sim: GitLabSimulator, *ids: int) -> bool:
    return all(sim.job(i).status in ("success", "failed") for i in ids)


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_jobs_run_in_job_containers_on_their_platform(gitlab_sim: GitLabSimulator, start_runner: Any, runner_image: RunnerImages) -> None:
    plain = gitlab_sim.add_job(name="plain", script=["echo native on $(uname -m)", "test -n \"$CI_JOB_ID\"", "cat /etc/debian_version"])
    arm = gitlab_sim.add_job(tags=["arm64"], name="arm", script=["uname -m"], image=runner_image.job_arm64, image_platform="linux/arm64")
    rv = gitlab_sim.add_job(tags=["riscv64"], name="rv", script=["uname -m"], image=runner_image.job_riscv64, image_platform="linux/riscv64")
    failing = gitlab_sim.add_job(name="fails", script=["echo before", "exit 3", "echo never"])
    # an amd64 image asked for as linux/arm64: v17 finds the local tag and runs it as its own
    # architecture (pull/manager.go, docker.go platformForImage), so amd64 code runs and passes
    wrong = gitlab_sim.add_job(name="wrong-platform", script=["echo on $(uname -m)"], image=runner_image.job, image_platform="linux/arm64")
    runner = start_runner(gitlab_sim, ["arm64", "riscv64"])
    ids = [plain.id, arm.id, rv.id, failing.id, wrong.id]
    wait_for(lambda: done(gitlab_sim, *ids), 120, "5 jobs", runner)

    assert [gitlab_sim.job(i).status for i in ids] == ["success", "success", "success", "failed", "success"]
    assert f"native on {NATIVE}" in gitlab_sim.job(plain.id).trace.decode()
    arm_trace, rv_trace = gitlab_sim.job(arm.id).trace.decode(), gitlab_sim.job(rv.id).trace.decode()
    assert "aarch64" in arm_trace.replace("$ uname -m", "") and NATIVE not in arm_trace
    assert "riscv64" in rv_trace.replace("$ uname -m", "") and NATIVE not in rv_trace
    failed = gitlab_sim.job(failing.id)
    assert "\nbefore\n" in failed.trace.decode() and "\nnever\n" not in failed.trace.decode()
    assert (failed.failure_reason, failed.exit_code) == ("script_failure", 3)
    assert f"on {NATIVE}" in gitlab_sim.job(wrong.id).trace.decode()  # why an emulated runner needs its guard
    assert runner.registration.token not in runner.logs(), "no runner token in the container log"
    # job and helper containers are removed after each job; the cache volumes stay (gitlab-runner's cache)
    assert runner.job_containers() == []
    assert runner.volumes() and all(v.name.startswith(f"runner-{runner.short_token()}-project-") for v in runner.volumes())


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_run_single_without_runner_name_ignores_config_toml(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    gitlab_sim.add_job(name="one")
    runner = start_runner(gitlab_sim, command=["run-single", "--config", "/etc/gitlab-runner/config.toml", "--max-builds", "1"])
    assert runner.wait_exit(timeout=30) == 1
    assert "Missing URL" in runner.logs()


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_run_single_with_runner_name_takes_exactly_one_job(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    first, second = gitlab_sim.add_job(name="one"), gitlab_sim.add_job(name="two")
    runner = start_runner(gitlab_sim, command=["run-single", "--config", "/etc/gitlab-runner/config.toml", "--runner", "{name}", "--max-builds", "1"])
    assert runner.wait_exit(timeout=90) == 0, runner.logs()
    assert sorted([gitlab_sim.job(first.id).status, gitlab_sim.job(second.id).status]) == ["pending", "success"]


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_an_unknown_config_key_refuses_to_start(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    runner = start_runner(gitlab_sim, extra='  platform = "linux/arm64"\n')
    assert runner.wait_exit(timeout=30) == 1
    assert "runners[0].platform: not a gitlab-runner" in runner.logs()


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_sigquit_finishes_the_running_job_then_exits(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    runner = start_runner(gitlab_sim)
    busy = gitlab_sim.add_job(name="busy", script=["sleep 3", "echo finished-after-quit"])
    wait_for(lambda: gitlab_sim.job(busy.id).status == "running", 60, "the job to start", runner)
    runner.container.kill(signal="SIGQUIT")
    time.sleep(0.5)
    runner.container.kill(signal="SIGQUIT")  # more SIGQUITs change nothing
    later = gitlab_sim.add_job(name="later")

    assert runner.wait_exit(timeout=60) == 0
    assert gitlab_sim.job(busy.id).status == "success"
    assert "finished-after-quit" in gitlab_sim.job(busy.id).trace.decode()
    time.sleep(1.5)  # more than check_interval: a runner that still polled would have taken it
    assert gitlab_sim.job(later.id).status == "pending", "a draining runner takes no new job"
    assert runner.job_containers() == []


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_sigterm_aborts_the_job_and_removes_its_containers(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    runner = start_runner(gitlab_sim)
    long = gitlab_sim.add_job(name="long", script=["sleep 300"])
    wait_for(lambda: gitlab_sim.job(long.id).status == "running" and any(
        c.labels.get("com.gitlab.gitlab-runner.type") == "build" for c in runner.job_containers()), 60, "the build container", runner)
    started = time.monotonic()
    runner.container.kill(signal="SIGTERM")
    assert runner.wait_exit(timeout=30) == 0
    assert time.monotonic() - started < 15
    assert gitlab_sim.job(long.id).status == "failed"
    assert "aborted" in gitlab_sim.job(long.id).trace.decode()
    assert runner.job_containers() == []


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
@pytest.mark.parametrize("version", ["17.11.3", "19.3.0"])
def test_sigkill_leaves_the_job_container_behind_labelled(gitlab_sim: GitLabSimulator, start_runner: Any, version: str) -> None:
    """What the agent must clean up after a killed runner: gitlab-runner cleans nothing then. Its
    labels carry the short token of its version: for GitLab's glrt-t1_ tokens the forms differ."""
    runner = start_runner(gitlab_sim, version=version)
    assert runner.registration.token.startswith("glrt-t1_")  # GitLab's form today (app/models/ci/runner.rb)
    long = gitlab_sim.add_job(name="long", script=["sleep 300"])
    wait_for(lambda: gitlab_sim.job(long.id).status == "running" and any(
        c.labels.get("com.gitlab.gitlab-runner.type") == "build" for c in runner.job_containers()), 60, "the build container", runner)
    runner.container.kill(signal="SIGKILL")
    runner.wait_exit(timeout=30)
    left = runner.job_containers()
    assert left and all(c.labels.get("io.autogit.test") == runner.name for c in left)
    assert runner.volumes() and all(v.name.startswith(f"runner-{runner.short_token()}-project-") for v in runner.volumes())


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_after_three_failed_requests_it_stops_asking_for_unhealthy_interval(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    runner = start_runner(gitlab_sim, extra='  unhealthy_interval = "1h"\n')
    wait_for(lambda: "Starting runner" in runner.logs(), 30, "the runner to start", runner)
    gitlab_sim.set_fault("500", 0)  # not a failure to gitlab-runner: it keeps asking
    # a token GitLab refuses: 403 is unhealthy (network/gitlab.go RequestJob)
    with gitlab_sim._lock:
        reg = next(r for r in gitlab_sim.runners if r.id == runner.registration.id)
        reg.token = "glrt-rotated-elsewhere"
    wait_for(lambda: "disabled for 3600 s" in runner.logs(), 30, "the runner to give up", runner)
    with gitlab_sim._lock:
        reg.token = runner.registration.token
    job = gitlab_sim.add_job(name="stranded")
    time.sleep(3)
    assert gitlab_sim.job(job.id).status == "pending", "an unhealthy runner takes no job until unhealthy_interval ends"


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
@pytest.mark.parametrize("version", ["17.11.3", "19.3.0"])
def test_the_emulated_runners_guard_holds_under_both_image_platform_rules(gitlab_sim: GitLabSimulator, start_runner: Any,
                                                                          runner_image: RunnerImages, version: str) -> None:  # fmt: skip
    """What the agent writes for an arm64 runner (a pre_build_script, runner_config.platform_check_script)
    fails every job that would not run arm64 code, whichever rule finds the image: v17's local
    tag as its own architecture, or v19.3's platform-aware lookup (on dockerd API >= 1.49; below,
    v19.3 falls back to v17's)."""
    guard = tomli_w.dumps({"pre_build_script": platform_check_script("linux/arm64")})  # what render_config writes
    runner = start_runner(gitlab_sim, ["arm64"], extra="  " + guard, version=version)
    right = gitlab_sim.add_job(tags=["arm64"], name="right", script=["uname -m"], image=runner_image.job_arm64, image_platform="linux/arm64")
    wrong = gitlab_sim.add_job(tags=["arm64"], name="wrong", script=["echo ran"], image=runner_image.job, image_platform="linux/arm64")
    unasked = gitlab_sim.add_job(tags=["arm64"], name="unasked", script=["echo ran"])
    wait_for(lambda: done(gitlab_sim, right.id, wrong.id, unasked.id), 120, "3 jobs", runner)
    assert gitlab_sim.job(right.id).status == "success" and "aarch64" in gitlab_sim.job(right.id).trace.decode()
    for job in (wrong, unasked):
        trace = gitlab_sim.job(job.id).trace.decode()
        assert gitlab_sim.job(job.id).status == "failed" and "\nran" not in trace, trace[-600:]
    assert f"gitlab-runner {version}" in gitlab_sim.job(right.id).trace.decode()


@pytest.mark.parametrize("gitlab_sim", ON_BRIDGE, indirect=True)
def test_the_helper_gets_the_build_containers_host_settings_and_labels(gitlab_sim: GitLabSimulator, start_runner: Any) -> None:
    """executors/docker/docker.go: every container of a job gets createHostConfig's settings (memory,
    CPUs, devices, GPUs, groups, privileged, network) and prepareContainerLabels' container_labels;
    only the platform differs (the helper stays native)."""
    runner = start_runner(gitlab_sim, docker_extra='    memory = "300m"\n    cpus = "1.5"\n    group_add = ["4321"]\n')
    long = gitlab_sim.add_job(name="long", script=["sleep 300"])
    wait_for(lambda: gitlab_sim.job(long.id).status == "running" and any(
        c.labels.get("com.gitlab.gitlab-runner.type") == "build" for c in runner.job_containers()), 60, "the build container", runner)
    runner.container.kill(signal="SIGKILL")  # what it leaves can be inspected
    runner.wait_exit(timeout=30)
    by_type = {c.labels["com.gitlab.gitlab-runner.type"]: c for c in runner.job_containers()}
    assert set(by_type) == {"predefined", "build"}
    for kind, container in by_type.items():
        host = container.attrs["HostConfig"]
        assert container.labels.get("io.autogit.test") == runner.name, kind
        assert (host["Memory"], host["NanoCpus"], host["GroupAdd"]) == (300 * 1024 * 1024, 1_500_000_000, ["4321"]), kind


def test_the_image_answers_version_and_has_gitlab_runner_on_path(docker_client: Any, runner_image: RunnerImages) -> None:
    """The official image runs `gitlab-runner` from PATH; `--version` prints common/version.go's block."""
    for image, version in ((runner_image.runner, "17.11.3"), (runner_image.runner_v19, "19.3.0")):
        out = docker_client.containers.run(image, ["--version"], remove=True).decode()
        assert out.splitlines()[0] == f"Version:      {version}" and "Git revision:" in out and "OS/Arch:      linux/" in out
        found = docker_client.containers.run(image, ["-c", "command -v gitlab-runner && gitlab-runner --version | head -1"],
                                             entrypoint="sh", remove=True).decode()  # fmt: skip
        assert found.splitlines() == ["/usr/bin/gitlab-runner", f"Version:      {version}"]
