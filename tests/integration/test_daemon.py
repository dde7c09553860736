"""`autogit-agent run` as systemd runs it: a real process, a real NOTIFY_SOCKET datagram socket,
a real unix socket for the API, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

EXE = Path(sys.executable).parent / "autogit-agent"


class Notifications:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.seen: list[str] = []

    def wait_for(self, line: str, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line in m.split("\n") for m in self.seen):
                return self.seen
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except TimeoutError:
                pass
        raise AssertionError(f"no {line!r} from the agent; got {self.seen}")


@pytest.fixture
def agent_env(tmp_path):
    config = {
        "api": {"socket": str(tmp_path / "agent.sock"), "group": "nonexistent-group"},
        "runner": {"config_dir": str(tmp_path / "runners")},
        "gitlab": {"poll_interval": 1},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    notify = Notifications(tmp_path / "notify.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOGIT_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="2000000")
    return path, notify, env, tmp_path / "agent.sock"


def test_detect_only_lifecycle_with_sd_notify_reload_and_stop(agent_env):
    path, notify, env, sock = agent_env
    proc = subprocess.Popen([str(EXE), "run", "--config", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1")  # pinged while the loop is healthy (WatchdogSec=2s here)
        status_lines = [line for m in notify.seen for line in m.split("\n") if line.startswith("STATUS=")]
        assert any("detect-only" in s for s in status_lines), notify.seen
        assert oct(sock.stat().st_mode & 0o777) == "0o660"

        out = subprocess.run([str(EXE), "status", "--json", "--socket", str(sock)], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        assert status["phase"] == "detect-only" and status["host"]["arch"]
        human = subprocess.run([str(EXE), "status", "--socket", str(sock)], capture_output=True, text=True, timeout=20)
        assert human.returncode == 0 and "detect-only" in human.stdout

        # A broken config on reload is refused and the old one kept: RELOADING=1 … READY=1.
        good = path.read_text()
        path.write_text("scaling:\n  max_runers: 3\n")
        notify.seen.clear()
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        path.write_text(good)
        out = subprocess.run([str(EXE), "status", "--json", "--socket", str(sock)], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0  # still up, still answering

        notify.seen.clear()
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert "new config refused" in log and "scaling.max_runers" in log
    assert not sock.exists()  # a clean stop removes the socket it bound
    # One agent.ready per start, in the journal as on the bus.
    assert sum(1 for line in log.splitlines() if " agent.ready " in line) == 1, log


def test_bad_config_at_start_exits_78_with_one_line_per_error(agent_env):
    path, _, env, _ = agent_env
    path.write_text("scaling:\n  max_runners: -1\n  idle_timout: 3\n")
    proc = subprocess.run([str(EXE), "run", "--config", str(path)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert sorted(proc.stderr.splitlines()) == [
        "scaling.idle_timout: unknown key (check the spelling; see docs/configuration/)",
        "scaling.max_runners: Input should be greater than or equal to 0",
    ]


def test_status_without_an_agent_is_exit_69(tmp_path):
    out = subprocess.run([str(EXE), "status", "--socket", str(tmp_path / "none.sock")], capture_output=True, text=True, timeout=20)
    assert out.returncode == 69 and "autogit" in out.stderr.lower()
