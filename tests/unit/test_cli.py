"""The CLI as users run it: a real subprocess of the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples/mixed-queue.json"


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("autogit-agent", path=str(Path(sys.executable).parent))
    assert exe, "autogit-agent console script is not installed in this environment"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_plan_json_has_the_documented_shape():
    proc = agent("plan", str(EXAMPLE), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= {"start", "stop", "waiting"}
    assert {"tags", "platform", "for_jobs", "gpu"} <= set(out["start"][0])
    assert {"runner", "reason"} <= set(out["stop"][0])
    waiting = {w["job"]: w for w in out["waiting"]}
    assert waiting[106]["reason"] == "no-matching-hardware" and waiting[106]["missing_tags"] == ["s390x"]


def test_plan_text():
    proc = agent("plan", str(EXAMPLE))
    assert proc.returncode == 0
    assert "no-matching-hardware" in proc.stdout and "start" in proc.stdout


def test_bad_scenario_is_one_line_and_exit_65(tmp_path):
    bad = tmp_path / "s.json"
    data = json.loads(EXAMPLE.read_text())
    data["jobs"][2]["created_at"] = "yesterday"
    bad.write_text(json.dumps(data))
    proc = agent("plan", str(bad))
    assert proc.returncode == 65
    assert proc.stderr.count("\n") == 1 and "jobs.2.created_at" in proc.stderr


def test_unknown_scenario_key_is_refused(tmp_path):
    data = json.loads(EXAMPLE.read_text())
    data["policy"]["max_runner"] = 3
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps(data))
    proc = agent("plan", str(bad))
    assert proc.returncode == 65 and "policy.max_runner" in proc.stderr


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "x.json").write_text("{nope")
    assert agent("plan", str(tmp_path / "x.json")).returncode == 65
    assert agent("plan", str(tmp_path / "missing.json")).returncode == 66


def test_usage_error_is_64():
    assert agent("frobnicate").returncode == 64


def test_detect_json_reads_this_machine():
    proc = agent("detect", "--json", "--config", str(REPO / "agent/examples/agent.yaml"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["host"]["arch"] == out["cpu"]["arch"]
    native = out["profiles"][0]
    assert native["kind"] == "native" and native["run_untagged"] and "docker" in native["tags"]
