"""Shared fixtures for the integration tests: a real Docker engine and the GitLab simulator.

Docker: in CI (env CI=true, as tests/ci_policy.py defines it) a test that needs Docker FAILS when
the engine is missing, so a green run cannot hide skipped work; elsewhere it is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ci_policy import require

from autogit.gitlab_double import GitLabSimulator


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A `docker.DockerClient` for the local engine; fail in CI, skip elsewhere, when there is none."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # no SDK, no socket, no permission: all mean "no Docker here"
        require(False, f"Docker engine unavailable: {type(exc).__name__}: {exc}")
    yield client
    client.close()


@pytest.fixture
def gitlab_sim(request: pytest.FixtureRequest) -> Iterator[GitLabSimulator]:
    """A started GitLab simulator serving from its own thread, so synchronous clients can call it.

    Keyword arguments for `GitLabSimulator` come through indirect parametrization, e.g.
    `@pytest.mark.parametrize("gitlab_sim", [{"host": "0.0.0.0"}], indirect=True)`.
    """
    kwargs: dict[str, Any] = getattr(request, "param", None) or {}
    with GitLabSimulator(**kwargs).running_in_thread() as simulator:
        yield simulator


# Fixtures shared by several modules, defined beside their helpers.
from runner_harness import harness, runner_image, sim  # noqa: E402,F401
from umockdev_support import umockdev_testbed  # noqa: E402,F401
