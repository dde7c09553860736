"""Fixtures of the console tests: a real agent API server on a real unix socket, fed by the
scripted scenario in tui_harness.py, and the app wired to it through the real client."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tui_harness import AgentServer, clock, make_state, socket_dir  # noqa: E402

from autogit.agent.api.client import AgentClient  # noqa: E402
from autogit.tui.app import AutoGitApp  # noqa: E402


@pytest.fixture
def agent() -> Iterator[AgentServer]:
    server = AgentServer(make_state(), socket_dir()).start()
    yield server
    server.close()


def build_app(socket_path: str, **kw) -> AutoGitApp:
    kw.setdefault("clock", clock)
    kw.setdefault("readings_interval", None)
    kw.setdefault("tick", None)
    kw.setdefault("coalesce", 0.05)
    kw.setdefault("backoff", (0.1, 0.5))
    return AutoGitApp(AgentClient(socket_path, timeout=3.0), socket_path=socket_path, owns_client=True, **kw)


@pytest.fixture
def make_app() -> Callable[..., AutoGitApp]:
    return build_app


async def wait_until(pilot, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds: the app and the agent are on different loops,
    so this polls the app's state (never the agent's) between pauses."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)
