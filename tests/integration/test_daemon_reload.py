"""Reload through the real daemon (`autogit-agent run` in a process, SIGHUP and the socket's
POST /v1/config/reload): every key that can change while running is applied, each key that
only a restart applies is named in the event, in `status` and in the journal, and a bad config
keeps the old one. The GitLab side is the project's GitLab simulator over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_daemon import EXE, Notifications

from autogit.agent.config import AgentConfig
from autogit.agent.daemon import config_changes
from autogit.gitlab_double import GitLabSimulator


class Daemon:
    """`autogit-agent run` with a config file this test rewrites; its journal (stdout) is kept."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None, wrapper: list[str] | None = None) -> None:
        self.path = tmp_path / "agent.yaml"
        self.sock = tmp_path / "agent.sock"
        self.config = {
            "api": {"socket": str(self.sock), "group": "nonexistent-group"},
            "runner": {"config_dir": str(tmp_path / "runners")},
            **config,
        }
        self.write()
        self.notify = Notifications(tmp_path / "notify.sock")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOGIT_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        self.log_path = tmp_path / "journal.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*(wrapper or []), str(EXE), "run", "--config", str(self.path)], env={**base, **(env or {}), "NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
            stdout=self._log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.notify.wait_for("READY=1")

    def write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.config))

    def set(self, section: str, **values: Any) -> None:
        self.config[section] = {**self.config.get(section, {}), **values}
        self.write()

    def sighup(self) -> None:
        self.notify.seen.clear()
        self.proc.send_signal(signal.SIGHUP)
        self.notify.wait_for("RELOADING=1")
        self.notify.wait_for("READY=1")

    def status(self, human: bool = False) -> Any:
        argv = [str(EXE), "status", "--socket", str(self.sock)] + ([] if human else ["--json"])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        return out.stdout if human else json.loads(out.stdout)

    def api_reload(self) -> tuple[int, dict[str, Any]]:
        out = subprocess.run(
            ["curl", "-s", "-w", "\n%{http_code}", "--unix-socket", str(self.sock), "-X", "POST", "http://autogit/v1/config/reload"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        body, code = out.stdout.rsplit("\n", 1)
        return int(code), json.loads(body)

    def journal(self) -> str:
        return self.log_path.read_text()

    def wait(self, what: str, condition: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; journal:\n{self.journal()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@pytest.fixture
def daemons(tmp_path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None) -> Daemon:
        started.append(Daemon(tmp_path, config, env))
        return started[-1]

    yield start
    for d in started:
        d.stop()


def test_config_changes_names_each_key_and_sorts_what_needs_a_restart():
    old = AgentConfig.model_validate({"scaling": {"max_runners": 4, "max_per_arch": {"arm64": 1}}})
    new = AgentConfig.model_validate({
        "scaling": {"max_runners": 6, "max_per_arch": {"arm64": 2}}, "gitlab": {"poll_interval": 3},
        "gpu": {"vendors": ["amd"], "cdi": "never"}, "api": {"max_connections": 9}, "hostname": "renamed",
    })  # fmt: skip
    applied, restart = config_changes(old, new)
    assert applied == ["gitlab.poll_interval", "gpu.vendors", "scaling.max_per_arch.arm64", "scaling.max_runners"]
    assert restart == ["api.max_connections", "gpu.cdi", "hostname"]
    assert config_changes(new, new) == ([], [])


def test_reload_applies_what_it_can_and_names_what_needs_a_restart(daemons):
    d = daemons({"gitlab": {"poll_interval": 1}})
    assert d.status()["config"] == {"loaded_at": d.status()["config"]["loaded_at"], "reloads": 0, "applied": [], "restart_needed": []}

    d.set("scaling", max_runners=3, idle_timeout=60)
    d.set("gpu", vendors=["amd", "intel"], readings_interval=5)
    d.set("api", max_connections=17)
    d.config["hostname"] = "renamed-box"
    d.write()
    d.sighup()
    cfg = d.status()["config"]
    assert cfg["reloads"] == 1
    assert cfg["applied"] == ["gpu.readings_interval", "gpu.vendors", "scaling.idle_timeout", "scaling.max_runners"]
    assert cfg["restart_needed"] == ["api.max_connections", "hostname"]
    human = d.status(human=True)
    assert "config: RESTART NEEDED to apply api.max_connections, hostname" in human
    journal = d.journal()
    assert "config.reloaded config re-read: applied gpu.readings_interval, gpu.vendors, scaling.idle_timeout, scaling.max_runners; " \
           "needs a restart to apply: api.max_connections, hostname" in journal
    assert "only apply after a restart (systemctl restart autogit-agent): api.max_connections, hostname" in journal
    assert d.status()["hostname"] != "renamed-box"  # the running name stays until a restart

    # Through the socket too; the restart list is against the running agent, not the last file:
    # putting the host name back takes it off the list.
    del d.config["hostname"]
    d.write()
    code, body = d.api_reload()
    assert code == 200 and body["message"] == "config re-read: nothing changed that applies live; needs a restart to apply: api.max_connections"
    assert d.status()["config"]["restart_needed"] == ["api.max_connections"]

    # A bad config is refused and the old one kept, with nothing counted as applied.
    d.path.write_text("scaling:\n  max_runers: 3\n")
    d.sighup()
    assert d.status()["config"]["reloads"] == 2
    code, body = d.api_reload()
    assert code == 409 and "scaling.max_runers" in body["error"]["message"]
    assert "new config refused, old one kept" in d.journal()


@pytest.mark.docker
def test_reload_rebuilds_the_gitlab_adapter_and_the_poll_interval(daemons, docker_client):
    with GitLabSimulator().running_in_thread() as sim:
        sim.add_project(2, "autogit/other", group_id=1)
        sim.add_job(project_id=1, tags=["s390x"])  # nothing here can serve it: it only waits
        d = daemons(
            {"gitlab": {"scope": {"kind": "projects", "projects": [1]}, "poll_interval": 600, "request_timeout": 2, "max_retries": 0},
             "scaling": {"paused": True}},
            env={"AUTOGIT_GITLAB_TOKEN": sim.private_token},
        )  # fmt: skip
        assert d.status()["phase"] == "detect-only"  # no gitlab.url yet
        # A GitLab URL where none answers: out of detect-only, GitLab failing, nothing seen.
        d.set("gitlab", url="http://127.0.0.1:9")
        d.sighup()
        d.wait("GitLab failing", lambda: d.status()["gitlab"]["ok"] is False)
        assert d.status()["phase"] == "degraded"

        # The URL: a new adapter, and a full poll at once (the interval is 10 minutes).
        d.set("gitlab", url=sim.url)
        d.sighup()
        d.wait("GitLab reachable", lambda: d.status()["gitlab"]["ok"] is True)
        d.wait("project 1's job", lambda: d.status()["counts"]["pending_jobs"] == 1)

        # The scope: project 2's jobs become visible.
        sim.add_job(project_id=2, tags=["s390x"])
        d.set("gitlab", scope={"kind": "projects", "projects": [1, 2]})
        d.sighup()
        d.wait("project 2's job", lambda: d.status()["counts"]["pending_jobs"] == 2)
        assert d.status()["config"]["applied"] == ["gitlab.scope.projects"]

        # The poll interval: with 600 s a new job would not be seen for ten minutes.
        d.set("gitlab", poll_interval=0.5)
        d.sighup()
        time.sleep(1.0)  # past the pass this reload wakes: only a poll at the new interval finds the job
        sim.add_job(project_id=1, tags=["s390x"])
        d.wait("the job found by the faster poll", lambda: d.status()["counts"]["pending_jobs"] == 3, timeout=15)
