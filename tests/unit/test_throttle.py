"""One line per key per interval, with the count held back; bounded keys."""

from __future__ import annotations

from autogit.agent.throttle import Said, Throttle


def test_one_line_per_key_per_interval_with_what_was_held_back() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    assert throttle.due("a") == Said("a", 0)
    assert throttle.due("a") is None and throttle.due("a") is None
    assert throttle.due("b") == Said("b", 0), "keys are apart"
    now[0] = 10.0
    assert throttle.due("a") == Said("a", 2)
    assert throttle.due("a") is None


def test_too_many_keys_share_the_overflow_key_until_stale_ones_go() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0], max_keys=2, overflow_key="others")
    assert [throttle.due(k) for k in ("a", "b", "c", "d")] == [Said("a", 0), Said("b", 0), Said("others", 0), None]
    now[0] = 10.0
    assert throttle.due("e") == Said("e", 0), "the stale keys were pruned"
