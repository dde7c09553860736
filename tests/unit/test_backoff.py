"""One backoff keyed by (action, object) on an injected monotonic clock (agent/backoff.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

from autogit.agent.backoff import Backoffs
from autogit.agent.model import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delays_double_from_initial_to_maximum_and_success_forgets():
    clock = Clock()
    b = Backoffs(clock, initial=30, maximum=100)
    assert [b.failed("start", "native", "boom") for _ in range(4)] == [30, 60, 100, 100]
    assert b.active("start", "native") and not b.active("start", "gpu")
    clock.now += 100
    assert not b.active("start", "native")  # the delay ran out: try again
    b.succeeded("start", "native")
    assert b.failed("start", "native", "boom") == 30  # a success starts the doubling over


def test_a_star_backoff_holds_every_object_of_the_action_and_at_least_is_a_floor():
    clock = Clock()
    b = Backoffs(clock, initial=30, maximum=900)
    assert b.failed("pause", "*", "403 manage_runner", at_least=900) == 900
    assert b.active("pause", "any-runner") and not b.active("start", "any-runner")


def test_entries_are_what_the_planner_reads_in_wall_clock_time_with_one_line_causes():
    clock = Clock()
    b = Backoffs(clock, initial=30, maximum=900)
    b.failed("delete-registration", "7", "GitLab answered 403\nsecond line")
    b.failed("start", "gpu", "runtime down")
    clock.now += 31  # the first has ended, the second too: both 30 s
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert b.entries(now) == []
    b.failed("start", "gpu", "runtime down")  # 60 s from now
    clock.now += 10
    assert b.entries(now) == [Backoff(action="start", target="gpu", until=now + timedelta(seconds=50), cause="runtime down")]
    assert b.cause("delete-registration", "7") == "GitLab answered 403"
