"""The informer's event handling (agent/inventory/k8s_watch.py, ADR-016), event by event as the
API server's watch stream delivers them: the cache follows ADDED/MODIFIED/DELETED, the version
moves with every event and BOOKMARK, a heartbeat-only change wakes nothing, 410 Gone asks for a
new LIST, and an object the model refuses is left out with one line saying why, the rest kept.
The real API server drives the same code in tests/k8s/test_cluster_inventory.py."""

from __future__ import annotations

from typing import Any

import pytest
from k8s.nodes import nvidia_node

from autogit.agent.inventory.k8s_watch import Informer, _Expired
from autogit.agent.inventory.kubernetes import Node


async def _never(**_: Any) -> Any:
    raise AssertionError("no request in this test")


def _informer(changes: list[tuple[str, bool, bool]]) -> Informer[Node]:
    informer: Informer[Node] = Informer("nodes", _never, Node, lambda raw: raw["metadata"]["name"],
                                        on_change=lambda key, before, after: changes.append((key, before is None, after is None)))  # fmt: skip
    informer.synced = True
    return informer


def _node(name: str, version: str, **labels: str) -> dict[str, Any]:
    node = nvidia_node(name)
    node["metadata"]["resourceVersion"] = version
    node["metadata"]["labels"] |= labels
    node["status"]["conditions"] = [{"type": "Ready", "status": "True", "lastHeartbeatTime": f"2026-12-06T20:00:0{version[-1]}Z"}]
    return node


def test_events_keep_the_cache_and_the_version_and_a_heartbeat_wakes_nothing() -> None:
    changes: list[tuple[str, bool, bool]] = []
    informer = _informer(changes)
    informer._apply({"type": "ADDED", "object": _node("n1", "11")})
    assert set(informer.items) == {"n1"} and informer.resource_version == "11" and changes == [("n1", True, False)]
    generation = informer.generation
    informer._apply({"type": "MODIFIED", "object": _node("n1", "12")})  # only the heartbeat's time moved
    assert informer.resource_version == "12" and informer.generation == generation and len(changes) == 1
    informer._apply({"type": "MODIFIED", "object": _node("n1", "13", team="ml")})
    assert informer.items["n1"].metadata.labels["team"] == "ml" and changes[-1] == ("n1", False, False)
    informer._apply({"type": "BOOKMARK", "object": {"kind": "Node", "metadata": {"resourceVersion": "20"}}})
    assert informer.resource_version == "20" and len(changes) == 2
    informer._apply({"type": "DELETED", "object": _node("n1", "21")})
    assert informer.items == {} and changes[-1] == ("n1", False, True)


def test_410_gone_asks_for_a_list_and_other_errors_are_failures() -> None:
    informer = _informer([])
    with pytest.raises(_Expired):
        informer._apply({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version: 1 (42)"}})
    with pytest.raises(ValueError, match="watch error 500: InternalError"):
        informer._apply({"type": "ERROR", "object": {"kind": "Status", "code": 500, "reason": "InternalError", "message": "etcd"}})


def test_an_object_the_model_refuses_is_left_out_with_one_line_and_the_rest_kept() -> None:
    informer = _informer([])
    informer._apply({"type": "ADDED", "object": _node("good", "1")})
    bad = _node("bad", "2")
    bad["status"]["allocatable"] = ["not", "a", "map"]
    informer._apply({"type": "ADDED", "object": bad})
    assert set(informer.items) == {"good"}
    assert informer.problems == {"bad": "nodes bad: status.allocatable: Input should be a valid dictionary; ignored"}
    informer._apply({"type": "MODIFIED", "object": _node("bad", "3")})  # fixed: read again, the line gone
    assert set(informer.items) == {"good", "bad"} and informer.problems == {}


def test_unknown_until_listed_and_again_once_failing_past_the_bound() -> None:
    now = [100.0]
    informer: Informer[Node] = Informer("nodes", _never, Node, lambda raw: raw["metadata"]["name"], stale_after=60, monotonic=lambda: now[0])
    assert not informer.known and informer.why_unknown() == "nodes: not listed yet"
    informer.synced = True
    assert informer.known
    informer._failed(ConnectionRefusedError(111, "Connection refused"))
    now[0] += 60
    assert informer.known  # failing, within the bound
    now[0] += 1
    why = informer.why_unknown()
    assert not informer.known and why is not None and why.startswith("nodes: no list or watch has succeeded for 61 s (watching nodes: API server unreachable")
