"""The Debian package, end to end, on a real systemd (PID 1 in a local Docker container).

`make deb` builds dist/autogit-agent_<version>_<arch>.deb (lintian included); the harness
(systemd_container.sh) boots a debootstrapped bookworm whose rootfs is cached in
/var/cache/autogit-test; then the package is installed, exercised, upgraded, stopped, removed and
purged there, as an administrator would. The tests run in file order and share one container:
each step starts from the state the previous one left (a failure early makes later ones fail
too; read the first).

Environment:
  AUTOGIT_DEB=PATH       test this .deb (and AUTOGIT_DEMO_DEB=PATH the demo's) instead of running `make deb`
  AUTOGIT_E2E_KEEP=1     leave the container running afterwards (its id is printed)
  CI=true                a missing Docker engine or debootstrap is a failure, not a skip

The fast checks at the end (default conffile) need neither Docker nor a build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from built_debs import built_debs
from ci_policy import require
import yaml

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests/e2e/systemd_container.sh"
SOCK = "/run/autogit/agent.sock"
PKG = "autogit-agent"


# ------------------------------------------------------------------------------------ fixtures


def _need(ok: bool, what: str) -> None:
    require(ok, f"{what} is not available (scripts/dev-setup installs it)")


def _docker_ok(tries: int = 10) -> bool:
    """`docker info` answers (retried: a busy engine can miss one call)."""
    if not shutil.which("docker"):
        return False
    for _ in range(tries):
        try:
            if subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0:
                return True
        except subprocess.TimeoutExpired:
            pass
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The package under test and an 'upgrade' of it (same files, version +e2e1)."""
    _need(_docker_ok(), "a Docker engine")
    _need(shutil.which("debootstrap") is not None, "debootstrap")
    deb, demo = built_debs()
    assert deb.is_file(), deb
    where = tmp_path_factory.mktemp("debs")
    first = where / deb.name
    shutil.copy2(deb, first)
    shutil.copy2(demo, where / demo.name)
    # The upgrade: the same payload under a higher version, so the upgrade path of the maintainer
    # scripts (prerm upgrade, postinst configure <old>) runs for real without a second build.
    tree = where / "tree"
    subprocess.run(["dpkg-deb", "-R", str(first), str(tree)], check=True)
    control = tree / "DEBIAN/control"
    version = re.search(r"^Version: (\S+)$", control.read_text(), re.M).group(1)
    control.write_text(control.read_text().replace(f"Version: {version}", f"Version: {version}+e2e1"))
    second = where / deb.name.replace(version, f"{version}+e2e1")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(second)], check=True, capture_output=True)
    shutil.rmtree(tree)
    return {"dir": where, "first": first, "second": second, "version": version, "demo": where / demo.name}


class Box:
    """One booted container; `sh` runs a shell command in it (as `user` if given)."""

    def __init__(self, cid: str) -> None:
        self.cid = cid

    def sh(self, cmd: str, user: str | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["docker", "exec", "-e", "DEBIAN_FRONTEND=noninteractive", self.cid]
        if user:
            argv += ["runuser", "-u", user, "--"]
        out = subprocess.run(argv + ["sh", "-c", cmd], capture_output=True, text=True, timeout=timeout)
        if check:
            assert out.returncode == 0, f"`{cmd}` exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out

    def out(self, cmd: str, **kw) -> str:
        return self.sh(cmd, **kw).stdout.strip()

    def prop(self, name: str) -> str:
        return self.out(f"systemctl show {PKG} -p {name} --value")

    def wait(self, cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        deadline = time.monotonic() + timeout
        while True:
            res = self.sh(cmd, check=False)
            if res.returncode == 0 or time.monotonic() > deadline:
                return res
            time.sleep(0.3)

    def status(self, user: str | None = None) -> dict:
        return json.loads(self.out(f"curl -sS --fail --max-time 5 --unix-socket {SOCK} http://autogit/v1/status", user=user))


@pytest.fixture(scope="module")
def box(debs: dict):
    started = subprocess.run(["bash", str(HARNESS), "start", str(debs["dir"])], capture_output=True, text=True, timeout=900)
    assert started.returncode == 0, started.stderr[-3000:]
    b = Box(started.stdout.strip().splitlines()[-1])
    yield b
    if os.environ.get("AUTOGIT_E2E_KEEP") == "1":
        print(f"\ncontainer kept: docker exec -it {b.cid} bash")
    else:
        subprocess.run(["bash", str(HARNESS), "stop", b.cid], capture_output=True)


# ------------------------------------------------------------------------------------- the tests


@pytest.mark.slow
@pytest.mark.docker
def test_install_enables_and_starts_the_agent(box: Box, debs: dict) -> None:
    res = box.sh(f"apt-get install -y --no-install-recommends /debs/{debs['first'].name}", timeout=600)
    assert "autogit-agent" in res.stdout
    assert box.out(f"systemctl is-enabled {PKG}") == "enabled"
    active = box.wait(f"systemctl is-active {PKG}")
    assert active.stdout.strip() == "active", box.out(f"journalctl -u {PKG} --no-pager -n 40", check=False)
    # No GitLab URL or token: detect-only, and it says so (sd_notify STATUS=).
    assert "detect-only" in box.prop("StatusText")


@pytest.mark.slow
@pytest.mark.docker
def test_files_modes_and_accounts(box: Box) -> None:
    conffiles = box.out(f"dpkg-query -W -f='${{Conffiles}}' {PKG}")
    assert "/etc/autogit/agent.yaml" in conffiles
    assert "agent.env" not in conffiles  # made by postinst, not a conffile: upgrades never see it
    assert box.out("stat -c '%a %U %G' /etc/autogit/agent.env") == "600 root root"
    for path in (
        "/usr/bin/autogit-agent",
        "/usr/bin/autogit-tui",
        "/lib/systemd/system/autogit-agent.service",
        "/usr/lib/sysusers.d/autogit-agent.conf",
        "/usr/lib/tmpfiles.d/autogit-agent.conf",
        "/usr/share/man/man8/autogit-agent.8.gz",
        "/usr/share/man/man1/autogit-tui.1.gz",
        "/usr/share/bash-completion/completions/autogit-agent",
        "/usr/share/bash-completion/completions/autogit-tui",
        "/usr/share/doc/autogit-agent/copyright",
        "/usr/share/autogit/monitoring/autogit-dashboard.json",
        "/usr/share/autogit/monitoring/autogit-alerts.yaml",
    ):
        box.sh(f"test -e {path}")
    assert box.out("getent passwd autogit | cut -d: -f6,7") == "/var/lib/autogit:/usr/sbin/nologin"
    box.sh("getent group autogit && getent group autogit-admin")
    # The venv was byte-compiled by postinst (the agent cannot do it on a read-only /usr).
    assert int(box.out("find /usr/lib/autogit-agent -name '*.pyc' | wc -l")) > 100
    assert box.out("autogit-agent version").startswith("autogit-agent ")
    box.sh("bash -c '. /usr/share/bash-completion/completions/autogit-agent'")


@pytest.mark.slow
@pytest.mark.docker
def test_the_product_has_no_doubles_and_the_demo_package_adds_them(box: Box, debs: dict) -> None:
    """`apt install autogit-agent` brings no GitLab double and no gitlab-runner double;
    `autogit-agent demo` says in one line what to install; autogit-agent-demo adds
    the doubles to the same venv, and removing it takes them away again."""
    venv_python = "/usr/lib/autogit-agent/bin/python"
    box.sh(f"! {venv_python} -c 'import autogit.gitlab_double'")
    box.sh("! find /usr/lib/autogit-agent -name build.sh | grep -q .")
    demo = box.sh("autogit-agent demo", check=False)
    assert demo.returncode == 69, demo.stdout + demo.stderr
    assert demo.stderr.strip().count("\n") == 0 and "apt install autogit-agent-demo" in demo.stderr, demo.stderr

    box.sh(f"apt-get install -y --no-install-recommends /debs/{debs['demo'].name}", timeout=300)
    box.sh(f"{venv_python} -c 'import autogit.gitlab_double.gitlab_sim'")
    box.sh("test -f /usr/lib/autogit-agent/lib/python3.11/site-packages/autogit/gitlab_double/runner_image/build.sh")
    box.sh(f"{venv_python} -c 'import autogit.gitlab_double.admin_token'")  # its per-run admin token (ADR-018)
    # Past the double: the demo now stops at what this container lacks (Docker), not at the package.
    demo = box.sh("autogit-agent demo", check=False)
    assert "autogit-agent-demo" not in demo.stderr, demo.stderr
    box.sh("apt-get remove -y autogit-agent-demo")
    box.sh("! test -e /usr/lib/autogit-agent/lib/python3.11/site-packages/autogit/gitlab_double")
    box.sh(f"{venv_python} -c 'import autogit.agent.cli'")  # the product is untouched


@pytest.mark.slow
@pytest.mark.docker
def test_socket_answers(box: Box) -> None:
    box.wait(f"test -S {SOCK}", timeout=15)
    status = box.status()
    assert status["phase"] == "detect-only", status


@pytest.mark.slow
@pytest.mark.docker
def test_group_autogit_reads_a_stranger_cannot(box: Box) -> None:
    box.sh("id reader >/dev/null 2>&1 || useradd -m -G autogit reader")
    box.sh("id stranger >/dev/null 2>&1 || useradd -m stranger")
    assert box.status(user="reader")["phase"] == "detect-only"
    res = box.sh(f"curl -sS --max-time 5 -o /dev/null -w '%{{http_code}}' --unix-socket {SOCK} http://autogit/v1/status", user="stranger", check=False)
    # Refused by the file mode (curl exit 7: cannot connect), or at the latest by the API (403).
    assert res.returncode == 7 or res.stdout.strip() == "403", (res.returncode, res.stdout, res.stderr)


@pytest.mark.slow
@pytest.mark.docker
def test_tui_renders_a_screenshot(box: Box) -> None:
    box.sh("rm -f /tmp/x.svg")
    box.sh("cd /tmp && autogit-tui --screenshot /tmp/x.svg", user="reader", timeout=120)
    svg = box.out("cat /tmp/x.svg")
    assert svg.startswith("<svg") and "</svg>" in svg
    assert "detect-only" in svg or "detect" in svg.lower()


@pytest.mark.slow
@pytest.mark.docker
def test_reload_with_a_broken_config_keeps_the_old_one(box: Box) -> None:
    box.sh("cp /etc/autogit/agent.yaml /root/agent.yaml.good")
    pid = box.prop("MainPID")
    since = box.out("date '+%Y-%m-%d %H:%M:%S'")
    try:
        box.sh("printf 'scaling:\\n  max_runners: -3\\n  bogus_key: 1\\n' > /etc/autogit/agent.yaml")
        box.sh(f"systemctl reload {PKG}")
        time.sleep(1)
        assert box.out(f"systemctl is-active {PKG}") == "active"
        assert box.prop("MainPID") == pid  # reloaded in place, not restarted
        box.wait(f"journalctl -u {PKG} --since '{since}' --no-pager -o cat | grep -q max_runners", timeout=10)
        log = box.out(f"journalctl -u {PKG} --since '{since}' --no-pager -o cat")
        assert "scaling.max_runners" in log, log
        assert re.search(r"refused|rejected|kept", log), log
        assert box.status()["phase"] == "detect-only"  # still serving, on the old config
    finally:
        box.sh("cp /root/agent.yaml.good /etc/autogit/agent.yaml")
        box.sh(f"systemctl reload {PKG}")


@pytest.mark.slow
@pytest.mark.docker
def test_upgrade_keeps_config_and_secrets_and_restarts_once(box: Box, debs: dict) -> None:
    box.sh("sed -i 's/^#log_level: info .*/log_level: debug/' /etc/autogit/agent.yaml")
    box.sh("echo '# admin was here' >> /etc/autogit/agent.env")
    yaml_before = box.out("sha256sum /etc/autogit/agent.yaml")
    env_before = box.out("sha256sum /etc/autogit/agent.env")
    # An operator intent made before the upgrade outlives it (ADR-008): saved under the unit's
    # StateDirectory, which ProtectSystem=strict leaves writable.
    box.sh(f"curl -sS --fail --max-time 5 --unix-socket {SOCK} -X POST http://autogit/v1/scaling/pause")
    assert box.status()["paused"] is True
    assert box.out("stat -c '%a %U' /var/lib/autogit/state.json") == "640 autogit"
    pid = box.prop("MainPID")
    box.sh(f"apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold /debs/{debs['second'].name}", timeout=600)
    assert box.out(f"dpkg-query -W -f='${{Version}}' {PKG}") == f"{debs['version']}+e2e1"
    assert box.out("sha256sum /etc/autogit/agent.yaml") == yaml_before
    assert box.out("sha256sum /etc/autogit/agent.env") == env_before
    assert box.out("stat -c '%a %U' /etc/autogit/agent.env") == "600 root"
    assert box.wait(f"systemctl is-active {PKG}").stdout.strip() == "active"
    assert box.prop("MainPID") != pid  # restarted after the upgrade, onto the new files
    box.wait(f"test -S {SOCK}", timeout=15)
    assert box.status()["phase"] == "detect-only"
    assert box.status()["paused"] is True, "the pause did not survive the upgrade"
    assert "operator intents restored from /var/lib/autogit/state.json: scaling paused" in box.out(f"journalctl -u {PKG} --no-pager -o cat")
    box.sh(f"curl -sS --fail --max-time 5 --unix-socket {SOCK} -X POST http://autogit/v1/scaling/resume")
    assert box.status()["paused"] is False


@pytest.mark.slow
@pytest.mark.docker
def test_stop_drains_and_exits_cleanly(box: Box) -> None:
    since = box.out("date '+%Y-%m-%d %H:%M:%S'")
    started = time.monotonic()
    box.sh(f"systemctl stop {PKG}", timeout=120)
    took = time.monotonic() - started
    assert box.out(f"systemctl is-active {PKG}", check=False) == "inactive"
    assert box.prop("Result") == "success"
    assert box.prop("ExecMainStatus") == "0"
    log = box.out(f"journalctl -u {PKG} --since '{since}' --no-pager -o cat")
    # The agent's own line (systemd's "Stopping autogit-agent.service" would match any "stopping").
    assert re.search(r"^agent\.phase agent \S+ → stopping: SIGTERM$", log, re.M), log
    assert took < 45, f"stop took {took:.1f}s (TimeoutStopSec would have killed it)"
    box.sh(f"systemctl start {PKG}")


@pytest.mark.slow
@pytest.mark.docker
def test_remove_stops_it_and_keeps_config(box: Box) -> None:
    box.sh(f"dpkg -L {PKG} > /root/files.txt")
    box.sh(f"apt-get remove -y {PKG}")
    assert box.out(f"systemctl is-active {PKG}", check=False) != "active"
    box.sh("test -f /etc/autogit/agent.yaml && test -f /etc/autogit/agent.env")
    box.sh("getent passwd autogit")
    box.sh("! test -e /usr/lib/autogit-agent")  # no .pyc left behind to keep the venv's dirs


@pytest.mark.slow
@pytest.mark.docker
def test_purge_leaves_no_file_user_or_unit(box: Box) -> None:
    box.sh(f"apt-get purge -y {PKG}")
    left = box.out("while read -r f; do [ -e \"$f\" ] && [ ! -d \"$f\" ] && echo \"$f\"; done < /root/files.txt; true")
    assert left == "", f"files left behind:\n{left}"
    for path in ("/etc/autogit", "/var/lib/autogit", "/var/lib/autogit-agent", "/run/autogit", "/usr/lib/autogit-agent"):
        box.sh(f"! test -e {path}")
    box.sh("! getent passwd autogit")
    box.sh("! getent group autogit && ! getent group autogit-admin")
    box.sh("! getent group docker || test -e /usr/bin/dockerd")  # ours (no Docker in here)
    found = box.out("find /etc/systemd /lib/systemd /usr/lib/systemd /var/lib/systemd /usr/lib/sysusers.d /usr/lib/tmpfiles.d -name '*autogit*'")
    assert found == "", found
    assert box.out(f"systemctl list-unit-files '{PKG}*' --no-legend", check=False) == ""
    assert box.out(f"dpkg-query -W -f='${{Status}}' {PKG} 2>&1", check=False) != "install ok installed"


# --------------------------------------------------------------- fast checks (no Docker, no build)


def test_default_conffile_validates_commented_and_uncommented() -> None:
    """The shipped agent.yaml is valid as shipped (detect-only) and with every example uncommented."""
    from autogit.agent.config import parse_config

    text = (REPO / "packaging/etc/agent.yaml").read_text()
    assert parse_config(text).gitlab.url is None
    examples = "\n".join(line[1:] for line in text.splitlines() if re.match(r"^#([a-z]|  )", line))
    parsed = parse_config(examples)
    assert str(parsed.gitlab.url).startswith("https://")
    assert set(yaml.safe_load(examples)) >= {"gitlab", "scaling", "runner", "webhook", "gpu", "api"}


def test_packaging_sources_are_consistent() -> None:
    """changelog version = pyproject version; the lock pins every runtime dependency."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    head = (REPO / "packaging/debian/changelog").read_text().splitlines()[0]
    upstream = re.match(r"autogit-agent \(([^)-]+)(-[^)]+)?\)", head).group(1)
    assert upstream == project["version"]
    pinned = {
        re.split(r"==", line)[0].lower().replace("_", "-")
        for line in (REPO / "packaging/requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    }
    wanted = {re.split(r"[<>=!~ \[]", dep)[0].lower().replace("_", "-") for dep in project["dependencies"]}
    assert wanted <= pinned, f"not in packaging/requirements.lock (run `make lock`): {sorted(wanted - pinned)}"
