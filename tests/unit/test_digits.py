"""Integers from outside text: ASCII digits or nothing, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autogit.agent.digits import parse_uint
from autogit.agent.systemd import Notifier, listen_fds
from autogit.agent.tags import compute_capability_tags


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("42", 42), ("007", 7), ("9" * 18, 10**18 - 1)])
def test_ascii_digits_are_read(text: str, value: int) -> None:
    assert parse_uint(text) == value


@pytest.mark.parametrize("text", [None, "", " 1", "1 ", "+1", "-1", "1.0", "²", "١٢", "1²", "9" * 19, "0x10"])
def test_anything_else_is_not_a_number(text: str | None) -> None:
    assert parse_uint(text) is None


@given(st.text(max_size=24))
def test_never_raises_and_agrees_with_the_ascii_reading(text: str) -> None:
    expected = int(text) if text and len(text) <= 18 and all("0" <= c <= "9" for c in text) else None
    assert parse_uint(text) == expected


def test_odd_digits_from_outside_are_not_numbers_where_they_were_a_crash() -> None:
    # Each of these raised ValueError from int() after str.isdigit() had said yes.
    assert compute_capability_tags("².0") == frozenset()
    assert Notifier(environ={"WATCHDOG_USEC": "²"}).watchdog_interval is None
    assert listen_fds(environ={"LISTEN_PID": "²", "LISTEN_FDS": "1"}) == []
