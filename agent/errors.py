"""One error tree for every adapter (GitLab, a runner runtime), httpx-style: callers catch the
branch that says what to do, never a library's own exceptions.

    AdapterError                 any failure of an outside system; str() is one line, no secret
    ├── Transient                may work if asked again later (unreachable, 5xx, timeout)
    ├── PermissionRefused        the credentials lack a scope or role (names it); not retried in a storm
    ├── NotFound                 the object asked for does not exist (anymore)
    ├── Conflict                 the object exists, or is in a state that forbids the request
    └── InvalidConfiguration     a configured value is wrong (names the field); fixed by an operator

`what` names the request or object (`POST /user/runners`, `runner autogit-x`); `field` names the
configuration key of an InvalidConfiguration (`runner.image`); `missing` the scope or role of a
PermissionRefused. Messages are built by the adapters, which never put a token in them; `line()`
still cuts everything after the first line, so a library's multi-line dump never floods a journal.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "Conflict",
    "InvalidConfiguration",
    "NotFound",
    "PermissionRefused",
    "Transient",
    "one_line",
]

_MAX_LINE = 300


def one_line(text: str, limit: int = _MAX_LINE) -> str:
    """The first line of `text`, at most `limit` characters: what a status field or a journal line holds."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


class AdapterError(RuntimeError):
    """A failure of an outside system, said in one line."""

    retryable: bool = False

    def __init__(self, message: str, *, what: str | None = None) -> None:
        super().__init__(one_line(message))
        self.what = what

    def __str__(self) -> str:
        return one_line(super().__str__())


class Transient(AdapterError):
    """Unreachable, overloaded or timed out: the next pass may succeed (with backoff)."""

    retryable = True


class PermissionRefused(AdapterError):
    """The credentials lack what the request needs; `missing` names the scope or role."""

    def __init__(self, message: str, *, missing: str | None = None, what: str | None = None) -> None:
        super().__init__(message, what=what)
        self.missing = missing


class NotFound(AdapterError):
    """The object does not exist (any more); for a removal, the goal is reached."""


class Conflict(AdapterError):
    """The object exists already, or its state forbids the request (e.g. a name in use)."""


class InvalidConfiguration(AdapterError):
    """A configured value is wrong (a mistyped image, an unknown network): `field` names the key.
    Retrying changes nothing until an operator fixes it, so it is retried only after a long backoff."""

    def __init__(self, message: str, *, field: str, what: str | None = None) -> None:
        super().__init__(message, what=what)
        self.field = field
