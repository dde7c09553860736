"""The platform stack brought up live, with STAND-INS where the real thing cannot run here.

The same compose files (compose.yaml + dev/compose.yaml) plus tests/compose/live/compose.standin.yaml
run on Docker from one locally built image (live/build-image.sh; nothing is pulled): real Traefik,
CoreDNS, PostgreSQL 17, Redis and MinIO with the stack's own configuration, init scripts and
bucket job; the GitLab simulator (a DOUBLE of GitLab) as `gitlab`; a forward-auth DOUBLE of
Authelia as `authelia`. Published on 127.0.0.1 only; the platform names resolve through the
stack's CoreDNS (AUTOGIT_LAN_IP=127.0.0.1) and are reached through Traefik over TLS, verified
against the stack's local CA."""

from __future__ import annotations

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
    env = {"STANDIN_IMAGE": image, "STANDIN_SESSION": secrets.token_urlsafe(24), "GITLAB_DOUBLE_TOKEN": secrets.token_urlsafe(24),
           "AUTOGIT_REPO": str(REPO)}  # fmt: skip
    lv = Live(root, [*STACKS["dev"], "compose.standin.yaml"], env, {}, env["STANDIN_SESSION"], env["GITLAB_DOUBLE_TOKEN"])
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


def https(live: Live, name: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    """GET https://<name>/<path> the way a LAN client would: the name resolved by the stack's
    CoreDNS, TLS to Traefik with SNI, the certificate verified against the stack's local CA."""
    ip = resolve(live, name)
    ctx = ssl.create_default_context(cafile=str(live.root / "secrets/tls/ca.crt"))
    raw = socket.create_connection((ip, live.ports["traefik/443"]), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=name)
    try:
        head = {"Host": name, "Connection": "close", **(headers or {})}
        tls.sendall((f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode())
        resp = http.client.HTTPResponse(tls)
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
