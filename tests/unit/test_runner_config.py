"""What a runner's config.toml says, per GPU vendor, executor and kind (pure: no Docker needed),
checked against the gitlab-runner double's copy of gitlab-runner's config keys and validation."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from pydantic import SecretStr

from autogit.agent.config import RunnerConfig
from autogit.agent.model import Gpu, RunnerKind
from autogit.agent.runtime.docker import (
    JOB_OF_LABEL,
    DockerRuntime,
    RunnerSpec,
    nvidia_cdi_specs,
    platform_check_script,
    use_cdi,
)
from autogit.agent.runtime.runner_config import (
    GITLAB_MIN_MAXIMUM_TIMEOUT_S,
    RUN_SINGLE_CHECK_INTERVAL_S,
    RUN_SINGLE_NOT_HEALTHY_SLEEP_S,
    RUN_SINGLE_SHUTDOWN_TIMEOUT_S,
    forceful_timeout_s,
    go_duration,
    kill_after_s,
    short_token_v17,
    short_token_v18_2,
    short_tokens,
)

DOUBLE = Path(__file__).resolve().parents[2] / "gitlab_double" / "runner_image" / "entrypoint.py"


def _double():
    spec_ = importlib.util.spec_from_file_location("gitlab_runner_double", DOUBLE)
    assert spec_ is not None and spec_.loader is not None
    module = importlib.util.module_from_spec(spec_)
    sys.modules[spec_.name] = module  # its dataclasses look their module up
    spec_.loader.exec_module(module)
    return module


runner_double = _double()

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


def test_nvidia_gets_exactly_its_uuid_through_gpus_even_with_cdi():
    # gitlab-runner reads `devices` entries as host paths (executors/docker/docker.go
    # parseDeviceString): a CDI name there fails every GPU job, so CDI never reaches config.toml.
    for cdi in (False, True):
        table = rendered(DockerRuntime(RunnerConfig(), "h", cdi=cdi), spec(H100))["runners"][0]["docker"]
        assert table["gpus"] == f"device={H100.id}" and "devices" not in table


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
    cdi = DockerRuntime(RunnerConfig(executor="shell"), "h", cdi=True)._container_gpu(spec(H100))["device_requests"][0]
    assert cdi["Driver"] == "cdi" and cdi["DeviceIDs"] == [f"nvidia.com/gpu={H100.id}"]
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


def _all_variants() -> list[dict]:
    out = []
    for executor in ("docker", "shell"):
        for extra in ({}, {"network": "autogit-net", "helper_image": "local/helper:1", "gitlab_url": "http://gitlab.lan"}):
            runtime = DockerRuntime(RunnerConfig(executor=executor, **extra), "h")
            for gpu in (None, H100, MI300, ARC):
                out.append(rendered(runtime, spec(gpu, clone_url="http://gitlab.lan")))
            emulated = spec().model_copy(update={"kind": RunnerKind.EMULATED, "platform": "linux/arm64"})
            out.append(rendered(runtime, emulated))
    return out


def test_every_key_written_is_one_gitlab_runner_knows_and_its_validation_passes():
    for doc in _all_variants():
        runner_double.validate(doc)  # raises ConfigProblem naming the key
        assert set(doc) <= runner_double.CONFIG_KEYS
        for runner in doc["runners"]:
            assert set(runner) <= runner_double.RUNNER_KEYS
            assert set(runner["docker"]) <= runner_double.DOCKER_KEYS


def test_the_doubles_validation_refuses_what_gitlab_runner_does_not_know():
    doc = rendered(DockerRuntime(RunnerConfig(), "h"), spec())
    for path, value in ((("runners", 0, "docker", "platform"), "linux/arm64"), (("runners", 0, "shutdown_timeout"), 30),
                        (("runners", 0, "unhealthy_interval"), "15 seconds"), (("runners", 0, "docker", "pull_policy"), ["sometimes"])):  # fmt: skip
        bad = tomllib.loads(tomli_w.dumps(doc))
        table = bad
        for key in path[:-1]:
            table = table[key]
        table[path[-1]] = value
        try:
            runner_double.validate(bad)
        except runner_double.ConfigProblem as exc:
            assert path[-1] in str(exc)
        else:
            raise AssertionError(f"{path} = {value!r} was accepted")


def test_gitlab_runner_timeouts_and_health_are_its_own_not_the_drain_deadline():
    config = RunnerConfig(drain_timeout=3600, force_timeout=20, unhealthy_interval=15)
    doc = rendered(DockerRuntime(config, "h"), spec())
    assert doc["shutdown_timeout"] == 20  # gitlab-runner's forceful timeout
    assert runner_double.go_duration_s(doc["runners"][0]["unhealthy_interval"], "x") == 15
    assert RunnerConfig.model_validate({"shutdown_timeout": 900}).drain_timeout == 900  # the old name still reads


def test_one_job_mode_names_its_runner_so_run_single_reads_config_toml():
    runtime = DockerRuntime(RunnerConfig(mode="one-job"), "h")
    argv = runtime._command("autogit-h-native-1")
    assert argv[:1] == ["run-single"] and argv[argv.index("--runner") + 1] == "autogit-h-native-1"
    assert argv[argv.index("--max-builds") + 1] == "1"
    assert DockerRuntime(RunnerConfig(), "h")._command("x") == ["run", "--config", "/etc/gitlab-runner/config.toml"]


def test_job_containers_get_the_network_the_clone_url_and_the_runners_label():
    runtime = DockerRuntime(RunnerConfig(network="autogit-net", pull_policy="never", helper_image="local/helper:1"), "h")
    runner = rendered(runtime, spec(clone_url="http://gitlab.lan:8080"))["runners"][0]
    table = runner["docker"]
    assert table["network_mode"] == "autogit-net" and runner["clone_url"] == "http://gitlab.lan:8080"
    assert table["pull_policy"] == ["never"] and table["helper_image"] == "local/helper:1"
    assert table["container_labels"] == {JOB_OF_LABEL: "r1"}
    plain = rendered(DockerRuntime(RunnerConfig(), "h"), spec())["runners"][0]
    assert "network_mode" not in plain["docker"] and "clone_url" not in plain and "helper_image" not in plain["docker"]


def test_a_private_ca_is_written_where_gitlab_runner_looks_for_it(tmp_path: Path):
    runtime = DockerRuntime(RunnerConfig(config_dir=tmp_path), "h")
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    runtime._write_config(spec(ca_pem=pem).model_copy(update={"url": "https://GitLab.example.com:8443/"}))
    assert (tmp_path / "r1" / "certs" / "gitlab.example.com.crt").read_text() == pem


def test_an_emulated_runner_fails_a_job_whose_image_runs_another_architecture():
    runner = rendered(DockerRuntime(RunnerConfig(), "h"), spec().model_copy(update={"kind": RunnerKind.EMULATED, "platform": "linux/arm64"}))["runners"][0]
    assert runner["pre_build_script"] == platform_check_script("linux/arm64")
    here = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    wrong = subprocess.run(["sh", "-c", platform_check_script("linux/arm64" if here != "aarch64" else "linux/amd64")], capture_output=True, text=True)
    assert wrong.returncode == 1 and "docker: {platform:" in wrong.stderr
    right = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}[here]
    assert subprocess.run(["sh", "-c", platform_check_script(right)]).returncode == 0
    assert "pre_build_script" not in rendered(DockerRuntime(RunnerConfig(), "h"), spec())["runners"][0]


# helpers/shorten_token_test.go at v17.11.3 (TestShortenToken), every vector.
SHORT_TOKEN_V17 = [
    ("short", "short"), ("veryverylongtoken", "veryvery"), ("GR1348941Z196cJVywzZpx_Ki_Cn2", "GR1348941Z196cJVy"),
    ("GJ1348941Z196cJVywzZpx_Ki_Cn2", "GJ134894"), ("GRveryverylongtoken", "GRveryve"),
    ("glrt-t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"), ("glrtr-t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"),
    ("glcbt-t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"),
]
# helpers/shorten_token_test.go at v19.3.0 (TestShortenToken), every vector.
SHORT_TOKEN_V18_2 = [
    ("short", "short"), ("veryverylongtoken", "veryveryl"),
    ("t1_t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"), ("t2_t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"),
    ("t3_t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"), ("t4_t9Wkyj-HGRkqQ-VWTGAr", "t4_t9Wkyj"),
    ("glrt-t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"), ("glrt-t1_t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"),
    ("glrtr-t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"), ("glrtr-t1_t9Wkyj-HGRkqQ-VWTGAr", "t1_t9Wkyj"),
    ("glcbt-t9Wkyj-HGRkqQ-VWTGAr", "t9Wkyj-HG"), ("glcbt-t2_t9Wkyj-HGRkqQ-VWTGAr", "t2_t9Wkyj"),
    ("GR1348941Z196cJVywzZpx_Ki_Cn2", "Z196cJVyw"), ("GR134894-196cJVywzZpx_Ki_Cn2", "GR134894-"),
]


def test_short_token_both_forms_match_gitlab_runners_own_vectors():
    assert [short_token_v17(t) for t, _ in SHORT_TOKEN_V17] == [want for _, want in SHORT_TOKEN_V17]
    assert [short_token_v18_2(t) for t, _ in SHORT_TOKEN_V18_2] == [want for _, want in SHORT_TOKEN_V18_2]
    # the double computes the same, per the version it claims
    assert [runner_double.short_token(t, "17.11.3") for t, _ in SHORT_TOKEN_V17] == [w for _, w in SHORT_TOKEN_V17]
    assert [runner_double.short_token(t, "19.3.0") for t, _ in SHORT_TOKEN_V18_2] == [w for _, w in SHORT_TOKEN_V18_2]


def test_a_partitioned_token_is_looked_for_by_both_forms():
    # GitLab's tokens today (glrt-t1_…): 17.x labels with "t1_" and 6 characters, ≥ 18.2 with 9 after it
    token = "glrt-t1_t9Wkyj-HGRkqQ-VWTGAr"
    assert short_tokens(token) == ["t1_t9Wkyj", "t9Wkyj-HG"]
    assert short_tokens("glrt-t9Wkyj-HGRkqQ-VWTGAr") == ["t9Wkyj-HG"]  # the same form: looked for once


def test_durations_are_written_as_go_parses_them():
    assert go_duration(15) == "15s" and go_duration(1_000_000) == "1000000s" and go_duration(0.25) == "250ms"
    assert go_duration(1e-5) == "1ms"  # never 0 for a positive duration
    for seconds in (15, 1_000_000, 0.25, 1.5, 86_400 * 365):
        assert runner_double.go_duration_s(go_duration(seconds), "x") == pytest.approx(seconds, abs=1e-3)
    doc = rendered(DockerRuntime(RunnerConfig(unhealthy_interval=1_000_000), "h"), spec())
    assert doc["runners"][0]["unhealthy_interval"] == "1000000s"  # was "1e+06s", which ParseDuration refuses


def test_force_timeout_below_one_second_is_not_written_as_zero():
    # shutdown_timeout = 0 is read as the 30 s default (common/config.go GetShutdownTimeout)
    doc = rendered(DockerRuntime(RunnerConfig(force_timeout=0.5), "h"), spec())
    assert doc["shutdown_timeout"] == 1
    assert rendered(DockerRuntime(RunnerConfig(force_timeout=10.2), "h"), spec())["shutdown_timeout"] == 11


def test_drain_timeout_under_gitlabs_minimum_maximum_timeout_is_a_config_error():
    from autogit.agent.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as err:
        parse_config("runner:\n  drain_timeout: 60\n")
    (line,) = err.value.lines
    assert line.startswith("runner.drain_timeout: ") and "must be at least 600 s" in line and "\n" not in line
    assert parse_config("runner:\n  drain_timeout: 600\n").runner.drain_timeout == GITLAB_MIN_MAXIMUM_TIMEOUT_S


def test_sigkill_waits_out_run_singles_own_30_s_and_a_drain_outlasts_its_sleeps():
    reusable = RunnerConfig(force_timeout=5)
    one_job = RunnerConfig(force_timeout=5, mode="one-job")
    assert forceful_timeout_s(reusable) == 5 and forceful_timeout_s(one_job) == RUN_SINGLE_SHUTDOWN_TIMEOUT_S == 30
    assert kill_after_s(one_job) > RUN_SINGLE_SHUTDOWN_TIMEOUT_S and kill_after_s(reusable) > 5
    assert runner_double.DEFAULT_SHUTDOWN_TIMEOUT_S == RUN_SINGLE_SHUTDOWN_TIMEOUT_S
    # after SIGQUIT run-single still sleeps out 3 s or 300 s before it exits: the least drain
    # deadline (GitLab's least maximum_timeout) leaves it that long before SIGTERM
    assert GITLAB_MIN_MAXIMUM_TIMEOUT_S > RUN_SINGLE_NOT_HEALTHY_SLEEP_S + RUN_SINGLE_CHECK_INTERVAL_S
    assert (runner_double.NOT_HEALTHY_CHECK_INTERVAL_S, runner_double.CHECK_INTERVAL_S) == (300, 3)


def test_the_doubles_clone_url_keeps_its_path_as_gitlab_runner_does():
    # common/build_url_helper.go GetRemoteURL; the first two vectors are common/build_test.go's
    # TestGetRemoteURL (authenticated) at v19.3.0
    repo = "http://gitlab-ci-token:job-token@test.remote/my/project.git"
    assert runner_double.remote_url("https://test.local/", repo, "my/project", "job-token") == "https://gitlab-ci-token:job-token@test.local/my/project.git"
    assert runner_double.remote_url("", repo, "my/project", "job-token") == repo
    # a relative URL root (GitLab served under /gitlab) is kept, and so is a port
    assert runner_double.remote_url("http://gitlab.lan:8080/gitlab", repo, "g/p", "t") == "http://gitlab-ci-token:t@gitlab.lan:8080/gitlab/g/p.git"


def test_the_doubles_image_platform_rule_follows_the_version_it_claims():
    # v17.11.3 inspects the local tag alone; v19.3.0 by platform where dockerd speaks API >= 1.49
    # (executors/docker/internal/pull/manager.go at each tag)
    assert not runner_double.platform_aware_lookup("17.11.3", (1, 49))
    assert runner_double.platform_aware_lookup("19.3.0", (1, 49)) and runner_double.platform_aware_lookup("19.3.0", (1, 51))
    assert not runner_double.platform_aware_lookup("19.3.0", (1, 41))
