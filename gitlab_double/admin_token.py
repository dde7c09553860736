"""The GitLab double's admin token: made fresh for each run, handed over in a 0600 file or the
environment, never on a command line (/proc/<pid>/cmdline is readable by every local user).

The double has no well-known token: whoever holds this one is the double's `root` (every scope,
Admin Mode) and may drive its /_sim/ control surface, which queues jobs that runners then run.
GitLab itself issues personal access tokens at random and asks for one on every admin call.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["TOKEN_ENV", "TokenFileError", "new_admin_token", "read_token_file", "write_token_file"]

TOKEN_ENV = "GITLAB_DOUBLE_TOKEN"


class TokenFileError(Exception):
    """A token file that cannot be used, with a one-line reason naming the file."""


def new_admin_token() -> str:
    """A personal access token as GitLab prints one: `glpat-` and a random part (32 bytes here),
    so that runners' token_mask_prefixes hide it in job logs too."""
    return "glpat-" + secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    """Create `path` with mode 0600 and the token in it; an existing file or a link there is
    refused (O_EXCL, O_NOFOLLOW): nobody gets to plant the file the operator then trusts."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise TokenFileError(f"token file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")


def read_token_file(path: Path) -> str:
    """The token in `path` (its first line). An empty file is an error, not "no token"."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise TokenFileError(f"token file {path}: {reason}") from None
    token = text.splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise TokenFileError(f"token file {path}: empty")
    return token
