"""Metrics from a real AgentState, parsed back with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from api_harness import GPU_BIG, GPU_SMALL, make_state  # noqa: E402

from autogit.agent.listen import parse_listen  # noqa: E402
from autogit.agent.metrics import AgentMetrics, start_metrics_listener  # noqa: E402


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_state_series_follow_the_state():
    state = make_state()
    metrics = AgentMetrics()
    metrics.bind_state(state)
    got = samples(metrics)
    assert got[("autogit_runners", (("arch", "amd64"), ("state", "busy")))] == 2
    assert got[("autogit_runners", (("arch", "amd64"), ("state", "idle")))] == 1
    assert got[("autogit_queue_jobs", (("tags", "cuda,gpu"),))] == 1
    assert got[("autogit_queue_jobs", (("tags", ""),))] == 1
    assert got[("autogit_gpu_utilization_percent", (("gpu", GPU_BIG), ("model", "NVIDIA H100 80GB HBM3")))] == 97.0
    # Unknown utilisation is absent, not zero.
    assert ("autogit_gpu_utilization_percent", (("gpu", GPU_SMALL), ("model", "NVIDIA L4"))) not in got
    assert got[("autogit_component_up", (("component", "docker"),))] == 0
    assert got[("autogit_component_errors_total", (("component", "docker"),))] == 1
    assert got[("autogit_agent_phase", (("phase", "degraded"),))] == 1
    # A GPU that disappears stops being exported (no frozen last value).
    state.host = state.host.model_copy(update={"gpus": [g for g in state.host.gpus if g.id != GPU_BIG]})
    assert not any(labels and dict(labels).get("gpu") == GPU_BIG for _, labels in samples(metrics))


def test_pushed_series_and_event_counter():
    state = make_state()
    metrics = AgentMetrics()
    metrics.bind_state(state)
    state.pause("test")
    metrics.reconcile_seconds.observe(0.02)
    metrics.record_scale_action("start", 3.5, ok=True)
    with pytest.raises(RuntimeError):
        with metrics.time_scale_action("remove"):
            raise RuntimeError("docker said no")
    got = samples(metrics)
    assert got[("autogit_events_total", (("type", "scaling.paused"),))] == 1
    assert got[("autogit_scaling_paused", ())] == 1
    assert got[("autogit_scale_actions_total", (("action", "start"), ("outcome", "ok")))] == 1
    assert got[("autogit_scale_actions_total", (("action", "remove"), ("outcome", "error")))] == 1
    assert got[("autogit_reconcile_duration_seconds_count", ())] == 1
    with pytest.raises(RuntimeError):
        metrics.bind_state(state)


def test_own_registry_is_not_the_global_one():
    from prometheus_client import REGISTRY

    a, b = AgentMetrics(), AgentMetrics()  # two agents in one process do not collide
    assert a.registry is not REGISTRY and a.registry is not b.registry
    assert b"python_gc" not in a.render()


def test_parse_listen():
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", "host:", "host:0", "host:99999", ":80", "host:²", "host:+80", "host: 80"):
        with pytest.raises(ValueError, match="api.metrics_listen must be host:port"):
            parse_listen(bad, "api.metrics_listen")
    assert parse_listen(":0", "webhook.listen", default_host="127.0.0.1", any_port=True) == ("127.0.0.1", 0)


async def test_tcp_listener_serves_metrics_only():
    state = make_state()
    metrics = AgentMetrics()
    metrics.bind_state(state)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = await start_metrics_listener(metrics, f"127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200 and b"autogit_runners" in await resp.read()
            async with session.get(f"http://127.0.0.1:{port}/v1/status") as resp:
                assert resp.status == 404
    finally:
        await runner.cleanup()
    await asyncio.sleep(0)
