"""The runner loop again, with a mocked AMD GPU: a prepared sysfs tree read by the real AMD
backend, and real device nodes (/dev/kfd and the card's render node) made by the test.

With the docker executor each job runs in a job container that gitlab-runner (here its double)
creates from config.toml: the GPU job's container must carry exactly the allocated card's render
node and /dev/kfd, no other job's container any, and the runner containers none at all.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import docker
import pytest
from ci_policy import require
from runner_harness import Harness, finished
from sysfs_trees import amd_7900xtx

from autogit.agent.inventory.gpu import AmdBackend
from autogit.agent.model import RunnerKind

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _char_device(path: Path) -> None:
    """A real character device node (1:3, the same driver as /dev/null: harmless to open)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


async def test_gpu_job_gets_exactly_its_card_and_no_other_runner_gets_any(sim, runner_image, tmp_path):
    require(os.geteuid() == 0, "mknod of device nodes needs root")
    dev = tmp_path / "dev"
    _char_device(dev / "kfd")
    _char_device(dev / "dri/renderD129")  # the card (minor 1)
    amd_7900xtx(tmp_path)  # sysfs: /sys/devices/.../0000:03:00.0 with drm/card1, drm/renderD129
    snaps = AmdBackend(tmp_path, dev).observe()
    assert len(snaps) == 1 and snaps[0].kfd
    gpu = snaps[0].gpu

    h = Harness(sim, runner_image, tmp_path, idle_timeout=1)
    h.runtime.dev_root = dev
    h.host = h.host.model_copy(update={"gpus": [gpu]})
    h.reconciler = h.new_reconciler()
    client = docker.from_env()
    seen_devices: dict[str, list[str]] = {}  # runner containers
    job_devices: dict[str, list[str]] = {}  # build containers, by the runner they belong to
    configs: dict[str, dict] = {}

    def inspect() -> None:
        try:
            look()
        except docker.errors.NotFound:
            pass  # a container removed between the listing and its inspection: seen next round or never ran

    def look() -> None:
        for c in client.containers.list(all=True, filters={"label": "io.autogit.job-of"}):
            if c.labels.get("io.autogit.job-of", "").startswith(f"autogit-{h.hostname}-") and c.labels.get("com.gitlab.gitlab-runner.type") == "build":
                job_devices[c.labels["io.autogit.job-of"]] = [d["PathInContainer"] for d in c.attrs["HostConfig"].get("Devices") or []]
        for c in client.containers.list(all=True, filters={"label": f"io.autogit.host={h.hostname}"}):
            seen_devices[c.name] = [d["PathInContainer"] for d in c.attrs["HostConfig"].get("Devices") or []]
            # Runner tokens live only in config.toml: never in a container's env, command or labels.
            exposed = json.dumps([c.attrs["Config"].get("Env"), c.attrs["Config"].get("Cmd"), c.attrs["Args"], c.attrs["Config"].get("Labels")])
            assert "glrt-" not in exposed, exposed
            path = h.config.runner.config_dir / c.name / "config.toml"
            if path.exists():
                configs[c.name] = tomllib.loads(path.read_text())

    try:
        check = "sleep 1; ls /dev/kfd /dev/dri/ 2>&1 || true; echo devices-listed"
        gpu_job = sim.add_job(project_id=1, tags=["gpu", "rocm"], script=[check]).id
        plain_job = sim.add_job(project_id=1, tags=[], script=[check]).id

        await h.until(lambda: (inspect(), finished(sim, [gpu_job, plain_job]))[1], 120, "the GPU job and the plain job")
        started = {e.data["runner"]: e.data for e in h.state.bus.history() if e.type == "runner.started"}
        gpu_runners = [name for name, d in started.items() if d["kind"] == RunnerKind.GPU.value]
        other_runners = [name for name in started if name not in gpu_runners]
        assert len(gpu_runners) == 1 and other_runners
        (gpu_runner,) = gpu_runners

        # The GPU job's container: exactly /dev/kfd and this card's render node, as config.toml says.
        assert sorted(job_devices[gpu_runner]) == ["/dev/dri/renderD129", "/dev/kfd"]
        table = configs[gpu_runner]["runners"][0]["docker"]
        assert table["devices"] == [f"{dev}/kfd:/dev/kfd", f"{dev}/dri/renderD129:/dev/dri/renderD129"]
        assert "gpus" not in table
        # No other job got any device, in its container or its config; no runner container any.
        for name in other_runners:
            assert job_devices[name] == []
            assert "devices" not in configs[name]["runners"][0]["docker"]
        assert all(devices == [] for devices in seen_devices.values())

        tokens = [r.token for r in sim.runners] + [configs[name]["runners"][0]["token"] for name in configs]
        assert all(t.startswith("glrt-") for t in tokens)
        assert not any(t in e.model_dump_json() for e in h.state.bus.history() for t in tokens)  # nor in events
        gpu_trace = sim.job(gpu_job).trace.decode()
        plain_trace = sim.job(plain_job).trace.decode()
        assert sim.job(gpu_job).status == "success", gpu_trace
        assert "renderD129" in gpu_trace and "No such file" not in gpu_trace
        assert "No such file" in plain_trace and "renderD129" not in plain_trace
    finally:
        client.close()
        await h.cleanup()
