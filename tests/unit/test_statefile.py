"""The operator-intents file (agent.statefile): saved atomically, read back, pruned, and never
fatal when it is corrupt or unreadable."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from autogit.agent.config import AgentConfig
from autogit.agent.state import AgentState, Intents
from autogit.agent.statefile import StateFile, describe, state_file_path

SOME = Intents(paused=True, drained_gpus=frozenset({"GPU-b", "GPU-a"}), drained_runners=frozenset({"autogit-h-1"}))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "autogit.statefile" and r.levelno >= logging.WARNING]


def test_save_then_load_round_trips_with_mode_0640_and_no_temporary_left(tmp_path: Path) -> None:
    f = StateFile(tmp_path / "lib" / "state.json")  # the directory is made when missing
    assert f.save(SOME)
    assert f.load() == SOME
    assert oct(f.path.stat().st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in f.path.parent.iterdir()) == ["state.json"]
    saved = json.loads(f.path.read_text())
    assert saved["version"] == 1 and saved["drained_gpus"] == ["GPU-a", "GPU-b"] and saved["paused"] is True
    assert f.save(Intents()) and f.load() == Intents()  # replaced whole, not merged


def test_no_file_is_no_intents_and_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert StateFile(tmp_path / "state.json").load() == Intents()
    assert warnings(caplog) == []


def test_a_newer_agents_file_loads_its_unknown_fields_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 7, "paused": False, "drained_gpus": ["GPU-a"], "maintenance": {"GPU-a": "fan"}, "x": 1}))
    assert StateFile(path).load() == Intents(drained_gpus=frozenset({"GPU-a"}))


@pytest.mark.parametrize(
    ("content", "problem"),
    [("{not json", "Invalid JSON"), ('{"paused": "maybe"}', "paused: "), ("[]", "should be an object"), ("", "Invalid JSON")],
)
def test_a_corrupt_file_is_set_aside_with_one_line_and_no_intents(tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, problem: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with caplog.at_level(logging.WARNING):
        assert StateFile(path).load() == Intents()
    [line] = warnings(caplog)
    assert f"state file {path} is corrupt" in line and problem in line and "starting with no operator intents" in line
    assert not path.exists() and (tmp_path / "state.json.bad").read_text() == content
    assert StateFile(path).save(SOME) and StateFile(path).load() == SOME  # the next change writes a good one


def test_an_unreadable_file_is_left_alone_with_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # reading it fails with EISDIR, as a permission or I/O error would
    with caplog.at_level(logging.WARNING):
        assert StateFile(path).load() == Intents()
    [line] = warnings(caplog)
    assert f"state file {path} cannot be read" in line and "starting with no operator intents" in line
    assert path.is_dir()


def test_a_failed_save_is_one_error_line_and_keeps_the_old_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    assert StateFile(path).save(SOME)
    blocked = StateFile(tmp_path / "not-a-dir" / "state.json")
    (tmp_path / "not-a-dir").write_text("")
    with caplog.at_level(logging.ERROR):
        assert not blocked.save(SOME)
    [line] = warnings(caplog)
    assert "cannot save operator intents" in line and "hold until the agent restarts" in line
    assert StateFile(path).load() == SOME


def test_every_intent_change_is_saved(tmp_path: Path) -> None:
    f = StateFile(tmp_path / "state.json")
    state = AgentState()
    state.on_intents = f.save
    state.drain_gpu("GPU-a", "root")
    state.pause("root")
    state.drain_runner("autogit-h-1", "root")
    assert f.load() == Intents(paused=True, drained_gpus=frozenset({"GPU-a"}), drained_runners=frozenset({"autogit-h-1"}))
    state.undrain_gpu("GPU-a", "root")
    state.resume("root")
    assert f.load() == Intents(drained_runners=frozenset({"autogit-h-1"}))


def test_prune_drops_drains_of_runners_that_are_gone_and_saves(tmp_path: Path) -> None:
    f = StateFile(tmp_path / "state.json")
    state = AgentState()
    state.intents = SOME.model_copy(update={"drained_runners": frozenset({"autogit-h-1", "autogit-h-2"})})
    state.on_intents = f.save
    seen = []
    state.bus.add_listener(seen.append)
    assert state.prune_runners(["autogit-h-2", "autogit-h-3"]) == ["autogit-h-1"]
    assert state.intents.drained_runners == {"autogit-h-2"} and state.intents.drained_gpus == SOME.drained_gpus
    assert f.load() == state.intents
    assert [e.type for e in seen] == ["intents.pruned"] and "autogit-h-1" in seen[0].message
    f.path.unlink()
    assert state.prune_runners(["autogit-h-2"]) == [] and not f.path.exists()  # nothing gone: nothing written
    assert len(seen) == 1


def test_the_file_lives_beside_the_runner_configs_unless_configured() -> None:
    assert state_file_path(AgentConfig()) == Path("/var/lib/autogit/state.json")
    assert state_file_path(AgentConfig.model_validate({"runner": {"config_dir": "/srv/ag/runners"}})) == Path("/srv/ag/state.json")
    assert state_file_path(AgentConfig.model_validate({"state_file": "/etc/x.json"})) == Path("/etc/x.json")


def test_describe_names_each_intent() -> None:
    assert describe(SOME) == "scaling paused; GPUs drained: GPU-a, GPU-b; runners draining: autogit-h-1"
    assert describe(Intents()) == "none"
