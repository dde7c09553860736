"""Every reconcile pass has an id, and every log line written during it carries that id."""

from __future__ import annotations

import itertools
import logging
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

__all__ = ["PASS_ID", "PassLogger", "next_pass_id"]

# The pass the current task is in ("-": outside any pass). A ContextVar, so concurrent starts in
# one pass (asyncio.gather) all log under their pass's id.
PASS_ID: ContextVar[str] = ContextVar("autogit_pass_id", default="-")
_counter = itertools.count(1)


def next_pass_id() -> str:
    return f"p{next(_counter)}"


class PassLogger(logging.LoggerAdapter):
    """Prefixes each line with `[pass <id>]` and sets `pass_id` on the record (for structured handlers)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        pass_id = PASS_ID.get()
        kwargs.setdefault("extra", {})["pass_id"] = pass_id
        return f"[pass {pass_id}] {msg}", kwargs


log = PassLogger(logging.getLogger("autogit.reconciler"), {})
