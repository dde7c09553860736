"""Waiting for a condition in a synchronous test, with a bound and a message saying what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until(check: Callable[[], Any], timeout: float, what: str, explain: Callable[[], str] = lambda: "", poll: float = 0.1) -> Any:
    """`check()`'s first truthy value; AssertionError naming `what` (and `explain()`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{explain()}")
