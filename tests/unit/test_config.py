from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autogit.agent.config import AgentConfig, ConfigError, load_config, load_secrets, parse_config, weak_webhook_secret

REPO = Path(__file__).resolve().parents[2]


def test_empty_config_is_all_defaults():
    config = parse_config("")
    assert config == AgentConfig()
    assert config.api.socket == Path("/run/autogit/agent.sock")
    assert config.gitlab.url is None  # detect-only until configured


def test_shipped_example_is_valid():
    config = parse_config((REPO / "agent/examples/agent.yaml").read_text())
    assert config.scaling.max_per_arch == {"arm64": 2, "riscv64": 1}


def test_unknown_keys_are_errors_with_their_path():
    with pytest.raises(ConfigError) as err:
        parse_config("scaling:\n  max_runers: 3\nrunner:\n  mode: reusable\n")
    assert err.value.lines == ["scaling.max_runers: unknown key (check the spelling; see docs/configuration/)"]


def test_each_error_is_one_line_naming_the_field():
    with pytest.raises(ConfigError) as err:
        parse_config("gitlab:\n  url: not a url\nscaling:\n  idle_timeout: -1\n  max_runners: many\n")
    fields = sorted(line.split(":", 1)[0] for line in err.value.lines)
    assert fields == ["gitlab.url", "scaling.idle_timeout", "scaling.max_runners"]
    assert all("\n" not in line for line in err.value.lines)


def test_secrets_are_refused_in_the_yaml():
    with pytest.raises(ConfigError) as err:
        parse_config("gitlab:\n  url: https://g.example\n  token: glpat-123\n")
    assert len(err.value.lines) == 1
    assert err.value.lines[0].startswith("gitlab.token: secrets are not read from the config file")
    assert "glpat-123" not in str(err.value)


def test_scope_needs_ids():
    with pytest.raises(ConfigError) as err:
        parse_config("gitlab:\n  scope:\n    kind: groups\n")
    assert err.value.lines[0].startswith("gitlab.scope:")


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ConfigError) as err:
        parse_config("gitlab:\n  url: [\n")
    assert err.value.lines[0].startswith("line ")


def test_secrets_come_from_credentials_then_env_and_leave_the_env(tmp_path, monkeypatch):
    (tmp_path / "gitlab-token").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_secrets({}).gitlab_token.get_secret_value() == "from-credential"
    env = {"AUTOGIT_GITLAB_TOKEN": "from-env", "AUTOGIT_WEBHOOK_SECRET": "hook-from-env", "PATH": "/bin"}
    secrets = load_secrets(env)
    # The credential (the shipped unit's LoadCredential=) wins; the variable is taken out anyway.
    assert secrets.gitlab_token.get_secret_value() == "from-credential"
    assert secrets.webhook_secret.get_secret_value() == "hook-from-env" and secrets.from_environment == {"webhook_secret"}
    assert env == {"PATH": "/bin"}
    assert "from-credential" not in repr(secrets) and "hook-from-env" not in secrets.model_dump_json()


def test_a_reload_keeps_what_the_environment_gave_at_start(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    env = {"AUTOGIT_GITLAB_TOKEN": "from-env"}
    first = load_secrets(env)
    assert env == {} and first.gitlab_token.get_secret_value() == "from-env"
    again = load_secrets(env, previous=first)  # the variable is gone: the value read at start stands
    assert again.gitlab_token == first.gitlab_token and again.from_environment == {"gitlab_token"}
    assert load_secrets({}).gitlab_token is None  # without `previous`, nothing is invented


def test_a_short_webhook_secret_draws_one_line():
    assert weak_webhook_secret(load_secrets({"AUTOGIT_WEBHOOK_SECRET": "x" * 15})).count("\n") == 0
    assert "openssl rand -hex 32" in weak_webhook_secret(load_secrets({"AUTOGIT_WEBHOOK_SECRET": "short"}))
    assert weak_webhook_secret(load_secrets({"AUTOGIT_WEBHOOK_SECRET": "x" * 16})) is None
    assert weak_webhook_secret(load_secrets({})) is None


# A real process given the secrets at exec, as systemd's EnvironmentFile= gives them.
_PROBE = r"""
import subprocess, sys
from autogit.agent.config import load_secrets
secrets = load_secrets()
child = subprocess.run(["cat", "/proc/self/environ"], capture_output=True, check=True).stdout
own = open("/proc/self/environ", "rb").read()
print(secrets.gitlab_token.get_secret_value(), secrets.webhook_secret.get_secret_value(), sep="\n")
sys.stdout.flush()
sys.stdout.buffer.write(b"OWN " + own + b"\nCHILD " + child)
"""


def test_the_secrets_leave_proc_environ_of_the_process_and_its_children():
    token, hook = "glpat-ENV-TOKEN-0123456789abcdef", "WEBHOOK-SECRET-0123456789abcdef"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AUTOGIT_GITLAB_TOKEN": token, "AUTOGIT_WEBHOOK_SECRET": hook}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=60).stdout
    lines = out.split(b"\n", 2)
    assert lines[:2] == [token.encode(), hook.encode()], out[:300]  # read...
    environs = lines[2]
    assert environs.startswith(b"OWN ") and b"\nCHILD " in environs and b"PATH=" in environs
    for secret in (token, hook, "AUTOGIT_GITLAB_TOKEN", "AUTOGIT_WEBHOOK_SECRET"):
        assert secret.encode() not in environs, f"{secret} still in /proc/<pid>/environ"  # ...and gone


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert "does not exist" in err.value.lines[0]


def test_check_config_cli_exit_78_and_one_line_per_error(tmp_path):
    bad = tmp_path / "agent.yaml"
    bad.write_text("scaling:\n  max_runers: 3\n  warm_pool: -2\n")
    proc = subprocess.run([sys.executable, "-m", "autogit.agent.cli", "check-config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 78
    assert sorted(proc.stderr.splitlines()) == sorted([
        "scaling.warm_pool: Input should be greater than or equal to 0",
        "scaling.max_runers: unknown key (check the spelling; see docs/configuration/)",
    ])


def test_config_docs_are_generated_from_the_models():
    proc = subprocess.run([sys.executable, "-m", "autogit.agent.cli", "config-docs"], capture_output=True, text=True, check=True)
    assert proc.stdout == (REPO / "docs/configuration/README.md").read_text(), "run: autogit-agent config-docs > docs/configuration/README.md"
    for key in ("scaling.max_runners", "scaling.idle_timeout", "gitlab.poll_interval", "api.socket", "webhook.enabled"):
        assert f"`{key}`" in proc.stdout


def test_fleet_bounds_that_contradict_each_other_are_one_line_naming_the_section():
    with pytest.raises(ConfigError) as err:
        parse_config("fleet:\n  enabled: true\n  membership_ttl: 90\n  forget_after: 60\n")
    assert err.value.lines == ["fleet: Value error, forget_after must be at least membership_ttl: a host is forgotten only once it is gone"]
    assert parse_config("fleet:\n  forget_after: 90\n").fleet.forget_after == 90


def test_runtime_keys_moved_to_runner_docker_and_old_ones_are_read_with_one_line(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="autogit.config"):
        old = parse_config("runner:\n  docker_host: tcp://d:2375\n  config_dir: /srv/runners\n  network: ci\n  image: x/runner:1\n")
    assert (old.runner.docker.docker_host, str(old.runner.docker.config_dir), old.runner.docker.network) == ("tcp://d:2375", "/srv/runners", "ci")
    assert old.runner.docker_host == "tcp://d:2375" and old.runner.image == "x/runner:1"  # old readers keep working
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "runner.docker_host" in lines[0] and "runner.docker.docker_host" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="autogit.config"):
        new = parse_config("runner:\n  runtime: docker\n  docker:\n    network: ci\n")
    assert new.runner.docker.network == "ci" and caplog.records == []
    with pytest.raises(ConfigError) as both:
        parse_config("runner:\n  network: a\n  docker:\n    network: b\n")
    assert "runner.network is the old place of runner.docker.network" in both.value.lines[0]


def test_the_fleet_is_on_by_default_and_can_be_turned_off():
    assert parse_config("").fleet.enabled is True
    assert parse_config("fleet:\n  enabled: false\n").fleet.enabled is False


def test_the_units_default_credential_reads_as_none_and_the_env_is_used(tmp_path, monkeypatch):
    (tmp_path / "gitlab-token").write_text("\n")  # the unit's SetCredential=gitlab-token:\n, no file given
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_secrets({"AUTOGIT_GITLAB_TOKEN": "from-env"}).gitlab_token.get_secret_value() == "from-env"
    assert load_secrets({}).gitlab_token is None


@pytest.mark.parametrize("key, url", [("gitlab.url", "https://oauth2:glpat-SECRET@gitlab.example.com"),
                                      ("gitlab.url", "https://gitlab.example.com/?private_token=glpat-SECRET"),
                                      ("runner.gitlab_url", "http://user:glpat-SECRET@gitlab:8080")])  # fmt: skip
def test_a_url_carrying_credentials_is_refused_without_echoing_them(key, url):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as err:
        parse_config(f"{section}:\n  {name}: '{url}'\n")
    (line,) = err.value.lines
    assert line.startswith(f"{key}: ") and "never in a URL" in line and "glpat-SECRET" not in line


def test_an_unreadable_credential_is_said_not_taken_for_absent(tmp_path, monkeypatch, caplog):
    (tmp_path / "gitlab-token").mkdir()  # reading it fails (EISDIR), as an unreadable file would
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_secrets({"AUTOGIT_GITLAB_TOKEN": "from-env"}).gitlab_token.get_secret_value() == "from-env"
    assert ["credential gitlab-token in $CREDENTIALS_DIRECTORY cannot be read (Is a directory): falling back to the environment"] == [
        r.getMessage() for r in caplog.records if "credential" in r.getMessage()
    ]
