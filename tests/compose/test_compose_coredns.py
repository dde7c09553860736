"""The Corefile, loaded by a real CoreDNS (built from its Go module by scripts/compose-setup, the
version the compose file pins), with the environment the compose file gives it: the platform's
names answer with the LAN address, other names in the zone get NXDOMAIN and are never
forwarded, and everything else goes to the upstream resolver, here a stub on 127.0.0.1."""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import COMPOSE, DOMAIN, Stack, free_port, stop
from dns_wire import AAAA, A, query, skip_name

UPSTREAM_ANSWER = "203.0.113.7"  # TEST-NET-3: what the stub upstream answers for every A query


class StubUpstream:
    """A minimal upstream resolver on 127.0.0.1: answers every A query with UPSTREAM_ANSWER and
    records the names it was asked."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.asked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            end = skip_name(data, 12)
            labels, pos = [], 12
            while data[pos]:
                labels.append(data[pos + 1 : pos + 1 + data[pos]].decode())
                pos += 1 + data[pos]
            self.asked.append(".".join(labels))
            qtype = struct.unpack(">H", data[end : end + 2])[0]
            header = struct.pack(">HHHHHH", struct.unpack(">H", data[:2])[0], 0x8180, 1, 1 if qtype == A else 0, 0, 0)
            answer = struct.pack(">HHHIH", 0xC00C, A, 1, 60, 4) + socket.inet_aton(UPSTREAM_ANSWER) if qtype == A else b""
            self.sock.sendto(header + data[12 : end + 4] + answer, addr)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def loopback_corefile(text: str, health_port: int) -> str:
    """The same Corefile with each server block bound to 127.0.0.1 and the health endpoint moved
    to a free loopback port (the stack binds them inside its container)."""
    text = re.sub(r"^(\S.*)\{\s*$", lambda m: m.group(0) + "\n    bind 127.0.0.1", text, flags=re.M)
    return text.replace("health :8080", f"health 127.0.0.1:{health_port}")


@contextmanager
def running_coredns(coredns_bin: Path, corefile: Path, env: dict, dns_port: int):
    log = corefile.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(coredns_bin), "-conf", str(corefile), "-dns.port", str(dns_port)],
                                env={"PATH": os.environ.get("PATH", ""), **env}, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            yield proc, log
        finally:
            stop(proc)


@pytest.fixture(scope="module")
def coredns(coredns_bin, dev_stack: Stack, tmp_path_factory):
    env = dict(dev_stack.service("coredns")["environment"])
    assert env["AUTOGIT_DOMAIN"] == DOMAIN
    work = tmp_path_factory.mktemp("coredns")
    health = free_port()
    corefile = work / "Corefile"
    corefile.write_text(loopback_corefile((COMPOSE / "config/coredns/Corefile").read_text(), health))
    dns_port = free_port(socket.SOCK_DGRAM)
    with StubUpstream() as upstream:
        env["AUTOGIT_UPSTREAM_DNS"] = f"127.0.0.1:{upstream.port}"
        with running_coredns(coredns_bin, corefile, env, dns_port) as (proc, log):
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, f"coredns exited {proc.returncode}:\n{log.read_text()[-3000:]}"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{health}/health", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            yield dns_port, upstream, env["AUTOGIT_LAN_IP"], log


@pytest.mark.parametrize("name", ["gitlab", "auth", "minio", "traefik", ""])
def test_platform_names_answer_with_the_lan_address(coredns, name):
    port, upstream, lan_ip, _ = coredns
    fqdn = f"{name}.{DOMAIN}" if name else DOMAIN
    rcode, authoritative, answers = query(port, fqdn)
    assert (rcode, authoritative, answers) == (0, True, [lan_ip])
    assert fqdn not in upstream.asked


def test_other_names_in_the_zone_are_nxdomain_and_not_forwarded(coredns):
    port, upstream, _, _ = coredns
    rcode, authoritative, answers = query(port, f"nope.{DOMAIN}")
    assert (rcode, authoritative, answers) == (3, True, [])
    assert f"nope.{DOMAIN}" not in upstream.asked


def test_no_ipv6_address_is_invented(coredns):
    port, _, _, _ = coredns
    rcode, _, answers = query(port, f"gitlab.{DOMAIN}", AAAA)
    assert rcode == 0 and answers == []


def test_everything_else_is_forwarded_upstream(coredns):
    port, upstream, _, _ = coredns
    assert query(port, "example.org") == (0, False, [UPSTREAM_ANSWER])
    assert "example.org" in upstream.asked
    # and cached: a second query does not reach the upstream again
    before = upstream.asked.count("example.org")
    assert query(port, "example.org")[2] == [UPSTREAM_ANSWER]
    assert upstream.asked.count("example.org") == before


def test_a_broken_corefile_is_refused(coredns_bin, tmp_path):
    """Running CoreDNS is a check that can fail: an unknown directive stops it at start."""
    corefile = tmp_path / "Corefile"
    corefile.write_text((COMPOSE / "config/coredns/Corefile").read_text().replace("cache 300", "cahce 300"))
    env = {"AUTOGIT_DOMAIN": DOMAIN, "AUTOGIT_LAN_IP": "192.0.2.1", "AUTOGIT_UPSTREAM_DNS": "127.0.0.1:9"}
    with running_coredns(coredns_bin, corefile, env, free_port(socket.SOCK_DGRAM)) as (proc, log):
        assert proc.wait(timeout=20) != 0
    assert "cahce" in log.read_text()


def test_the_binary_is_the_pinned_version(coredns_bin, dev_stack: Stack, versions):
    out = subprocess.run([str(coredns_bin), "-version"], capture_output=True, text=True, timeout=30).stdout
    assert out.startswith(f"CoreDNS-{versions['COREDNS_VERSION'].lstrip('v')}\n"), out
    assert dev_stack.service("coredns")["image"] == f"coredns/coredns:{versions['COREDNS_VERSION'].lstrip('v')}"
