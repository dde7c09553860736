"""The runner runtime interface (ADR-010): Docker meets the Protocol, its statuses map onto the
neutral ones, and every Docker library error leaves the runtime as one line of the adapters'
error tree (ISSUE 19, 5b: ImageNotFound from a mistyped runner.image escaped untranslated)."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from autogit.agent import errors
from autogit.agent.config import AgentConfig, RunnerConfig
from autogit.agent.model import Host
from autogit.agent.runtime import RunnerRuntime, RunnerStatus, build_runtime, runtime_names
from autogit.agent.runtime.docker import _STATUS, DockerError, DockerRuntime, translate


def test_docker_runtime_meets_the_protocol():
    runtime = DockerRuntime(RunnerConfig(), "h")
    assert isinstance(runtime, RunnerRuntime)
    for method in ("list", "create", "drain", "abort", "kill", "remove", "leftovers", "credentials", "reconfigure", "close"):
        assert callable(getattr(runtime, method)), method


def test_runner_runtime_picks_the_registered_implementation():
    host = Host(arch="amd64", cpus=4, memory_mb=8192)
    assert "docker" in runtime_names()
    assert isinstance(build_runtime(AgentConfig(), "h", host), DockerRuntime)
    config = AgentConfig(runner=RunnerConfig(runtime="podman-typo"))
    with pytest.raises(ValueError, match="runner.runtime: unknown runtime 'podman-typo'"):
        build_runtime(config, "h", host)


def test_every_docker_state_maps_and_unknown_is_never_exited():
    # Docker's State.Status values (api/types/container/state.go).
    for state in ("created", "running", "paused", "restarting", "removing", "exited", "dead"):
        assert state in _STATUS
    assert _STATUS["exited"] is RunnerStatus.EXITED and _STATUS["dead"] is RunnerStatus.EXITED
    assert RunnerStatus.EXITED not in {_STATUS[s] for s in ("created", "running", "paused", "restarting", "removing")}


def _api_error(cls, status: int, text: str):
    response = requests.Response()
    response.status_code = status
    return cls(text, response=response, explanation=text)


def test_image_not_found_is_invalid_configuration_naming_runner_image():
    exc = _api_error(docker.errors.ImageNotFound, 404, "pull access denied for nosuch/runner, repository does not exist")
    error = translate(exc, "creating runner container r1 from nosuch/runner", "runner.image")
    assert isinstance(error, errors.InvalidConfiguration)
    assert error.field == "runner.image"
    assert "\n" not in str(error) and "nosuch/runner" in str(error)


def test_missing_network_names_runner_network():
    exc = _api_error(docker.errors.NotFound, 404, "network autogit-nett not found")
    error = translate(exc, "creating runner container r1", "runner.image")
    assert isinstance(error, errors.InvalidConfiguration) and error.field == "runner.network"


def test_plain_errors_map_to_the_tree():
    assert isinstance(translate(_api_error(docker.errors.NotFound, 404, "No such container: x"), "kill x"), errors.NotFound)
    assert isinstance(translate(_api_error(docker.errors.APIError, 409, "name in use"), "create x"), errors.Conflict)
    down = translate(requests.ConnectionError("Connection aborted.\nFileNotFoundError(2)"), "listing runner containers")
    assert isinstance(down, DockerError) and isinstance(down, errors.Transient) and down.retryable
    assert "\n" not in str(down)
    server = translate(_api_error(docker.errors.APIError, 500, "driver failed"), "create x", "runner.image")
    assert isinstance(server, errors.Transient)


def test_error_lines_are_one_line_and_bounded():
    error = errors.AdapterError("first line\nsecond line with glrt-secret" + "x" * 500)
    assert str(error) == "first line"
    assert len(str(errors.Transient("y" * 1000))) <= 300


def test_an_image_that_cannot_be_pulled_names_runner_image_and_the_image():
    # What dockerd answers when the image is not here and the registry cannot be reached.
    response = requests.Response()
    response.status_code = 500
    response.url = "http+docker://localhost/v1.41/images/create?tag=typo&fromImage=x%2Frunner"
    exc = docker.errors.APIError("500 Server Error for http+docker://localhost/v1.41/images/create?tag=typo&fromImage=x%2Frunner",
                                 response=response, explanation='Get "https://registry-1.docker.io/v2/": dial tcp: lookup failed')
    error = translate(exc, "creating runner container r1 from x/runner:typo", "runner.image")
    assert isinstance(error, errors.InvalidConfiguration) and error.field == "runner.image"
    assert str(error).startswith("creating runner container r1 from x/runner:typo: the image is not here and cannot be pulled")
