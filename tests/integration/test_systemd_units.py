"""The shipped unit, sysusers and tmpfiles files, checked offline by systemd's own tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ci_policy import needs

from autogit.agent.config import ApiConfig

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SERVICE = UNITS / "autogit-agent.service"
# Measured 1.5 ("OK"); the threshold leaves a little room, but any real loosening fails.
SECURITY_THRESHOLD = 20

pytestmark = needs(shutil.which("systemd-analyze") is not None, "needs systemd-analyze")


def fake_root(tmp_path: Path, unit_text: str) -> Path:
    """A minimal root for `verify --root`: the distro's units, the unit under test, and stand-ins
    for the binaries it runs (this machine has no /usr/bin/autogit-agent)."""
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/autogit-agent.service").write_text(unit_text)
    for binary in ("usr/bin/autogit-agent", "bin/kill"):
        path = root / binary
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", "autogit-agent.service"], capture_output=True, text=True, timeout=60
    )


def test_unit_verifies_without_warnings(tmp_path):
    result = verify(fake_root(tmp_path, SERVICE.read_text()))
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings (rc 0), so stderr must be empty too.
    assert result.stderr.strip() == "", result.stderr


def test_verify_would_catch_a_bad_key(tmp_path):
    # Control: the check above is only worth something if a typo makes noise.
    result = verify(fake_root(tmp_path, SERVICE.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")))
    assert "NoNewPrivilege" in result.stderr


def test_security_exposure_under_threshold():
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--threshold={SECURITY_THRESHOLD}", str(SERVICE)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Overall exposure level for autogit-agent.service: 1.5" in result.stdout


def test_unit_keeps_what_the_agent_needs():
    text = SERVICE.read_text()
    for line in (
        "Type=notify", "ExecStart=/usr/bin/autogit-agent run", "WatchdogSec=30", "Restart=on-failure",
        "RestartPreventExitStatus=78", "ExecReload=/bin/kill -HUP $MAINPID", "SupplementaryGroups=docker",
        "RuntimeDirectory=autogit", "StateDirectory=autogit", "ConfigurationDirectory=autogit",
        "EnvironmentFile=-/etc/autogit/agent.env", "DeviceAllow=char-drm rw", "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
    ):
        assert line in text.splitlines(), line
    lines = text.splitlines()
    assert "PrivateDevices=yes" not in lines  # would hide the GPUs
    assert "PrivateUsers=yes" not in lines  # would unmap the docker group


def test_unit_caps_descriptors_tasks_and_memory():
    """Issue 24: ~1,100 idle webhook connections ran the agent out of descriptors under systemd's
    default soft limit (1,024). The limit sits above what the agent's own connection caps sum to,
    so those caps refuse first; tasks and memory are bounded too. `verify` above accepts them,
    tests/e2e/test_unit_on_systemd.py checks that systemd applies them."""
    lines = SERVICE.read_text().splitlines()
    values = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in lines if line.startswith(("Limit", "TasksMax", "Memory"))}
    assert values == {"LimitNOFILE": "8192", "TasksMax": "256", "MemoryHigh": "768M", "MemoryMax": "1G"}
    socket_cap = ApiConfig().max_connections
    assert socket_cap + 2 * 512 + 256 < int(values["LimitNOFILE"])  # the socket, two TCP listeners, everything else


def test_unit_loads_credentials_with_a_default_and_keeps_the_env_file_fallback():
    lines = SERVICE.read_text().splitlines()
    for name in ("gitlab-token", "webhook-secret"):
        assert f"LoadCredential={name}:/etc/autogit/{name}" in lines
        # without the default, a missing file fails the start (systemd.exec, SetCredential=)
        assert f"SetCredential={name}:\\n" in lines
    assert "EnvironmentFile=-/etc/autogit/agent.env" in lines


@needs(shutil.which("systemd-sysusers") is not None, "needs systemd-sysusers")
def test_sysusers_creates_user_groups_and_docker_membership(tmp_path):
    root = tmp_path / "sysroot"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).write_text("")
    subprocess.run(["systemd-sysusers", f"--root={root}", str(UNITS / "autogit-agent.sysusers")], check=True, capture_output=True, timeout=60)
    passwd = (root / "etc/passwd").read_text()
    groups = {line.split(":")[0]: line.split(":")[3] for line in (root / "etc/group").read_text().splitlines()}
    assert passwd.startswith("autogit:") and ":/var/lib/autogit:/usr/sbin/nologin" in passwd
    assert "autogit" in groups and "autogit-admin" in groups
    assert "autogit" in groups["docker"].split(",")


@needs(shutil.which("systemd-tmpfiles") is not None, "needs systemd-tmpfiles")
def test_tmpfiles_creates_directories_with_their_modes(tmp_path):
    root = tmp_path / "tmproot"
    (root / "etc").mkdir(parents=True)
    # tmpfiles resolves user names inside --root.
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nautogit:x:990:990::/var/lib/autogit:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\nautogit:x:990:\n")
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", str(UNITS / "autogit-agent.tmpfiles")], check=True, capture_output=True, timeout=60)
    modes = {p: (root / p).stat() for p in ("run/autogit", "var/lib/autogit", "var/lib/autogit/runners", "etc/autogit")}
    assert modes["var/lib/autogit/runners"].st_mode & 0o777 == 0o700 and modes["var/lib/autogit/runners"].st_uid == 990
    assert modes["etc/autogit"].st_mode & 0o777 == 0o750 and modes["etc/autogit"].st_uid == 0 and modes["etc/autogit"].st_gid == 990
    assert modes["run/autogit"].st_mode & 0o777 == 0o750
