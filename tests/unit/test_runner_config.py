"""What a runner's config.toml says, per GPU vendor and executor (pure: no Docker needed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w
from pydantic import SecretStr

from autogit.agent.config import RunnerConfig
from autogit.agent.model import Gpu, RunnerKind
from autogit.agent.runtime.docker import DockerRuntime, RunnerSpec, nvidia_cdi_specs, use_cdi

H100 = Gpu(id="GPU-bf15d719-3917-6ead-34a7-f12af2ce20bd", vendor="nvidia", model="NVIDIA H100 80GB HBM3", memory_mb=81559)
MI300 = Gpu(id="0000:83:00.0", vendor="amd", model="AMD Instinct MI300X", memory_mb=196608, render_node="/dev/dri/renderD130")
ARC = Gpu(id="0000:03:00.0", vendor="intel", model="Intel Arc A770", memory_mb=16384, render_node="/dev/dri/renderD128")


def spec(gpu: Gpu | None = None, **kw) -> RunnerSpec:
    return RunnerSpec(
        name="r1", gitlab_id=5, token=SecretStr("glrt-secret-token"), url="https://gitlab.example.com",
        tags=["gpu"] if gpu else ["amd64"], run_untagged=gpu is None, kind=RunnerKind.GPU if gpu else RunnerKind.NATIVE,
        platform="linux/amd64", gpu=gpu, cpus=2, memory_mb=4096, **kw,
    )  # fmt: skip


def rendered(runtime: DockerRuntime, s: RunnerSpec) -> dict:
    return tomllib.loads(tomli_w.dumps(runtime.render_config(s)))


def test_plain_runner_one_job_at_a_time_with_limits_and_no_devices():
    doc = rendered(DockerRuntime(RunnerConfig(), "h"), spec())
    assert doc["concurrent"] == 1
    runner = doc["runners"][0]
    assert (runner["executor"], runner["limit"], runner["token"]) == ("docker", 1, "glrt-secret-token")
    assert runner["docker"]["cpus"] == "2" and runner["docker"]["memory"] == "4096m"
    assert not {"devices", "gpus", "group_add"} & set(runner["docker"])


def test_nvidia_gets_exactly_its_uuid_or_its_cdi_device():
    table = rendered(DockerRuntime(RunnerConfig(), "h"), spec(H100))["runners"][0]["docker"]
    assert table["gpus"] == f"device={H100.id}" and "devices" not in table
    table = rendered(DockerRuntime(RunnerConfig(), "h", cdi=True), spec(H100))["runners"][0]["docker"]
    assert table["devices"] == [f"nvidia.com/gpu={H100.id}"] and "gpus" not in table


def test_amd_gets_kfd_and_its_render_node_only():
    table = rendered(DockerRuntime(RunnerConfig(), "h"), spec(MI300))["runners"][0]["docker"]
    assert table["devices"] == ["/dev/kfd", "/dev/dri/renderD130"]


def test_intel_gets_its_render_node_only():
    table = rendered(DockerRuntime(RunnerConfig(), "h"), spec(ARC))["runners"][0]["docker"]
    assert table["devices"] == ["/dev/dri/renderD128"]


def test_shell_executor_puts_the_gpu_on_the_runner_container_instead():
    runtime = DockerRuntime(RunnerConfig(executor="shell"), "h")
    assert runtime._container_gpu(spec(MI300))["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri/renderD130:/dev/dri/renderD130:rwm"]
    request = runtime._container_gpu(spec(H100))["device_requests"][0]
    assert request["DeviceIDs"] == [H100.id] and request["Driver"] == "nvidia"
    assert DockerRuntime(RunnerConfig(), "h")._container_gpu(spec(MI300)) == {}  # docker executor: manager gets none


def test_config_file_is_0600_in_a_0700_directory(tmp_path: Path):
    runtime = DockerRuntime(RunnerConfig(config_dir=tmp_path), "h")
    path = runtime._write_config(spec())
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_cdi_auto_needs_nvidia_specs(tmp_path: Path):
    (tmp_path / "other.yaml").write_text("kind: intel.com/gpu\n")
    assert not nvidia_cdi_specs([str(tmp_path)]) and not use_cdi("auto", [str(tmp_path)])
    (tmp_path / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n")
    assert use_cdi("auto", [str(tmp_path), "/nonexistent"]) and use_cdi("always", []) and not use_cdi("never", [str(tmp_path)])
