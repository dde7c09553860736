"""SVG snapshots of the main screens at 80x24, 120x36 and 200x50, against the real API server fed by the
scripted scenario. Every time is frozen (the app's clock and the agent's are both NOW), so the
frames are deterministic. Update after checking the report: pytest tests/tui --snapshot-update
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tui_harness import build_app
from tui_harness import AgentServer, clock, make_fleet_state, make_state, socket_dir

from k8s.nodes import amd_node, arm64_node, fake_node, nvidia_node

from autogit.agent.events import EventBus
from autogit.agent.inventory.cluster import cluster_report
from autogit.agent.inventory.kubernetes import Node, Pod, node_hardware
from autogit.agent.model import Host
from autogit.agent.state import AgentPhase, AgentState

from autogit.tui.screens.disconnected import DisconnectedScreen

SMALL = (80, 24)
MEDIUM = (120, 36)
LARGE = (200, 50)


@pytest.fixture(scope="module")
def agent_m() -> Iterator[AgentServer]:
    # Read-only tests share one agent (no test here acts on it).
    server = AgentServer(make_state(), socket_dir()).start()
    yield server
    server.close()


def _ready(*keys: str, events: int = 6):
    async def run_before(pilot) -> None:
        app = pilot.app
        while not (app.connection == "connected" and app.jobs is not None and app.fleet is not None
                   and len(app.screen.query_one("#event-log").events) == events):
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        for key in keys:
            await pilot.press(key)
        await pilot.pause(0.1)

    return run_before


@pytest.mark.parametrize("size", [SMALL, MEDIUM, LARGE], ids=["80x24", "120x36", "200x50"])
@pytest.mark.parametrize("tab", ["1", "2", "3", "4", "5"], ids=["gpus", "runners", "queue", "fleet", "events"])
def test_main_tabs(snap_compare, agent_m: AgentServer, tab: str, size: tuple[int, int]) -> None:
    assert snap_compare(build_app(agent_m.path), terminal_size=size, run_before=_ready(tab))


def test_confirm_drain(snap_compare, agent_m: AgentServer) -> None:
    assert snap_compare(build_app(agent_m.path), terminal_size=SMALL, run_before=_ready("d"))


@pytest.mark.parametrize("size", [SMALL, MEDIUM], ids=["80x24", "120x36"])
@pytest.mark.parametrize("keys", [("2", "enter"), ("3", "ctrl+end", "enter")], ids=["runner", "waiting-job"])
def test_detail(snap_compare, agent_m: AgentServer, keys: tuple[str, ...], size: tuple[int, int]) -> None:
    assert snap_compare(build_app(agent_m.path), terminal_size=size, run_before=_ready(*keys))


@pytest.mark.parametrize("size", [SMALL, MEDIUM], ids=["80x24", "120x36"])
def test_host_without_gpus(snap_compare, size: tuple[int, int]) -> None:
    state = AgentState(bus=EventBus(clock=clock), clock=clock)
    state.host = Host(hostname="plain-box", arch="amd64", cpus=4, memory_mb=8192)
    state.set_phase(AgentPhase.RUNNING)
    server = AgentServer(state, socket_dir()).start()
    try:
        assert snap_compare(build_app(server.path), terminal_size=size, run_before=_ready(events=1))
    finally:
        server.close()


def test_help(snap_compare, agent_m: AgentServer) -> None:
    assert snap_compare(build_app(agent_m.path), terminal_size=SMALL, run_before=_ready("question_mark"))


def test_filtered_queue(snap_compare, agent_m: AgentServer) -> None:
    assert snap_compare(build_app(agent_m.path), terminal_size=SMALL, run_before=_ready("3", "slash", "g", "p", "u"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_agent_down(snap_compare, size: tuple[int, int]) -> None:
    path = "/tmp/autogit-tui-snapshot-absent/agent.sock"  # fixed: it is shown on screen

    async def run_before(pilot) -> None:
        app = pilot.app
        while not (isinstance(app.screen, DisconnectedScreen) and app.screen.problem is not None):
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    assert snap_compare(build_app(path, backoff=(30, 30)), terminal_size=size, run_before=run_before)


@pytest.fixture(scope="module")
def fleet_agent() -> Iterator[AgentServer]:
    # fleet.enabled: gpu-box-1 (this host) and gpu-box-2 live, gpu-box-3 gone.
    server = AgentServer(make_fleet_state(), socket_dir()).start()
    yield server
    server.close()


@pytest.mark.parametrize("size", [SMALL, MEDIUM, LARGE], ids=["80x24", "120x36", "200x50"])
def test_fleet_members(snap_compare, fleet_agent: AgentServer, size: tuple[int, int]) -> None:
    assert snap_compare(build_app(fleet_agent.path), terminal_size=size, run_before=_ready("4"))


def test_fleet_gone_host_detail(snap_compare, fleet_agent: AgentServer) -> None:
    # The last row is gpu-box-3's only runner: its detail says the host is gone, and since when.
    assert snap_compare(build_app(fleet_agent.path), terminal_size=MEDIUM, run_before=_ready("4", "ctrl+end", "enter"))


def _cluster_state() -> AgentState:
    """The scripted world, run on Kubernetes: the nodes as the real inventory code reads kwok
    nodes' labels (tests/k8s/nodes.py), a pod holding GPUs, the agent's runner pods."""
    def ready(node: dict[str, Any], status: str = "True") -> Node:
        node["status"]["conditions"] = [{"type": "Ready", "status": status}]
        return Node.model_validate(node)

    def pod(name: str, node: str | None, labels: dict[str, str], gpus: int = 0, phase: str = "Running") -> Pod:
        limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
        spec: dict[str, Any] = {"containers": [{"name": "c", "resources": {"limits": limits}}]} | ({"nodeName": node} if node else {})
        return Pod.model_validate({"metadata": {"name": name, "namespace": "ci", "labels": labels}, "spec": spec, "status": {"phase": phase}})

    nodes = [ready(nvidia_node("gpu-h100-0")), ready(nvidia_node("gpu-l4-0", product="NVIDIA-L4", memory_mib=23034, count=1, compute=(8, 9))),
             ready(arm64_node("arm-0")), ready(amd_node("mi300-0")), ready(fake_node("cpu-0"), "False")]  # fmt: skip
    owner = {"autogit.io/agent": "gpu-box-1"}
    pods = [pod("gpu-box-1-g1", "cpu-0", owner | {"autogit.io/runner": "gpu-box-1-g1"}),
            pod("runner-abc-project-9-concurrent-0", "gpu-h100-0", owner | {"autogit.io/job-of": "gpu-box-1-g1"}, gpus=1),
            pod("gpu-box-1-g2", None, owner | {"autogit.io/runner": "gpu-box-1-g2"}, phase="Pending"),
            pod("someone-elses-training", "gpu-h100-0", {}, gpus=4)]  # fmt: skip
    state = make_state()
    state.cluster = cluster_report(node_hardware(nodes, pods), pods, "gpu-box-1", node_selector="autogit.io/pool=ci",
                                   api_counts={("list", "/api/v1/nodes"): 1, ("watch", "/api/v1/nodes"): 3})  # fmt: skip
    return state


@pytest.fixture(scope="module")
def agent_k8s() -> Iterator[AgentServer]:
    server = AgentServer(_cluster_state(), socket_dir()).start()
    yield server
    server.close()


@pytest.mark.parametrize("size", [SMALL, MEDIUM, LARGE], ids=["80x24", "120x36", "200x50"])
def test_nodes_tab_on_kubernetes(snap_compare, agent_k8s: AgentServer, size: tuple[int, int]) -> None:
    assert snap_compare(build_app(agent_k8s.path), terminal_size=size, run_before=_ready("6"))


def test_node_detail(snap_compare, agent_k8s: AgentServer) -> None:
    assert snap_compare(build_app(agent_k8s.path), terminal_size=MEDIUM, run_before=_ready("6", "enter"))
