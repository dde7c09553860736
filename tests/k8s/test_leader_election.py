"""Leader election on the real API server (issue 22 item 1; agent/leader.py, ADR-014): two
replicas in processes of their own stand for one Lease. Killed with SIGKILL, the leader's Lease
is taken over by the other within the Lease's duration; cut off from the API server (a TCP relay
that stops relaying, as a partition does: nothing is refused, nothing arrives), the leader stops
acting *before* the other one starts: never two acting at once. A clean stop hands the Lease
back at once. Times are time.monotonic() of each process: one clock on one machine."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
LEASE = dict(duration=6.0, renew_deadline=4.0, retry=1.0)  # as lease_candidate.py sets them


class Relay:
    """A TCP relay to the API server that can be cut: after cut(), bytes stop flowing both
    ways on every connection, old and new, while the sockets stay open (a partition)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.cut_off = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.cut_off.is_set():
                continue  # accepted, never answered
            upstream = socket.create_connection(self.target)
            self._sockets.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.cut_off.is_set():
                    continue  # swallowed: the other side waits for good
                dst.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        self.cut_off.set()

    def close(self) -> None:
        self.server.close()
        for s in self._sockets:
            s.close()


class Candidate:
    def __init__(self, kubeconfig: Path, namespace: str, lease: str, identity: str) -> None:
        self.identity = identity
        self.lines: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "lease_candidate.py"), str(kubeconfig), namespace, lease, identity],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def when(self, acting: bool, after: float = 0.0, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line["acting"] is acting and line["t"] >= after and "ready" not in line:
                    return float(line["t"])
            if self.proc.poll() is not None and acting:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.identity}: no acting={acting} after {after}; saw {self.lines}")

    @property
    def acting_now(self) -> bool:
        changes = [line for line in self.lines if "ready" not in line]
        return bool(changes and changes[-1]["acting"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _via(kubeconfig: Path, port: int, target: Path) -> Path:
    cfg = yaml.safe_load(kubeconfig.read_text())
    for cluster in cfg["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    target.write_text(yaml.safe_dump(cfg))
    return target


def _leader_first(a: Candidate, b: Candidate) -> tuple[Candidate, Candidate]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for leader, follower in ((a, b), (b, a)):
            if leader.acting_now:
                return leader, follower
        time.sleep(0.05)
    raise AssertionError(f"nobody leads: {a.lines} {b.lines}")


def test_kill_9_of_the_leader_hands_over_within_the_lease(k8s_cluster, k8s_namespace) -> None:
    lease = f"autogit-{uuid.uuid4().hex[:6]}"
    a = Candidate(k8s_cluster.kubeconfig, k8s_namespace, lease, "replica-a")
    b = Candidate(k8s_cluster.kubeconfig, k8s_namespace, lease, "replica-b")
    try:
        leader, follower = _leader_first(a, b)
        time.sleep(2)
        assert not follower.acting_now  # one leader at a time
        killed = time.monotonic()
        leader.proc.kill()  # SIGKILL: no release, the Lease must run out
        took = follower.when(True, after=killed)
        assert took - killed <= LEASE["duration"] + 2 * LEASE["retry"] + 1, (killed, took)
        holder = k8s_cluster.kubectl_json("get", "lease", lease, "-n", k8s_namespace)["spec"]["holderIdentity"]
        assert holder == follower.identity
    finally:
        a.stop()
        b.stop()


def test_a_leader_cut_off_from_the_api_server_stops_acting_before_the_other_starts(k8s_cluster, k8s_namespace, tmp_path) -> None:
    lease = f"autogit-{uuid.uuid4().hex[:6]}"
    relay = Relay(k8s_cluster.state.api_port)
    # a reaches the API server only through the relay: it starts first so that it leads
    a = Candidate(_via(k8s_cluster.kubeconfig, relay.port, tmp_path / "a.kubeconfig"), k8s_namespace, lease, "replica-a")
    try:
        a.when(True)
        b = Candidate(k8s_cluster.kubeconfig, k8s_namespace, lease, "replica-b")
        try:
            time.sleep(3)
            assert a.acting_now and not b.acting_now
            cut = time.monotonic()
            relay.cut()
            stopped = a.when(False, after=cut)
            started = b.when(True, after=cut)
            assert stopped < started, f"a acted until {stopped - cut:.2f} s after the cut, b from {started - cut:.2f} s"
            assert stopped - cut <= LEASE["renew_deadline"] + 0.5
            assert a.proc.poll() is None  # still running, just no longer acting
        finally:
            b.stop()
    finally:
        a.proc.kill()
        a.proc.wait()
        relay.close()


def test_a_clean_stop_hands_the_lease_back_at_once(k8s_cluster, k8s_namespace) -> None:
    lease = f"autogit-{uuid.uuid4().hex[:6]}"
    a = Candidate(k8s_cluster.kubeconfig, k8s_namespace, lease, "replica-a")
    b = Candidate(k8s_cluster.kubeconfig, k8s_namespace, lease, "replica-b")
    try:
        leader, follower = _leader_first(a, b)
        stopped = time.monotonic()
        leader.stop()
        assert any(line.get("released") for line in leader.lines)
        took = follower.when(True, after=stopped)
        assert took - stopped < LEASE["duration"], "the follower waited out the Lease instead of taking it when released"
    finally:
        a.stop()
        b.stop()
