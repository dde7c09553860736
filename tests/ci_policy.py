"""In CI (CI=true) a test whose prerequisite is missing fails instead of skipping, so a run
cannot hide work it never did. Outside CI it is skipped with the reason."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI") == "true"


def needs(condition: bool, why: str) -> pytest.MarkDecorator:
    """A skipif marker that never skips in CI: there the test runs, and fails if unmet."""
    return pytest.mark.skipif(not condition and not IN_CI, reason=why)


def require(condition: bool, why: str) -> None:
    """Inside a test or fixture: skip outside CI, fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{why} (CI=true: this test must run, not skip)")
    pytest.skip(why)
