"""The GitLab double is not an open door (issue 24, item 7): its /_sim/ control surface, which
queues jobs that runners then run, answers only the holder of a token made fresh for each run;
the token is handed over in a 0600 file or the environment, never on a command line; the double
binds loopback by default, and the demo's one listens on loopback only."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from ci_policy import require
from rich.console import Console

from autogit.gitlab_double import GitLabSimulator
from autogit.gitlab_double.access import Access

API = "/api/v4"
SIM_ROUTES = [("POST", "/_sim/jobs", {"project_id": 1, "tags": [], "script": ["id"]}), ("GET", "/_sim/state", None),
              ("POST", "/_sim/faults", {"mode": "500", "seconds": 30})]  # fmt: skip


def listen_addresses(pid: int, port: int | None) -> set[str]:
    """The local addresses `pid` listens on at `port` (None: any port): its sockets
    (/proc/<pid>/fd) matched by inode against the kernel's TCP tables, so another process's
    listener is never counted."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and port in (None, int(hex_port, 16)) and fields[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(family, raw))
    return found


def control(sim: GitLabSimulator, method: str, path: str, body: dict | None, headers: dict[str, str]) -> requests.Response:
    return requests.request(method, f"{sim.url}{path}", json=body, headers=headers, timeout=10)


@pytest.fixture
def sim() -> Iterator[GitLabSimulator]:
    with GitLabSimulator().running_in_thread() as simulator:
        yield simulator


# ------------------------------------------------------------------------- the control surface
def test_every_control_route_is_in_this_test() -> None:
    """The routes below are all of /_sim/: a new control route cannot slip past these tests."""
    routes = {(r.method, r.resource.canonical) for r in GitLabSimulator()._app.router.routes() if r.resource is not None}
    assert {(m, p) for m, p in routes if p.startswith("/_sim")} == {(m, p) for m, p, _ in SIM_ROUTES}


@pytest.mark.parametrize(("method", "path", "body"), SIM_ROUTES)
@pytest.mark.parametrize("headers", [{}, {"PRIVATE-TOKEN": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic cm9vdDpyb290"},
                                     {"PRIVATE-TOKEN": ""}], ids=["none", "wrong", "wrong-bearer", "basic", "empty"])  # fmt: skip
def test_control_surface_refuses_without_the_admin_token(sim: GitLabSimulator, method: str, path: str, body: dict | None,
                                                         headers: dict[str, str]) -> None:  # fmt: skip
    refused = control(sim, method, path, body, headers)
    assert refused.status_code == 401, refused.text
    assert refused.text.count("\n") == 0 and refused.json()["message"].startswith("401 Unauthorized"), refused.text
    assert sim.jobs == [] and sim.state()["fault"] == "none", "a refused call changed nothing"


def test_control_surface_refuses_a_near_miss_and_a_non_utf8_token(sim: GitLabSimulator) -> None:
    """Compared whole (a prefix or one more character is wrong), and a header that is not UTF-8
    is a 401, not a 500."""
    for near in (sim.private_token[:-1], sim.private_token + "x", sim.private_token.upper()):
        assert control(sim, "GET", "/_sim/state", None, {"PRIVATE-TOKEN": near}).status_code == 401
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as raw:
        raw.sendall(b"GET /_sim/state HTTP/1.1\r\nHost: x\r\nPRIVATE-TOKEN: \xff\xfe\r\nConnection: close\r\n\r\n")
        assert raw.recv(64).startswith(b"HTTP/1.1 401"), "a non-UTF-8 token header is refused"


def test_control_surface_refuses_another_users_token(sim: GitLabSimulator) -> None:
    """Only this run's admin token opens /_sim/: a developer's API token does not."""
    dev = sim.access.add_user("dev")
    token = sim.access.add_token(dev, {"api"})
    assert requests.get(f"{sim.url}{API}/user", headers={"PRIVATE-TOKEN": token}, timeout=10).status_code == 200
    assert control(sim, "GET", "/_sim/state", None, {"PRIVATE-TOKEN": token}).status_code == 401


def test_control_surface_works_with_the_admin_token(sim: GitLabSimulator) -> None:
    made = control(sim, "POST", "/_sim/jobs", {"project_id": 1, "tags": ["arm64"]}, sim.admin_headers)
    assert made.status_code == 201 and [j.id for j in sim.jobs] == [made.json()["id"]]
    bearer = {"Authorization": f"Bearer {sim.private_token}"}
    assert control(sim, "GET", "/_sim/state", None, bearer).json()["jobs"][0]["tag_list"] == ["arm64"]
    assert control(sim, "POST", "/_sim/faults", {"mode": "500", "seconds": 30}, bearer).status_code == 200
    assert sim.state()["fault"] == "500"


def test_each_double_gets_its_own_random_token() -> None:
    first, second = GitLabSimulator(), GitLabSimulator()
    assert first.private_token != second.private_token
    for token in (first.private_token, second.private_token):
        assert token.startswith("glpat-") and len(token) >= 6 + 43  # 32 random bytes
    with first.running_in_thread(), second.running_in_thread():
        assert control(first, "GET", "/_sim/state", None, second.admin_headers).status_code == 401
        assert requests.get(f"{first.url}{API}/user", headers=second.admin_headers, timeout=10).status_code == 401
        assert requests.get(f"{first.url}{API}/user", headers=first.admin_headers, timeout=10).json()["is_admin"] is True


def test_a_given_token_is_used_and_an_empty_one_refused() -> None:
    with GitLabSimulator(private_token="given-token-0123456789").running_in_thread() as sim:
        assert control(sim, "GET", "/_sim/state", None, {"PRIVATE-TOKEN": "given-token-0123456789"}).status_code == 200
    with pytest.raises(ValueError, match="private_token is empty"):
        GitLabSimulator(private_token="")
    # a given Access without root: the token still guards /_sim/
    with GitLabSimulator(access=Access(), private_token="only-the-control-key").running_in_thread() as sim:
        assert control(sim, "GET", "/_sim/state", None, {}).status_code == 401


# ------------------------------------------------------------------ python -m autogit.gitlab_double
def module_env(extra: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GITLAB_DOUBLE_")} | extra


def start_module(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """The double as a process (environment: ours, no GITLAB_DOUBLE_*, plus `env`); its first stdout line."""
    proc = subprocess.Popen([sys.executable, "-m", "autogit.gitlab_double", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=module_env(env or {}))  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline()


def stop_module(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    return err


def test_the_module_makes_a_token_per_run_in_a_private_file_and_never_in_argv() -> None:
    tokens = []
    for _ in range(2):
        proc, line = start_module()
        try:
            url = line.split(" at ")[1].split()[0].removesuffix("/api/v4")
            token_file = Path(line.rsplit(" in ", 1)[1].strip())
            token = token_file.read_text().strip()
            tokens.append(token)
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
            assert token not in line, "the token itself is never printed"
            assert token.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert token.encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes()
            assert requests.get(f"{url}/_sim/state", timeout=10).status_code == 401
            assert requests.get(f"{url}/_sim/state", headers={"PRIVATE-TOKEN": token}, timeout=10).status_code == 200
            assert listen_addresses(proc.pid, int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}, "loopback by default"
        finally:
            err = stop_module(proc)
        assert token not in err
        assert not token_file.parent.exists(), "the run's token file goes with the run"
    assert tokens[0] != tokens[1]


def test_the_module_reads_a_token_file_or_creates_it(tmp_path: Path) -> None:
    given = tmp_path / "given"
    given.write_text("from-a-file-0123456789\n")
    given.chmod(0o600)
    proc, line = start_module("--token-file", str(given))
    try:
        url = line.split(" at ")[1].split()[0].removesuffix("/api/v4")
        assert line.rstrip().endswith(f" in {given}")
        assert requests.get(f"{url}/_sim/state", headers={"PRIVATE-TOKEN": "from-a-file-0123456789"}, timeout=10).status_code == 200
    finally:
        stop_module(proc)
    made = tmp_path / "made"
    proc, line = start_module("--token-file", str(made))
    try:
        assert stat.S_IMODE(made.stat().st_mode) == 0o600 and made.read_text().startswith("glpat-")
    finally:
        stop_module(proc)
    assert made.exists(), "a token file the operator named is theirs to keep"


def test_the_module_takes_the_token_from_the_environment() -> None:
    proc, line = start_module(env={"GITLAB_DOUBLE_TOKEN": "from-the-env-0123456789"})
    try:
        url = line.split(" at ")[1].split()[0].removesuffix("/api/v4")
        assert "$GITLAB_DOUBLE_TOKEN" in line and "from-the-env" not in line
        assert requests.get(f"{url}/_sim/state", headers={"PRIVATE-TOKEN": "from-the-env-0123456789"}, timeout=10).status_code == 200
    finally:
        stop_module(proc)


def test_the_module_sends_hooks_with_a_secret_from_a_file(tmp_path: Path) -> None:
    """The Job Hook secret, like the admin token, comes from a file and never from argv."""
    received: list[str | None] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append(self.headers.get("X-Gitlab-Token"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret_file = tmp_path / "hook-secret"
    secret_file.write_text("hook-secret-0123456789\n")
    proc, line = start_module("--webhook", f"http://127.0.0.1:{server.server_port}/hook", "--webhook-secret-file", str(secret_file),
                              env={"GITLAB_DOUBLE_TOKEN": "admin-0123456789"})  # fmt: skip
    try:
        url = line.split(" at ")[1].split()[0].removesuffix("/api/v4")
        assert b"hook-secret-0123456789" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        made = requests.post(f"{url}/_sim/jobs", json={"project_id": 1}, headers={"PRIVATE-TOKEN": "admin-0123456789"}, timeout=10)
        assert made.status_code == 201
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received[:1] == ["hook-secret-0123456789"]
    finally:
        stop_module(proc)
        server.shutdown()


@pytest.mark.parametrize("case", ["empty-file", "both", "argv-token", "webhook-without-secret"])
def test_the_module_refuses_bad_token_input_in_one_line(tmp_path: Path, case: str) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    args, env = {
        "empty-file": (["--token-file", str(empty)], {}),
        "both": (["--token-file", str(empty)], {"GITLAB_DOUBLE_TOKEN": "x" * 20}),
        "argv-token": (["--token", "x" * 20], {}),  # the old argv option is gone
        "webhook-without-secret": (["--webhook", "http://127.0.0.1:9/hook"], {"GITLAB_DOUBLE_TOKEN": "x" * 20}),
    }[case]
    out = subprocess.run([sys.executable, "-m", "autogit.gitlab_double", *args], capture_output=True, text=True, timeout=30,
                         env=module_env(env))  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("python -m autogit.gitlab_double:"), out.stderr
    if case != "argv-token":
        assert out.stderr.strip().count("\n") == 0, out.stderr


# --------------------------------------------------------------------------------------- the demo
def test_the_demo_double_is_on_loopback_with_a_private_token_file(tmp_path: Path) -> None:
    """What `autogit-agent demo` starts (agent/demo.py start_double, in the demo's own process):
    loopback only, a fresh token in a 0600 file whose path (not the token) is printed, and the
    token in no argument or environment variable of the process."""
    from autogit.agent.demo import TOKEN_FILE, start_double

    workdir = tmp_path / "demo"
    workdir.mkdir(mode=0o700)

    async def run() -> tuple[str, str, set[str], int, int]:
        screen = io.StringIO()
        sim = await start_double(workdir, Console(file=screen, width=400))
        try:
            refused = await asyncio.to_thread(control, sim, "POST", "/_sim/jobs", {"project_id": 1}, {})
            allowed = await asyncio.to_thread(control, sim, "GET", "/_sim/state", None, sim.admin_headers)
            return sim.private_token, screen.getvalue(), listen_addresses(os.getpid(), sim.port), refused.status_code, allowed.status_code
        finally:
            await sim.stop()

    token, shown, addresses, refused, allowed = asyncio.run(run())
    token_file = workdir / TOKEN_FILE
    assert addresses == {"127.0.0.1"}
    assert (refused, allowed) == (401, 200)
    assert token_file.read_text().strip() == token and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert str(token_file) in shown and token not in shown
    assert token.encode() not in Path("/proc/self/cmdline").read_bytes()
    assert token not in os.environ.values()
    again = tmp_path / "again"
    again.mkdir(mode=0o700)
    assert asyncio.run(_token_of_a_demo_double(again)) != token


async def _token_of_a_demo_double(workdir: Path) -> str:
    from autogit.agent.demo import start_double

    sim = await start_double(workdir, Console(file=io.StringIO()))
    await sim.stop()
    return sim.private_token


@pytest.mark.docker
@pytest.mark.slow
def test_the_running_demo_keeps_its_double_on_loopback_and_its_token_off_argv_and_env(tmp_path: Path) -> None:
    """`autogit-agent demo` itself, on this machine's Docker engine: while it runs, every socket
    it listens on is loopback, its token file is 0600 in a 0700 directory, the token opens /_sim/
    and is in neither its command line nor its environment; the token never reaches its output,
    and the file is gone once the demo ends."""
    require(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no Docker engine (scripts/dev-setup starts it)")
    require(os.geteuid() == 0, "the demo builds the gitlab-runner double with debootstrap: root")
    demo = subprocess.Popen([sys.executable, "-m", "autogit.agent.cli", "demo", "--jobs", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=module_env({"COLUMNS": "400"}))  # fmt: skip
    try:
        assert demo.stdout is not None
        line = next((ln for ln in iter(demo.stdout.readline, "") if "admin token" in ln), "")
        assert "loopback only" in line, line
        url = line.split(" at ")[1].split(",")[0]
        token_file = Path(line.rsplit(" is in ", 1)[1].split()[0])
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        assert token.encode() not in Path(f"/proc/{demo.pid}/cmdline").read_bytes()
        assert token.encode() not in Path(f"/proc/{demo.pid}/environ").read_bytes()
        assert listen_addresses(demo.pid, int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}
        assert listen_addresses(demo.pid, None) <= {"127.0.0.1", "::1"}, "the demo listens on loopback only (double and webhook)"
        assert requests.get(f"{url}/_sim/state", timeout=10).status_code == 401
        assert requests.get(f"{url}/_sim/state", headers={"PRIVATE-TOKEN": token}, timeout=10).status_code == 200
        out, err = demo.communicate(timeout=400)
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=60)
    assert demo.returncode == 0, err[-2000:]
    assert token not in line + out + err
    assert "moved to" not in out + err, "the demo's own config uses the current keys"
    assert not token_file.exists(), "the token file goes with the demo"


def test_api_refuses_a_non_utf8_token_with_401(sim: GitLabSimulator) -> None:
    """GitLab's API answers a token header it cannot match with 401 (lib/gitlab/auth/auth_finders.rb);
    the double did the same only for UTF-8 headers and gave a 500 for others."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as raw:
        raw.sendall(b"GET " + API.encode() + b"/user HTTP/1.1\r\nHost: x\r\nPRIVATE-TOKEN: \xff\xfe\r\nConnection: close\r\n\r\n")
        assert raw.recv(64).startswith(b"HTTP/1.1 401"), "a non-UTF-8 API token header is refused"
