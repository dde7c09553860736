"""Fixtures of the console tests: a real agent API server on a real unix socket, fed by the
scripted scenario in tui_harness.py, and the app wired to it through the real client."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tui_harness import AgentServer, build_app, make_state, socket_dir  # noqa: E402,F401

from autogit.tui.app import AutoGitApp  # noqa: E402


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    server = AgentServer(make_state(), socket_dir()).start()
    yield server
    server.close()


@pytest.fixture
def make_app() -> Callable[..., AutoGitApp]:
    return build_app


