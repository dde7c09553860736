"""Integers read from text other programs wrote: ASCII digits only.

`str.isdigit()` is true for '²' and '١' as well; `int()` refuses the first (a ValueError where
the caller believed it had checked) and reads the second as 1. Headers, labels and environment
variables are parsed here instead, so an odd byte from outside is "not a number", never a crash.
"""

from __future__ import annotations

import re

__all__ = ["parse_uint"]

_UINT = re.compile(r"[0-9]+")


def parse_uint(text: str | None, max_digits: int = 18) -> int | None:
    """The non-negative integer `text` spells in at most `max_digits` ASCII digits; None otherwise
    (None, empty, a sign, spaces, other scripts' digits, too long)."""
    if text is None or len(text) > max_digits or _UINT.fullmatch(text) is None:
        return None
    return int(text)
