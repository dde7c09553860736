"""The platform stack brought up live, with STAND-INS where the real thing cannot run here.

The same compose files (compose.yaml + dev/compose.yaml) plus tests/compose/live/compose.standin.yaml
run on Docker from one locally built image (live/build-image.sh; nothing is pulled): real Traefik,
CoreDNS, PostgreSQL 17, Redis and MinIO with the stack's own configuration, init scripts and
bucket job; the GitLab simulator (a DOUBLE of GitLab) as `gitlab`; a forward-auth DOUBLE of
Authelia as `authelia`. Published on 127.0.0.1 only; the platform names resolve through the
stack's CoreDNS (AUTOGIT_LAN_IP=127.0.0.1) and are reached through Traefik over TLS, verified
against the stack's local CA."""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from ci_policy import require
from conftest import COMPOSE, DOMAIN, HERE, REPO, STACKS, run_compose
from dns_wire import query

from autogit.gitlab_double.admin_token import write_token_file

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LIVE = HERE / "live"
NAMES = ("gitlab", "auth", "minio", "traefik")


def _docker_ok() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _free_subnet() -> str:
    """A /24 no Docker network uses (the stack's network gets a fixed subnet)."""
    ids = subprocess.run(["docker", "network", "ls", "-q"], capture_output=True, text=True, timeout=30).stdout.split()
    used = []
    if ids:
        out = subprocess.run(["docker", "network", "inspect", *ids], capture_output=True, text=True, timeout=30).stdout
        used = [ipaddress.ip_network(c["Subnet"]) for n in json.loads(out) for c in (n.get("IPAM", {}).get("Config") or []) if "Subnet" in c]
    for third in range(200, 255):
        net = ipaddress.ip_network(f"172.31.{third}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise AssertionError("no free 172.31.x.0/24 for the stand-in stack")


@dataclass
class Live:
    root: Path
    files: list[str]
    env: dict[str, str]
    ports: dict[str, int]
    session: str
    token: str
    project: str

    def compose(self, compose_bin, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_compose(compose_bin, self.root, self.files, *args, timeout=timeout, extra_env=self.env)


@pytest.fixture(scope="module")
def live(compose_bin, coredns_bin, traefik_bin, tmp_path_factory):
    require(_docker_ok(), "Docker engine not reachable (scripts/dev-setup starts it)")
    require(shutil.which("debootstrap") is not None, "debootstrap missing (scripts/dev-setup installs it)")
    build = subprocess.run(["sh", str(LIVE / "build-image.sh")], capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stderr[-4000:]
    image = build.stdout.split()[-1]

    root = tmp_path_factory.mktemp("live") / "compose"
    shutil.copytree(COMPOSE, root, ignore=shutil.ignore_patterns(".env", "secrets"))
    project = f"autogit-standin-{os.getpid()}"
    overrides = {
        "COMPOSE_PROJECT_NAME": project, "AUTOGIT_DOMAIN": DOMAIN, "AUTOGIT_LAN_IP": "127.0.0.1",
        "AUTOGIT_UPSTREAM_DNS": "127.0.0.1:9", "AUTOGIT_SUBNET": _free_subnet(), "AUTOGIT_BIND_ADDRESS": "127.0.0.1",
    }  # fmt: skip
    lines = [ln for ln in (root / ".env.example").read_text().splitlines() if ln.split("=", 1)[0] not in overrides]
    (root / ".env").write_text("\n".join([*lines, *(f"{k}={v}" for k, v in overrides.items())]) + "\n")
    gen = subprocess.run([sys.executable, str(root / "scripts/gen-secrets"), "--dev"], capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr
    shutil.copy(LIVE / "compose.standin.yaml", root / "compose.standin.yaml")
    # the GitLab double's admin token: a compose secret file in the 0700 secrets/ folder (0600: the double runs as root)
    token = secrets.token_urlsafe(24)
    write_token_file(root / "secrets/gitlab_double_token", token)
    env = {"STANDIN_IMAGE": image, "STANDIN_SESSION": secrets.token_urlsafe(24), "AUTOGIT_REPO": str(REPO)}
    lv = Live(root, [*STACKS["dev"], "compose.standin.yaml"], env, {}, env["STANDIN_SESSION"], token, project)
    try:
        up = lv.compose(compose_bin, "up", "-d", "--wait", "--wait-timeout", "240", timeout=300)
        if up.returncode != 0:
            state = lv.compose(compose_bin, "ps", "-a").stdout + lv.compose(compose_bin, "logs", "--tail", "40").stdout
            raise AssertionError(f"stand-in stack did not come up:\n{up.stderr[-3000:]}\n{state[-6000:]}")
        for service, port, proto in (("traefik", 443, "tcp"), ("traefik", 80, "tcp"), ("coredns", 53, "udp")):
            out = lv.compose(compose_bin, "port", "--protocol", proto, service, str(port)).stdout.strip()
            lv.ports[f"{service}/{port}"] = int(out.rsplit(":", 1)[1])
        yield lv
    finally:
        lv.compose(compose_bin, "down", "-v", "--remove-orphans", "-t", "10", timeout=180)


def resolve(live: Live, name: str) -> str:
    rcode, _, answers = query(live.ports["coredns/53"], name)
    assert rcode == 0 and len(answers) == 1, (name, rcode, answers)
    return answers[0]


def https(live: Live, name: str, path: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes = b"") -> tuple[int, dict, bytes]:
    """GET https://<name>/<path> the way a LAN client would: the name resolved by the stack's
    CoreDNS, TLS to Traefik with SNI, the certificate verified against the stack's local CA."""
    ip = resolve(live, name)
    ctx = ssl.create_default_context(cafile=str(live.root / "secrets/tls/ca.crt"))
    raw = socket.create_connection((ip, live.ports["traefik/443"]), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=name)
    try:
        head = {"Host": name, "Connection": "close", **({"Content-Length": str(len(body))} if body else {}), **(headers or {})}
        tls.sendall((f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode() + body)
        resp = http.client.HTTPResponse(tls, method=method)
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        tls.close()


def test_standin_stack_platform_names_resolve_through_coredns(live):
    for n in NAMES:
        assert resolve(live, f"{n}.{DOMAIN}") == "127.0.0.1"
    assert query(live.ports["coredns/53"], f"nope.{DOMAIN}")[0] == 3


def test_standin_stack_gitlab_double_through_traefik_tls(live):
    status, _, body = https(live, f"gitlab.{DOMAIN}", "/api/v4/user")
    assert status == 401 and json.loads(body) == {"message": "401 Unauthorized"}
    status, headers, body = https(live, f"gitlab.{DOMAIN}", "/api/v4/user", {"PRIVATE-TOKEN": live.token})
    assert status == 200 and "username" in json.loads(body)
    assert https(live, f"gitlab.{DOMAIN}", "/_sim/state")[0] == 401, "the double's control surface wants its token"
    assert headers.get("strict-transport-security", "").startswith("max-age=31536000")  # security-headers middleware


def test_standin_stack_gitlab_is_not_behind_forward_auth(live):
    """A browser-like request without a session reaches GitLab (here its double), not the portal."""
    status, headers, _ = https(live, f"gitlab.{DOMAIN}", "/api/v4/user", {"Accept": "text/html"})
    assert status == 401 and "location" not in headers


def test_standin_stack_dashboards_redirect_to_the_auth_double_without_a_session(live):
    for name, path in ((f"traefik.{DOMAIN}", "/dashboard/"), (f"minio.{DOMAIN}", "/browser")):
        status, headers, _ = https(live, name, path, {"Accept": "text/html"})
        assert status == 302, (name, status)
        assert headers["location"] == f"https://auth.{DOMAIN}/?rd={quote(f'https://{name}{path}', safe='')}&rm=GET"
        # an API client (no text/html) gets 401, as from Authelia
        assert https(live, name, path)[0] == 401


def test_standin_stack_dashboards_let_a_session_through(live):
    cookie = {"Cookie": f"authelia_session={live.session}", "Accept": "text/html"}
    status, _, body = https(live, f"traefik.{DOMAIN}", "/api/overview", cookie)
    assert status == 200 and "http" in json.loads(body)  # Traefik's own API, behind the middleware
    status, _, body = https(live, f"minio.{DOMAIN}", "/", cookie)
    assert status == 200 and b"MinIO" in body  # the real MinIO console
    wrong = {"Cookie": "authelia_session=not-the-session", "Accept": "text/html"}
    assert https(live, f"traefik.{DOMAIN}", "/api/overview", wrong)[0] == 302


def test_standin_stack_auth_portal_is_routed(live):
    status, _, body = https(live, f"auth.{DOMAIN}", "/api/health")
    assert status == 200 and json.loads(body) == {"status": "OK"}


def test_standin_stack_http_redirects_to_https(live):
    conn = http.client.HTTPConnection("127.0.0.1", live.ports["traefik/80"], timeout=10)
    conn.request("GET", "/explore", headers={"Host": f"gitlab.{DOMAIN}"})
    resp = conn.getresponse()
    assert resp.status == 301 and resp.getheader("Location").startswith(f"https://gitlab.{DOMAIN}")
    conn.close()


def test_standin_stack_minio_buckets_users_and_an_object(live, compose_bin):
    """Real MinIO: the init job made every bucket and the runner account, which can write and
    read the runner cache and nothing of GitLab's."""
    script = (
        "set -e; mc alias set runner http://127.0.0.1:9000 runner \"$(cat /run/secrets/minio_runner_secret_key)\" >/dev/null;"
        "echo cached-by-autogit > /tmp/obj; mc cp -q /tmp/obj runner/runner-cache/live/obj >/dev/null; mc cat runner/runner-cache/live/obj;"
        "if mc cp -q /tmp/obj runner/gitlab-artifacts/obj >/dev/null 2>&1; then echo WRITE-ALLOWED; else echo write-denied; fi;"
        "mc alias set root http://127.0.0.1:9000 \"$MINIO_ROOT_USER\" \"$(cat /run/secrets/minio_root_password)\" >/dev/null; mc ls root"
    )
    # run in a one-off container of the init job's service: it holds the root and runner secrets
    run = live.compose(compose_bin, "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "minio-init", "-c", script.replace("127.0.0.1", "minio"))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "cached-by-autogit" and lines[1] == "write-denied"
    buckets = {ln.rsplit(" ", 1)[-1].rstrip("/") for ln in lines[2:]}
    created = (COMPOSE / "config/minio/minio-init.sh").read_text()
    for b in buckets:
        assert b in created
    assert len(buckets) == 11


def test_standin_stack_postgres_has_gitlabs_roles_and_extensions(live, compose_bin):
    sql = "select extname from pg_extension order by 1"
    cmd = f'PGPASSWORD="$(cat /run/secrets/gitlab_db_password)" psql -h 127.0.0.1 -U gitlab -d gitlabhq_production -Atc "{sql}"'
    run = live.compose(compose_bin, "exec", "-T", "postgres", "sh", "-c", cmd)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["amcheck", "btree_gist", "pg_trgm", "plpgsql"]
    cmd = 'PGPASSWORD="$(cat /run/secrets/authelia_db_password)" psql -h 127.0.0.1 -U authelia -d authelia -Atc "select current_user"'
    run = live.compose(compose_bin, "exec", "-T", "postgres", "sh", "-c", cmd)
    assert run.stdout.strip() == "authelia", run.stderr
    wrong = live.compose(compose_bin, "exec", "-T", "postgres", "sh", "-c", "PGPASSWORD=wrong psql -h 127.0.0.1 -U gitlab -d gitlabhq_production -c 'select 1'")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_standin_stack_redis_requires_its_password(live, compose_bin):
    run = live.compose(compose_bin, "exec", "-T", "redis", "sh", "-c", 'redis-cli ping; REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli ping')
    out = [ln for ln in run.stdout.splitlines() if ln.strip()]
    assert out[0].startswith("NOAUTH") and out[1] == "PONG", run.stdout


def _post_job(live: Live, job: dict) -> dict:
    """A pending job, added through Traefik with the simulator's own /_sim/jobs (docs/runners/simulator.md)."""
    status, _, body = https(live, f"gitlab.{DOMAIN}", "/_sim/jobs", {"Content-Type": "application/json", "PRIVATE-TOKEN": live.token},
                            "POST", json.dumps(job).encode())  # fmt: skip
    assert status == 201, body
    return json.loads(body)


def _job(live: Live, job_id: int) -> dict:
    status, _, body = https(live, f"gitlab.{DOMAIN}", f"/api/v4/projects/1/jobs/{job_id}", {"PRIVATE-TOKEN": live.token})
    assert status == 200, body
    return json.loads(body)


@pytest.fixture(scope="module")
def runner_images() -> dict[str, str]:
    """The runner double's images (gitlab_double/runner_image/build.sh): its KEY=image lines, and
    the runner image alone on the last line."""
    out = subprocess.run(["sh", str(REPO / "gitlab_double/runner_image/build.sh")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    images = dict(ln.split("=", 1) for ln in lines if "=" in ln)
    images.setdefault("RUNNER_IMAGE", lines[-1])
    return images


async def test_standin_stack_agent_on_the_host_serves_a_job_through_the_stack(live, runner_images, tmp_path, monkeypatch):
    """The AutoGit agent (its real reconciler, Docker runtime and GitLab adapter) on the host talks
    to GitLab (here its double) by its platform name, resolved by the stack's CoreDNS and reached
    through Traefik over TLS with the stack's CA; the runner it starts (the runner double) joins
    the compose network and reaches https://gitlab.<domain> through Traefik there, trusting the CA
    the agent hands it (certs/<host>.crt), and serves the job.

    An agent whose runtime cannot hand runners a CA yet (RunnerSpec without ca_pem) has its runner
    reach the double directly at http://gitlab on the compose network instead: the agent's own
    path through CoreDNS, Traefik and TLS is checked all the same."""
    from pydantic import SecretStr

    from autogit.agent.config import AgentConfig
    from autogit.agent.gitlab.adapter import GitLabAdapter
    from autogit.agent.inventory.cpu import observe_cpu
    from autogit.agent.model import Host
    from autogit.agent.reconciler import Reconciler
    from autogit.agent.runtime.docker import DockerRuntime, RunnerSpec
    from autogit.agent.state import AgentState

    runner_url = f"https://gitlab.{DOMAIN}" if "ca_pem" in RunnerSpec.model_fields else "http://gitlab"

    real_getaddrinfo = socket.getaddrinfo

    def via_coredns(host, port, *args, **kwargs):  # the host's resolver does not know the LAN zone
        if isinstance(host, str) and host.endswith(f".{DOMAIN}"):
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (resolve(live, host), int(port)))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", via_coredns)
    network = f"{live.project}_platform"
    hostname = f"standin-{os.getpid()}"
    extra = {}
    if "HELPER_IMAGE" in runner_images:  # the docker executor's helper and job images, built locally
        extra = {"helper_image": runner_images["HELPER_IMAGE"], "job_image": runner_images["JOB_IMAGE"], "pull_policy": "never"}
    config = AgentConfig.model_validate({
        "hostname": hostname,
        "gitlab": {"url": f"https://gitlab.{DOMAIN}:{live.ports['traefik/443']}", "ca_file": str(live.root / "secrets/tls/ca.crt"),
                   "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 0.5, "request_timeout": 5, "max_retries": 0},
        "scaling": {"max_runners": 1, "idle_timeout": 2, "runner_cpus": 0, "runner_memory_mb": 0, "reserved_cpus": 0, "reserved_memory_mb": 0},
        "runner": {"image": runner_images["RUNNER_IMAGE"], "network": network, "gitlab_url": runner_url, "config_dir": str(tmp_path / "runners"),
                   "drain_timeout": 600, "check_interval": 1, **extra},
    })  # fmt: skip
    cpu = observe_cpu()
    host = Host(hostname=hostname, arch=cpu.arch, emulated=cpu.emulated, cpus=cpu.cpus, memory_mb=cpu.memory_mb)
    runtime = DockerRuntime(config.runner, hostname)
    reconciler = Reconciler(config, AgentState(), runtime, GitLabAdapter(config.gitlab, SecretStr(live.token)), lambda: host)

    job = _post_job(live, {"project_id": 1, "name": "through-the-stack", "script": ["echo served-through-the-stack"]})
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        state = {}
        while loop.time() < deadline:
            await reconciler.reconcile_once(full_poll=True)
            state = _job(live, job["id"])
            if state["status"] in ("success", "failed"):
                break
            await asyncio.sleep(0.5)
        trace = https(live, f"gitlab.{DOMAIN}", f"/api/v4/projects/1/jobs/{job['id']}/trace", {"PRIVATE-TOKEN": live.token})[2]
        assert state.get("status") == "success", (state.get("status"), state.get("failure_reason"), trace.decode(errors="replace")[-2000:])
        assert b"served-through-the-stack" in trace
        containers = await runtime.list()
        assert containers, "the agent started no runner container"
    finally:
        for c in await runtime.list():
            await runtime.remove(c.name)
        await runtime.close()


def test_standin_stack_prod_backup_jobs_work(live, compose_bin, prod_stack):
    """Prod's backup jobs, their scripts as prod renders them, run against the stand-in stack's
    real PostgreSQL and MinIO (in containers of services that hold the same secrets)."""
    put = live.compose(compose_bin, "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "minio-init", "-c",
                       'mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$(cat /run/secrets/minio_root_password)" >/dev/null;'
                       "echo artifact > /tmp/a; mc cp -q /tmp/a local/gitlab-artifacts/job/1/a >/dev/null")  # fmt: skip
    assert put.returncode == 0, put.stderr
    # `config` keeps compose's `$$` escapes (its output is a compose file); the container gets `$`
    db_script = prod_stack.service("backup-db")["entrypoint"][2].replace("$$", "$")
    run = live.compose(compose_bin, "exec", "-T", "postgres", "sh", "-c", db_script)
    assert run.returncode == 0, run.stderr
    dumps = sorted(ln.split()[-1].split("-20")[0] for ln in run.stdout.splitlines() if ln.endswith(".dump"))
    assert dumps == ["authelia", "gitlabhq_production"], run.stdout
    obj_script = prod_stack.service("backup-objects")["entrypoint"][2].replace("$$", "$")
    run = live.compose(compose_bin, "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "minio-init", "-c",
                       obj_script + "; cat /backups/minio/gitlab-artifacts/job/1/a; ls /backups/minio")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "artifact" in run.stdout.splitlines(), run.stdout
    assert run.stdout.count("Total") == 11, "one mirror per bucket: " + run.stdout  # mc's summary table per run
