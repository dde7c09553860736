"""Operator intents kept across agent restarts: one small JSON file (ADR-008).

What is kept is what an operator asked for through the socket and that the world cannot show
by itself: scaling paused, GPUs drained, runners drained. The file is the agent's own: written
whole on every change (a temporary file beside it, fsync, os.replace, fsync of the directory,
so a crash leaves the old file or the new one, never half of one), mode 0640, and read once at
start. A file from a newer agent loads (unknown fields are ignored); one that is corrupt is set
aside as `<name>.bad` and one that cannot be read is left alone, each with one journal line,
and the agent starts with no intents: a broken state file never keeps the agent down.

Default place: `state.json` beside `runner.config_dir` (/var/lib/autogit/state.json, the
unit's StateDirectory); `state_file` in the config moves it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime, UTC
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import AgentConfig
from .state import Intents

__all__ = ["FILE_VERSION", "IntentsFile", "StateFile", "describe", "state_file_path"]

log = logging.getLogger("autogit.statefile")

FILE_VERSION = 1
FILE_MODE = 0o640  # nothing secret in it; the autogit group may read it, as it may the socket


class IntentsFile(BaseModel):
    """The file's content. Unknown fields are ignored, so an older agent reads a newer one's."""

    model_config = ConfigDict(extra="ignore")

    version: int = Field(FILE_VERSION, description="Format version; a newer agent may add fields.")
    saved_at: datetime | None = None
    paused: bool = False
    drained_gpus: list[str] = Field(default_factory=list)
    drained_runners: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, intents: Intents, now: datetime) -> IntentsFile:
        return cls(
            saved_at=now, paused=intents.paused, drained_gpus=sorted(intents.drained_gpus), drained_runners=sorted(intents.drained_runners)
        )

    def intents(self) -> Intents:
        return Intents(paused=self.paused, drained_gpus=frozenset(self.drained_gpus), drained_runners=frozenset(self.drained_runners))


def state_file_path(config: AgentConfig) -> Path:
    return config.state_file or config.runner.config_dir.parent / "state.json"


def describe(intents: Intents) -> str:
    """One line, e.g. 'scaling paused; GPUs drained: GPU-a; runners draining: r1'."""
    parts = ["scaling paused"] if intents.paused else []
    if intents.drained_gpus:
        parts.append(f"GPUs drained: {', '.join(sorted(intents.drained_gpus))}")
    if intents.drained_runners:
        parts.append(f"runners draining: {', '.join(sorted(intents.drained_runners))}")
    return "; ".join(parts) or "none"


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Intents:
        """The intents saved by the last agent; none when there is no file or it is unusable."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Intents()
        except OSError as exc:
            log.warning("state file %s cannot be read (%s): starting with no operator intents", self.path, exc.strerror or exc)
            return Intents()
        try:
            return IntentsFile.model_validate_json(raw).intents()
        except ValidationError as exc:
            why = exc.errors()[0]
            where = ".".join(str(p) for p in why["loc"])
            problem = f"{where}: {why['msg']}" if where else why["msg"]
        aside = self.path.with_name(self.path.name + ".bad")
        try:
            os.replace(self.path, aside)
            kept = f"set aside as {aside}"
        except OSError:
            kept = "left in place"
        log.warning("state file %s is corrupt (%s), %s: starting with no operator intents", self.path, problem, kept)
        return Intents()

    def save(self, intents: Intents) -> bool:
        """Write the intents atomically; False (and one journal line) when it cannot."""
        data = json.dumps(IntentsFile.of(intents, datetime.now(UTC)).model_dump(mode="json"), indent=2) + "\n"
        directory = self.path.parent
        tmp: str | None = None
        try:
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), FILE_MODE)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)  # the rename itself survives a crash
            finally:
                os.close(dir_fd)
        except OSError as exc:
            log.error("cannot save operator intents to %s (%s): they hold until the agent restarts", self.path, exc.strerror or exc)
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        return True
