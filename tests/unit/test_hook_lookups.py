"""HookLookups and ConnectionGuard on their own: merging per job and status, the queue's bound,
scope and budget; the connection counts and the refusal log's rate (clocks injected)."""

from __future__ import annotations

import asyncio
import logging

from autogit.agent.events import EventBus
from autogit.agent.gitlab.hook_lookups import HookLookups, budget_low
from autogit.agent.metrics import AgentMetrics
from autogit.agent.tcp_guard import ConnectionGuard, ConnectionLimits, client_address, descriptor_shortfall


class Gate:
    """A lookup that waits until released, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str]] = []
        self.release = asyncio.Event()

    async def __call__(self, project_id: int, job_id: int, status: str) -> None:
        self.calls.append((project_id, job_id, status))
        await self.release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_hooks_merge_per_job_and_status_and_the_queue_is_bounded():
    now = [0.0]
    gate, bus, metrics = Gate(), EventBus(), AgentMetrics()
    lookups = HookLookups(gate, bus, metrics, concurrency=1, max_pending=2, clock=lambda: now[0])
    assert lookups.submit(1, 10, "pending") == "queued"
    await _settle()  # job 10 is in flight
    assert lookups.submit(1, 10, "pending") == "merged"  # same status as the lookup in flight
    assert lookups.submit(1, 10, "running") == "queued"  # news: one more lookup, after
    assert lookups.submit(1, 10, "success") == "merged"  # into the queued one, newest status kept
    assert lookups.submit(1, 11, "pending") == "queued"
    assert lookups.submit(1, 12, "pending") == "overflow"  # two queued already
    gate.release.set()
    await _settle()
    assert gate.calls == [(1, 10, "pending"), (1, 10, "success"), (1, 11, "pending")]
    assert lookups.submit(1, 11, "pending") == "merged"  # made a moment ago
    now[0] = 31.0
    assert lookups.submit(1, 11, "pending") == "queued"  # 30 s later: looked up again
    await _settle()
    assert metrics.webhook_hooks.labels(outcome="overflow")._value.get() == 1
    assert [e.type for e in bus.history()] == ["webhook.dropped"]
    await lookups.stop()


async def test_out_of_scope_and_low_budget_make_no_lookup_and_say_it_once_per_interval():
    now = [0.0]
    gate, bus = Gate(), EventBus()
    gate.release.set()
    low = [False]
    lookups = HookLookups(gate, bus, in_scope=lambda project: project == 1, budget_low=lambda: low[0], clock=lambda: now[0])
    for job in range(5):
        assert lookups.submit(2, job, "pending") == "out-of-scope"
    low[0] = True
    lookups.submit(1, 100, "pending")
    await _settle()
    assert gate.calls == [] and lookups.outcomes == {"out-of-scope": 5, "budget": 1}
    now[0] = 10.0
    lookups.submit(2, 99, "pending")
    dropped = [e.message for e in bus.history() if e.type == "webhook.dropped"]
    assert len(dropped) == 3 and dropped[2].endswith("(and 4 more since the last such line)")
    await lookups.stop()


def test_budget_low_is_under_a_quarter_and_unknown_is_not_low():
    assert budget_low({}) is False
    assert budget_low({"limit": 600, "remaining": 150}) is False
    assert budget_low({"limit": 600, "remaining": 149}) is True
    assert budget_low({"remaining": 9}) is True


def test_guard_counts_per_address_and_logs_refusals_once_per_interval(caplog):
    now = [0.0]
    guard = ConnectionGuard("test", ConnectionLimits(max_connections=3, max_per_address=2, idle_timeout=1), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="autogit.tcp"):
        assert [guard.admit("a"), guard.admit("a"), guard.admit("a"), guard.admit("b"), guard.admit("c")] == [
            None, None, "per-address", None, "connections"]  # fmt: skip
        now[0] = 10.0
        assert guard.admit("d") == "connections"
    assert [r.getMessage().split(" since")[0] for r in caplog.records] == [
        "test listener: refused 1 connection(s) over its cap (2 per address)",
        "test listener: refused 2 connection(s) over its cap (3 in all)",
    ]
    guard.release("a")
    guard.release("b")
    assert guard.open == 1 and dict(guard.per_address) == {"a": 1}


def test_client_address_counts_ipv4_mapped_as_ipv4_and_ipv6_by_its_64():
    assert client_address(("::ffff:127.0.0.1", 5, 0, 0)) == "127.0.0.1"
    assert client_address(("2001:db8::1", 5, 0, 0)) == "2001:db8::/64"
    assert client_address(("2001:db8::ffff:1234", 5, 0, 0)) == client_address(("2001:db8::1", 5, 0, 0)), "one /64, one client"
    assert client_address(("2001:db8:0:1::1", 5, 0, 0)) == "2001:db8:0:1::/64"
    assert client_address(None) == "?"


def test_descriptor_shortfall_names_the_caps():
    assert descriptor_shortfall({"webhook.max_connections": 128}, soft_limit=1024) is None
    line = descriptor_shortfall({"webhook.max_connections": 5000}, soft_limit=1024)
    assert line is not None and "webhook.max_connections 5000" in line and "1024" in line
