"""The shipped unit's credentials and limits on a real systemd 252 (PID 1 in a local Docker
container, systemd_container.sh), without building the .deb: the unit, sysusers and tmpfiles
files as shipped, and a stand-in for /usr/bin/autogit-agent that reports what the service
was given (the real agent's reading of it is tests/integration/test_agent_secrets.py).

- `LoadCredential=gitlab-token:/etc/autogit/gitlab-token` hands the file to the service in
  $CREDENTIALS_DIRECTORY, never in its environment;
- a missing credential file does not fail the start: the unit's `SetCredential=` default (a
  bare newline, which the agent reads as no secret) stands in, and the env file still works;
- LimitNOFILE=, TasksMax=, MemoryHigh=, MemoryMax= are what systemd applies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci_policy import require

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests/e2e/systemd_container.sh"
UNIT = "autogit-agent"

pytestmark = [pytest.mark.slow, pytest.mark.docker]

# What the service was given, written where the unit lets it write (RuntimeDirectory=); then
# READY=1 and watchdog pings, as the agent sends them (Type=notify, WatchdogSec=).
PROBE = r"""#!/usr/bin/python3
import json, os, resource, socket, time
d = os.environ.get("CREDENTIALS_DIRECTORY")
report = {
    "credentials": {n: open(os.path.join(d, n)).read() for n in sorted(os.listdir(d))} if d else None,
    "credentials_mode": oct(os.stat(d).st_mode & 0o777) if d else None,
    "secret_variables": sorted(k for k in os.environ if k.startswith("AUTOGIT_")),
    "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    "user": os.getuid(),
}
with open("/run/autogit/probe.json", "w") as f:
    json.dump(report, f)
addr = os.environ["NOTIFY_SOCKET"]
addr = "\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", addr)
while True:
    time.sleep(5)
    s.sendto(b"WATCHDOG=1", addr)
"""


class Box:
    def __init__(self, cid: str) -> None:
        self.cid = cid

    def sh(self, cmd: str, check: bool = True) -> str:
        out = subprocess.run(["docker", "exec", self.cid, "sh", "-c", cmd], capture_output=True, text=True, timeout=120)
        if check:
            assert out.returncode == 0, f"`{cmd}` exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        return out.stdout.strip()

    def put(self, text: str, path: str, mode: str) -> None:
        subprocess.run(["docker", "exec", "-i", self.cid, "sh", "-c", f"umask 077 && cat > {path} && chmod {mode} {path}"],
                       input=text, text=True, check=True, timeout=60)  # fmt: skip

    def start_and_report(self) -> dict:
        self.sh("rm -f /run/autogit/probe.json")
        self.sh(f"systemctl restart {UNIT}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.sh(f"systemctl is-active {UNIT}", check=False) == "active" and self.sh("test -s /run/autogit/probe.json", check=False) == "":
                report = self.sh("cat /run/autogit/probe.json", check=False)
                if report:
                    return json.loads(report)
            time.sleep(0.3)
        raise AssertionError(self.sh(f"systemctl status {UNIT} --no-pager; journalctl -u {UNIT} --no-pager -n 30", check=False))


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    require(shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0,
            "a Docker engine is not available (scripts/dev-setup starts dockerd)")  # fmt: skip
    started = subprocess.run(["bash", str(HARNESS), "start"], capture_output=True, text=True, timeout=900)
    assert started.returncode == 0, started.stderr[-3000:]
    b = Box(started.stdout.strip().splitlines()[-1])
    try:
        for name, where in (("autogit-agent.service", "/etc/systemd/system/autogit-agent.service"),
                            ("autogit-agent.sysusers", "/usr/lib/sysusers.d/autogit-agent.conf"),
                            ("autogit-agent.tmpfiles", "/usr/lib/tmpfiles.d/autogit-agent.conf")):  # fmt: skip
            b.put((REPO / "systemd" / name).read_text(), where, "0644")
        b.put(PROBE, "/usr/bin/autogit-agent", "0755")
        # systemd mounts each service's credentials (a ramfs) in a helper's mount namespace and
        # relies on shared propagation to see it; a host's / is shared (systemd makes it so at
        # boot), but docker's --tmpfs /run is private, so without this every service, root's
        # too, would find its $CREDENTIALS_DIRECTORY empty.
        b.sh("mount --make-rshared /")
        b.sh("systemd-sysusers && systemd-tmpfiles --create && systemctl daemon-reload")
        yield b
    finally:
        subprocess.run(["bash", str(HARNESS), "stop", b.cid], capture_output=True)


def test_a_credential_file_reaches_the_service_and_the_env_file_is_the_fallback(box: Box) -> None:
    box.put("glpat-FROM-THE-CREDENTIAL-FILE\n", "/etc/autogit/gitlab-token", "0600")
    box.put("AUTOGIT_WEBHOOK_SECRET=from-the-env-file-0123456789abcdef\n", "/etc/autogit/agent.env", "0600")
    report = box.start_and_report()
    assert report["credentials"]["gitlab-token"] == "glpat-FROM-THE-CREDENTIAL-FILE\n"
    # No /etc/autogit/webhook-secret: the unit's default, read by the agent as no secret, and the
    # start did not fail; the env file's variable is there for the agent to fall back on.
    assert report["credentials"]["webhook-secret"].strip() == ""
    assert report["secret_variables"] == ["AUTOGIT_WEBHOOK_SECRET"]
    assert report["credentials_mode"] in ("0o500", "0o700") and report["user"] != 0


def test_no_credential_file_at_all_still_starts(box: Box) -> None:
    box.sh("rm -f /etc/autogit/gitlab-token /etc/autogit/webhook-secret /etc/autogit/agent.env")
    report = box.start_and_report()
    assert {k: v.strip() for k, v in report["credentials"].items()} == {"gitlab-token": "", "webhook-secret": ""}
    assert report["secret_variables"] == []


def test_the_resource_limits_are_applied(box: Box) -> None:
    report = box.start_and_report()
    assert report["nofile"] == [8192, 8192]
    shown = dict(line.split("=", 1) for line in box.sh(f"systemctl show {UNIT} -p LimitNOFILE -p TasksMax -p MemoryHigh -p MemoryMax").splitlines())
    assert shown == {"LimitNOFILE": "8192", "TasksMax": "256", "MemoryHigh": str(768 << 20), "MemoryMax": str(1 << 30)}, shown
