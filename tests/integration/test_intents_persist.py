"""Operator intents survive an agent restart (an upgrade), through the real daemon: a GPU
drained over the socket is still drained after `autogit-agent run` is stopped and started
again, and the job that wants it waits instead of getting a runner on it.

The GPU is an AMD card in a umockdev testbed given to the daemon's process alone
(`umockdev-run -d`: its LD_PRELOAD shows the daemon that /sys and /dev), read by the real AMD
backend; GitLab is the project's simulator over real HTTP, Docker the local engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from ci_policy import require
from test_daemon_reload import Daemon

from autogit.gitlab_double import GitLabSimulator

GPU = "0000:03:00.0"


def _drm_minor(name: str, minor: int) -> str:
    return f"""
P: /devices/pci0000:00/{GPU}/drm/{name}
N: dri/{name}
E: DEVNAME=/dev/dri/{name}
E: DEVTYPE=drm_minor
E: SUBSYSTEM=drm
A: dev=226:{minor}
"""


# A Radeon RX 7900 XTX (1002:744c) under amdgpu with its two drm minors, in umockdev's
# device-description format (what umockdev-record writes: P path, E uevent property,
# A sysfs attribute, N device node); the same card as umockdev_support.add_amd.
AMD_TESTBED = f"""\
P: /devices/pci0000:00/{GPU}
E: DRIVER=amdgpu
E: PCI_CLASS=30000
E: PCI_ID=1002:744C
E: PCI_SLOT_NAME={GPU}
E: SUBSYSTEM=pci
A: vendor=0x1002
A: device=0x744c
A: class=0x030000
A: mem_info_vram_total={24 << 30}
A: mem_info_vram_used={256 << 20}
A: gpu_busy_percent=3
{_drm_minor("card1", 1)}{_drm_minor("renderD129", 129)}"""


def api(d: Daemon, method: str, path: str) -> Any:
    out = subprocess.run(
        ["curl", "-sf", "--unix-socket", str(d.sock), "-X", method, f"http://autogit{path}"], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, f"{method} {path}: curl exit {out.returncode}; journal:\n{d.journal()[-2000:]}"
    return json.loads(out.stdout)


def restartable(tmp_path: Path, config: dict[str, Any], env: dict[str, str], wrapper: list[str]) -> Daemon:
    stale = tmp_path / "notify.sock"  # the previous daemon's sd_notify listener
    stale.unlink(missing_ok=True)
    return Daemon(tmp_path, config, env, wrapper)


@pytest.mark.docker
def test_a_drained_gpu_stays_drained_across_a_restart_and_gets_no_job(tmp_path, docker_client):
    require(shutil.which("umockdev-run") is not None, "needs umockdev-run (package umockdev)")
    testbed = tmp_path / "amd.umockdev"
    testbed.write_text(AMD_TESTBED)
    wrapper = ["umockdev-run", "-d", str(testbed), "--"]
    hostname = f"persist-{uuid.uuid4().hex[:8]}"  # no other test's runner containers are this host's
    state_file = tmp_path / "state.json"  # beside runner.config_dir, the default place
    # A drain left by an earlier agent for a runner that is gone by now: pruned at the first pass.
    state_file.write_text(json.dumps({"version": 1, "drained_runners": [f"autogit-{hostname}-gone"]}))

    with GitLabSimulator().running_in_thread() as sim:
        config = {
            "hostname": hostname,
            "gitlab": {"url": sim.url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 0.5},
        }
        env = {"AUTOGIT_GITLAB_TOKEN": sim.private_token}
        first = restartable(tmp_path, config, env, wrapper)
        try:
            [gpu] = api(first, "GET", "/v1/gpus")["gpus"]
            assert gpu["gpu"]["id"] == GPU and gpu["gpu"]["drained"] is False  # the testbed's card, schedulable
            first.wait("the gone runner's drain pruned", lambda: json.loads(state_file.read_text())["drained_runners"] == [])
            assert api(first, "POST", f"/v1/gpus/{GPU}/drain")["changed"] is True
            saved = json.loads(state_file.read_text())
            assert saved["drained_gpus"] == [GPU] and saved["paused"] is False
            assert oct(state_file.stat().st_mode & 0o777) == "0o640"
        finally:
            first.stop()
        journal = first.journal()
        assert f"operator intents restored from {state_file}: runners draining: autogit-{hostname}-gone" in journal
        assert f"intents.pruned drain intents dropped for runners that are gone: autogit-{hostname}-gone" in journal

        # While the agent is down (an upgrade), a job arrives that only this GPU could serve.
        job = sim.add_job(project_id=1, tags=["gpu", "amd", "rocm"])
        second = restartable(tmp_path, config, env, wrapper)
        try:
            assert f"operator intents restored from {state_file}: GPUs drained: {GPU}" in second.journal()
            [gpu] = api(second, "GET", "/v1/gpus")["gpus"]
            assert gpu["gpu"]["drained"] is True and gpu["operator_drained"] is True and gpu["held_by_runner"] is None
            second.wait("the GPU job seen", lambda: any(j["job"]["id"] == job.id for j in api(second, "GET", "/v1/jobs")["jobs"]))
            [view] = [j for j in api(second, "GET", "/v1/jobs")["jobs"] if j["job"]["id"] == job.id]
            assert view["status"] == "waiting" and view["runner"] is None
            assert view["wait"]["reason"] == "gpu-unavailable" and GPU in view["wait"]["detail"], view
            plan = api(second, "GET", "/v1/plan")["plan"]
            assert plan["start"] == [] and plan["served"] == []
            assert api(second, "GET", "/v1/runners")["runners"] == []
            assert docker_client.containers.list(all=True, filters={"label": f"io.autogit.host={hostname}"}) == []
            assert [j.status for j in sim.jobs if j.id == job.id] == ["pending"]
        finally:
            second.stop()
    assert json.loads(state_file.read_text())["drained_gpus"] == [GPU]  # still there for the next start


def test_a_corrupt_state_file_is_one_journal_line_and_the_agent_starts_without_intents(tmp_path):
    state_file = tmp_path / "state.json"
    state_file.write_text('{"paused": true, "drained_gpus": ')  # cut short, as by a full disk
    d = Daemon(tmp_path, {"gitlab": {"poll_interval": 1}})  # detect-only: no GitLab, no Docker needed
    try:
        assert d.status()["paused"] is False
        lines = [line for line in d.journal().splitlines() if "state file" in line]
        assert len(lines) == 1 and "WARNING" in lines[0], d.journal()
        assert f"state file {state_file} is corrupt (Invalid JSON" in lines[0]
        assert f"set aside as {state_file}.bad: starting with no operator intents" in lines[0]
        assert api(d, "POST", "/v1/scaling/pause")["changed"] is True
        assert json.loads(state_file.read_text())["paused"] is True  # a good file again
    finally:
        d.stop()
