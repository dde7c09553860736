"""The TUI header says which replica leads under leader election (ADR-014), from a real agent
API server on a unix socket: leader, or follower naming the holder; nothing when not electing."""

from __future__ import annotations

import pytest
from tui_harness import AgentServer, build_app, socket_dir, wait_until

from autogit.agent.events import EventBus
from autogit.agent.model import Host
from autogit.agent.state import AgentPhase, AgentState


def _state(role: str | None) -> AgentState:
    state = AgentState(bus=EventBus())
    state.host = Host(hostname="ha-box", arch="amd64", cpus=4, memory_mb=8192)
    state.set_phase(AgentPhase.RUNNING)
    if role is not None:
        state.start_electing("replica-b", "autogit/autogit")
        state.set_leadership(role == "leader", "replica-b" if role == "leader" else "replica-a")
    return state


@pytest.mark.parametrize(
    ("role", "size", "words"),
    [
        ("leader", (120, 36), "♛ leader"), ("follower", (120, 36), "◦ follower (leader: replica-a)"),
        ("leader", (80, 24), "♛ LEADER"), ("follower", (80, 24), "◦ FOLLOWER"), (None, (120, 36), None),
    ],
)  # fmt: skip
async def test_the_header_says_leader_follower_or_nothing(role: str | None, size: tuple[int, int], words: str | None) -> None:
    server = AgentServer(_state(role), socket_dir()).start()
    try:
        app = build_app(server.path)
        async with app.run_test(size=size) as pilot:
            await wait_until(pilot, lambda: app.connection == "connected" and "ha-box" in app.screen_text().splitlines()[0], what="the header")
            await pilot.pause(0.1)
            top = app.screen_text().splitlines()[0]
            if words is None:
                assert "leader" not in top.lower() and "follower" not in top.lower(), top
            else:
                assert words in top, top
    finally:
        server.close()
