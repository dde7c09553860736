"""What a CI job can reach, per executor, on the real Docker engine (docs/security/README.md,
"What a CI job can reach, per executor"): the Docker socket is root on the host, so it goes only
where the executor needs it.

- shell executor: the job runs inside the runner container, so that container gets no socket,
  and the job finds none;
- docker executor: the runner manager starts each job's sibling containers through the socket,
  so it holds it; the job container it starts does not get it (config.toml's [runners.docker]
  volumes are `/cache` only, privileged off).

The runners are the gitlab-runner double (its shell and docker executors), GitLab the simulator;
the agent's reconciler and Docker runtime are the real ones.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import docker
import pytest
from runner_harness import Harness, finished

from autogit.agent.runtime.docker import DOCKER_SOCKET, JOB_OF_LABEL

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The job fails (exit 3) if it can see the host's Docker socket, and prints who it runs as (its
# output lines differ from the command lines the trace echoes).
PROBE = [
    f'if [ -e {DOCKER_SOCKET} ]; then echo "DOCKER SOCKET" "REACHABLE"; exit 3; fi',
    'echo "no docker socket; uid=$(id -u)"',
    "sleep 4",
]


def use_executor(harness: Harness, executor: str) -> None:
    harness.config = harness.config.model_copy(update={"runner": harness.config.runner.model_copy(update={"executor": executor})})
    harness.runtime.config = harness.config.runner
    harness.reconciler = harness.new_reconciler()


def mounts(container: Any) -> dict[str, dict[str, Any]]:
    """Destination → mount, as `docker inspect` shows them."""
    return {m["Destination"]: m for m in container.attrs.get("Mounts", [])}


async def start_probe(harness: Harness) -> int:
    job = harness.sim.add_job(project_id=1, script=PROBE, name="probe").id
    await harness.until(lambda: harness.sim.job(job).status in {"running", "success", "failed"}, timeout=90, what="the probe job to start")
    return job


async def probe_succeeded(harness: Harness, job: int) -> None:
    """The probe finished green: it found no Docker socket."""
    await harness.until(lambda: finished(harness.sim, [job]), timeout=60, what="the probe job to finish")
    done = harness.sim.job(job)
    trace = done.trace.decode(errors="replace")
    assert done.status == "success", trace[-1500:]
    assert re.search(r"^no docker socket; uid=\d+\r?$", trace, re.M) and "DOCKER SOCKET REACHABLE" not in trace, trace[-1500:]


async def test_shell_executor_runner_gets_no_docker_socket_and_its_job_finds_none(harness: Harness):
    use_executor(harness, "shell")
    job = await start_probe(harness)
    (runner,) = await harness.runtime.list()
    client = docker.from_env()
    try:
        container = client.containers.get(runner.name)
        found = mounts(container)
        assert DOCKER_SOCKET not in found, f"shell-executor runner {runner.name} mounts the host's Docker socket: {found[DOCKER_SOCKET]}"
        assert not container.attrs["HostConfig"].get("Privileged")
        assert list(found) == ["/etc/gitlab-runner"] and found["/etc/gitlab-runner"]["RW"] is False
    finally:
        client.close()
    await probe_succeeded(harness, job)


async def test_docker_executor_manager_holds_the_socket_and_the_job_container_does_not(harness: Harness):
    use_executor(harness, "docker")
    job = await start_probe(harness)
    (runner,) = await harness.runtime.list()
    client = docker.from_env()
    try:
        manager = mounts(client.containers.get(runner.name))
        assert manager[DOCKER_SOCKET]["Source"] == DOCKER_SOCKET, "the docker executor's manager needs the socket to start job containers"
        jobs: list[Any] = []
        for _ in range(60):  # the job's containers come a moment after GitLab marks it running
            jobs = client.containers.list(filters={"label": f"{JOB_OF_LABEL}={runner.name}"})
            if jobs or finished(harness.sim, [job]):
                break
            await asyncio.sleep(0.5)
        assert jobs, "the docker executor started no job container"
        for container in jobs:
            assert DOCKER_SOCKET not in mounts(container), f"job container {container.name} got the host's Docker socket"
            assert not container.attrs["HostConfig"].get("Privileged"), f"job container {container.name} is privileged"
    finally:
        client.close()
    await probe_succeeded(harness, job)
