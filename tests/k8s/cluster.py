"""A fresh single-node Kubernetes for the tests: etcd, kube-apiserver, kube-scheduler,
kube-controller-manager, a real kubelet on its own containerd (Debian's containerd, runc and
CNI bridge plugin) running real pods, and kwok for fake nodes (tests/k8s/nodes.py).

Binaries come from scripts/k8s-build; every file lives under one folder, and `down` removes
what `up` changed on the host: processes (by the pids recorded in cluster.json, and the
containerd shims that serve this cluster's socket), mounts under the folder, the CNI bridge,
network namespaces it made, the kubepods cgroups, iptables chains the kubelet added,
/var/lib/kubelet and the pod log folders when they did not exist before.

    python tests/k8s/cluster.py up DIR      (scripts/k8s-up)  prints DIR/admin.kubeconfig
    python tests/k8s/cluster.py down DIR    (scripts/k8s-down)

One cluster per machine at a time (the kubelet's cgroups are the host's): `up` refuses while
another recorded in /run/autogit-k8s.json is alive. Needs root. Flags and traps:
shared/research/kubernetes.md.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from k8s.images import PAUSE_IMAGE, busybox_archive, pause_archive  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MARKER = Path("/run/autogit-k8s.json")
BRIDGE = "autogitk8s0"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
API_SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service's ClusterIP (the range's first address)
POD_GATEWAY = "10.244.0.1"  # the bridge's address: the host as pods see it
# kube-proxy is not run: this one rule is what it would do for the `kubernetes` Service, so a pod's
# in-cluster config (KUBERNETES_SERVICE_HOST=10.96.0.1:443) reaches the API server. KUBE- prefix:
# down() removes it with the kubelet's chains.
API_SERVICE_CHAIN = "KUBE-AUTOGIT-APISERVER"
NODE_NAME = "localhost"
HOST_PATHS = (Path("/var/lib/kubelet"), Path("/var/log/pods"), Path("/var/log/containers"))
CGROUP_ROOT = Path("/sys/fs/cgroup")


class ClusterError(RuntimeError):
    pass


def build_binaries() -> Path:
    """scripts/k8s-build: the cached binaries' folder (builds them the first time, ~20 min)."""
    out = subprocess.run([str(REPO / "scripts/k8s-build")], capture_output=True, text=True)
    if out.returncode != 0:
        raise ClusterError(f"scripts/k8s-build failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str | Path, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("text", True)
    out = subprocess.run([str(a) for a in args], capture_output=True, **kw)
    if check and out.returncode != 0:
        stderr = out.stderr if isinstance(out.stderr, str) else out.stderr.decode(errors="replace")
        raise ClusterError(f"{' '.join(map(str, args))}: exit {out.returncode}: {stderr.strip()[-2000:]}")
    return out


@dataclass
class State:
    """What `down` needs, kept in DIR/cluster.json (written as soon as anything is started)."""

    dir: str
    bin: str
    api_port: int
    pids: dict[str, int] = field(default_factory=dict)
    netns_before: list[str] = field(default_factory=list)
    chains_before: dict[str, list[str]] = field(default_factory=dict)
    host_paths_before: list[str] = field(default_factory=list)
    etcd_port: int = 0

    def save(self) -> None:
        Path(self.dir, "cluster.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> State:
        return cls(**json.loads((folder / "cluster.json").read_text()))


class Cluster:
    """Handles on a running cluster: kubectl, helm and ctr bound to it."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder.resolve()
        self.state = State.load(self.dir)
        self.bin = Path(self.state.bin) / "bin"
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.api_url = f"https://127.0.0.1:{self.state.api_port}"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run(self.bin / "kubectl", "--kubeconfig", self.kubeconfig, *args, input=input, check=check, timeout=timeout)

    def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """A Secret sent on kubectl's stdin: `--from-literal` would put its value in argv, which every user sees."""
        self.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "stringData": data})

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))

    def helm(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"HELM_CACHE_HOME": str(self.dir / "helm/cache"), "HELM_CONFIG_HOME": str(self.dir / "helm/config"),
                            "HELM_DATA_HOME": str(self.dir / "helm/data")}  # fmt: skip
        return _run(self.bin / "helm", "--kubeconfig", self.kubeconfig, *args, check=check, timeout=timeout, env=env)

    def import_image(self, archive: bytes, *, all_platforms: bool = False) -> None:
        """Load a `docker save` archive into the cluster's containerd (namespace k8s.io)."""
        extra = ["--all-platforms"] if all_platforms else []
        _run("ctr", "--address", self.dir / "containerd.sock", "-n", "k8s.io", "images", "import", *extra, "-", input=archive, text=False)

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision (what kube-apiserver does every 5 minutes), so that
        a watch from an older resourceVersion of an uncached resource (nodes: see the apiserver's
        --watch-cache-sizes) gets 410 Gone. Returns the revision."""
        url = f"http://127.0.0.1:{self.state.etcd_port}/v3/kv"

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            req = urllib.request.Request(f"{url}/{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return cast(dict[str, Any], json.loads(resp.read()))

        revision = int(post("range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
        post("compaction", {"revision": str(revision), "physical": True})
        return revision

    def images(self) -> list[str]:
        out = _run("ctr", "--address", self.dir / "containerd.sock", "-n", "k8s.io", "images", "ls", "-q")
        return out.stdout.split()


# --- bring-up --------------------------------------------------------------------------------


def _openssl_cert(pki: Path, name: str, subject: str, *, san: str | None = None, client: bool = False) -> None:
    key, csr, crt, ext = (pki / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    _run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", csr, "-subj", subject)  # fmt: skip
    lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={'clientAuth' if client else 'serverAuth,clientAuth'}"]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _run("openssl", "x509", "-req", "-in", csr, "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key", "-CAcreateserial",
         "-days", "7", "-out", crt, "-extfile", ext)  # fmt: skip


def _pki(pki: Path) -> None:
    pki.mkdir(parents=True)
    _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", pki / "ca.key", "-out", pki / "ca.crt", "-days", "7", "-subj", "/CN=autogit-test-k8s-ca")  # fmt: skip
    san = f"IP:127.0.0.1,IP:{API_SERVICE_IP},IP:{POD_GATEWAY},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    _openssl_cert(pki, "apiserver", "/CN=kube-apiserver", san=san)
    _openssl_cert(pki, "kubelet", "/CN=localhost", san="IP:127.0.0.1,DNS:localhost")
    _openssl_cert(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", client=True)
    _run("openssl", "genrsa", "-out", pki / "sa.key", "2048")
    _run("openssl", "rsa", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")


def _kubeconfig(path: Path, api_url: str, ca: Path, token: str, user: str) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "autogit-test",
        "clusters": [{"name": "autogit-test", "cluster": {"server": api_url, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "autogit-test", "context": {"cluster": "autogit-test", "user": user}}],
    }, indent=1))  # fmt: skip
    path.chmod(0o600)


def _iptables_chains() -> dict[str, list[str]]:
    chains: dict[str, list[str]] = {}
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            out = _run(f"{tool}-save", "-t", table, check=False)
            chains[f"{tool}/{table}"] = sorted(line[1:].split()[0] for line in out.stdout.splitlines() if line.startswith(":"))
    return chains


def _netns() -> list[str]:
    folder = Path("/var/run/netns")
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _start(state: State, name: str, args: list[str | Path], env: dict[str, str] | None = None) -> None:
    log = open(Path(state.dir, "logs", f"{name}.log"), "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=(os.environ | env) if env else None)  # fmt: skip
    log.close()
    state.pids[name] = proc.pid
    state.save()


def _wait(what: str, check: Any, timeout: float, state: State, log: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        for name, pid in state.pids.items():
            if not _alive(pid):
                raise ClusterError(f"{name} exited while waiting for {what}: see {state.dir}/logs/{name}.log\n{_tail(state, name)}")
        time.sleep(0.2)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{_tail(state, log)}" if log else ""))


def _tail(state: State, name: str) -> str:
    path = Path(state.dir, "logs", f"{name}.log")
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def up(folder: Path, binaries: Path | None = None) -> Cluster:
    """Bring a fresh cluster up in `folder` (created; must not exist or be empty)."""
    if os.geteuid() != 0:
        raise ClusterError("the test cluster needs root (a kubelet, containerd, a bridge)")
    if MARKER.exists():
        other = json.loads(MARKER.read_text())
        if _alive(other.get("apiserver", 0)) or _alive(other.get("kubelet", 0)):
            raise ClusterError(f"a test cluster is already running in {other['dir']} (scripts/k8s-down {other['dir']})")
    binaries = binaries or build_binaries()
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ClusterError(f"{folder} is not empty")
    for sub in ("logs", "etcd", "kubelet", "containerd/root", "containerd/state", "cni/net.d", "cni/ipam", "pods-logs", "volume-plugins"):
        (folder / sub).mkdir(parents=True)
    state = State(dir=str(folder), bin=str(binaries), api_port=_free_port(), netns_before=_netns(), chains_before=_iptables_chains(),
                  host_paths_before=[str(p) for p in HOST_PATHS if p.exists()])  # fmt: skip
    state.save()
    MARKER.write_text(json.dumps({"dir": str(folder)}))
    try:
        _bring_up(state, binaries)
    except BaseException:
        down(folder)
        raise
    return Cluster(folder)


def _bring_up(state: State, b: Path) -> None:
    d = Path(state.dir)
    pki = d / "pki"
    _pki(pki)
    tokens = {name: secrets.token_hex(16) for name in ("admin", "scheduler", "controller-manager", "kubelet")}
    (d / "tokens.csv").write_text(
        f'{tokens["admin"]},autogit-test-admin,1,"system:masters"\n'
        f'{tokens["scheduler"]},system:kube-scheduler,2\n'
        f'{tokens["controller-manager"]},system:kube-controller-manager,3\n'
        f'{tokens["kubelet"]},system:node:{NODE_NAME},4,"system:nodes"\n'
    )
    (d / "tokens.csv").chmod(0o600)
    api_url = f"https://127.0.0.1:{state.api_port}"
    for name, user in (("admin", "autogit-test-admin"), ("scheduler", "system:kube-scheduler"),
                       ("controller-manager", "system:kube-controller-manager"), ("kubelet", f"system:node:{NODE_NAME}")):  # fmt: skip
        _kubeconfig(d / f"{name}.kubeconfig", api_url, pki / "ca.crt", tokens[name], user)

    etcd_port, etcd_peer = _free_port(), _free_port()
    state.etcd_port = etcd_port
    state.save()
    _start(state, "etcd", [b / "bin/etcd", "--name", "default", "--data-dir", d / "etcd",
        "--listen-client-urls", f"http://127.0.0.1:{etcd_port}", "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
        "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}", "--unsafe-no-fsync", "--log-level", "warn"])  # fmt: skip

    # containerd of its own, never the one dockerd uses.
    (d / "containerd/config.toml").write_text(f'''version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
''')
    (d / "cni/net.d/10-autogit.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "autogit-test",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(d / "cni/ipam"), "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
        ],
    }))  # fmt: skip
    _start(state, "containerd", ["containerd", "--config", d / "containerd/config.toml"])

    api_ca_args: list[str | Path] = ["--client-ca-file", pki / "ca.crt", "--tls-cert-file", pki / "apiserver.crt", "--tls-private-key-file", pki / "apiserver.key"]
    _start(state, "kube-apiserver", [b / "bin/kube-apiserver", "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
        # every address, so pods reach it on the bridge's (POD_GATEWAY) through _route_api_service
        "--bind-address", "0.0.0.0", "--advertise-address", "127.0.0.1", "--secure-port", str(state.api_port),
        "--endpoint-reconciler-type", "none", "--cert-dir", pki, *api_ca_args,
        "--token-auth-file", d / "tokens.csv", "--authorization-mode", "Node,RBAC",
        "--enable-admission-plugins", "NodeRestriction",
        "--service-account-key-file", pki / "sa.pub", "--service-account-signing-key-file", pki / "sa.key",
        "--service-account-issuer", "https://kubernetes.default.svc", "--service-cluster-ip-range", SERVICE_CIDR,
        "--kubelet-preferred-address-types", "Hostname,InternalIP",
        "--kubelet-client-certificate", pki / "apiserver-kubelet-client.crt", "--kubelet-client-key", pki / "apiserver-kubelet-client.key",
        # nodes are watched from etcd itself (no watch cache): compacting etcd (Cluster.compact_etcd)
        # then expires an old resourceVersion at once, as a long-running cluster's cache window
        # does after hours; on a fresh one the cache still holds every event since revision 1
        "--watch-cache-sizes", "nodes#0",
        "--allow-privileged=true", "--profiling=false", "--v", "1"])  # fmt: skip
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))

    def ready() -> bool:
        req = urllib.request.Request(f"{api_url}/readyz", headers={"Authorization": f"Bearer {tokens['admin']}"})
        with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)

    _wait("kube-apiserver /readyz", ready, 120, state, "kube-apiserver")
    _route_api_service(state.api_port)
    _start(state, "kube-scheduler", [b / "bin/kube-scheduler", "--kubeconfig", d / "scheduler.kubeconfig",
        "--authentication-kubeconfig", d / "scheduler.kubeconfig", "--authorization-kubeconfig", d / "scheduler.kubeconfig",
        "--bind-address", "127.0.0.1", "--secure-port", str(_free_port()), "--leader-elect=false", "--v", "1"])  # fmt: skip
    _start(state, "kube-controller-manager", [b / "bin/kube-controller-manager", "--kubeconfig", d / "controller-manager.kubeconfig",
        "--authentication-kubeconfig", d / "controller-manager.kubeconfig", "--authorization-kubeconfig", d / "controller-manager.kubeconfig",
        "--bind-address", "127.0.0.1", "--secure-port", str(_free_port()), "--leader-elect=false",
        "--use-service-account-credentials", "--service-account-private-key-file", pki / "sa.key", "--root-ca-file", pki / "ca.crt",
        "--cluster-signing-cert-file", pki / "ca.crt", "--cluster-signing-key-file", pki / "ca.key",
        "--v", "1"])  # fmt: skip

    cluster_obj = Cluster(d)
    _wait("containerd", lambda: _run("ctr", "--address", d / "containerd.sock", "version").returncode == 0, 30, state, "containerd")
    cluster_obj.import_image(pause_archive(b / "bin/pause"))
    cluster_obj.import_image(busybox_archive())

    kubelet_port, healthz_port = _free_port(), _free_port()
    (d / "kubelet/config.yaml").write_text(json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": kubelet_port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True}, "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{d}/containerd.sock",
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False, "makeIPTablesUtilChains": False,
        "podCIDR": POD_CIDR, "podLogsDir": str(d / "pods-logs"), "volumePluginDir": str(d / "volume-plugins"),
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False, "registerNode": True, "enableServer": True,
        "clusterDomain": "cluster.local", "resolvConf": "/etc/resolv.conf",
        "nodeStatusUpdateFrequency": "4s", "syncFrequency": "5s",
    }, indent=1))  # fmt: skip
    _start(state, "kubelet", [b / "bin/kubelet", "--config", d / "kubelet/config.yaml", "--kubeconfig", d / "kubelet.kubeconfig",
        "--root-dir", d / "kubelet", "--cert-dir", d / "kubelet/pki", "--hostname-override", NODE_NAME, "--v", "1"])  # fmt: skip
    MARKER.write_text(json.dumps({"dir": str(d), "apiserver": state.pids["kube-apiserver"], "kubelet": state.pids["kubelet"]}))

    kwok_config = d / "kwok.yaml"
    stages = sorted((b / "stages").glob("*.yaml"))
    kwok_config.write_text("\n---\n".join(p.read_text() for p in stages))
    _start(state, "kwok", [b / "bin/kwok", "--kubeconfig", d / "admin.kubeconfig", "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake", "--manage-nodes-with-label-selector=",
        "--cidr", "10.245.0.1/16", "--node-ip", "10.245.0.1", "--node-port", str(_free_port()),
        "--server-address", f"127.0.0.1:{_free_port()}", "--config", kwok_config])  # fmt: skip

    def node_ready() -> bool:
        node = cluster_obj.kubectl_json("get", "node", NODE_NAME)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

    _wait(f"node {NODE_NAME} Ready", node_ready, 120, state, "kubelet")
    _wait("the default ServiceAccount", lambda: cluster_obj.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
          60, state, "kube-controller-manager")  # fmt: skip


def _route_api_service(api_port: int) -> None:
    """Pods' traffic to the `kubernetes` Service goes to the API server on the bridge's address."""
    _run("iptables", "-t", "nat", "-N", API_SERVICE_CHAIN)
    _run("iptables", "-t", "nat", "-A", API_SERVICE_CHAIN, "-d", f"{API_SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
         "-j", "DNAT", "--to-destination", f"{POD_GATEWAY}:{api_port}")  # fmt: skip
    _run("iptables", "-t", "nat", "-I", "PREROUTING", "-s", POD_CIDR, "-j", API_SERVICE_CHAIN)


# --- teardown --------------------------------------------------------------------------------


def _stop(pid: int, grace: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _shims(folder: Path) -> list[int]:
    """The containerd shims serving this cluster's socket (they outlive containerd)."""
    sock = f"{folder}/containerd.sock"
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in argv:
                    pids.append(int(proc.name))
    return pids


def _cgroup_tasks(group: Path) -> list[int]:
    pids = []
    for procs in group.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def _remove_cgroups() -> None:
    for controller in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        group = controller / "kubepods"
        if not group.is_dir() or controller.is_symlink():
            continue
        for pid in _cgroup_tasks(group):  # containers the kubelet started and nothing else
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for sub in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [group]:
            for _ in range(20):
                try:
                    sub.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def _unmount_under(folder: Path) -> None:
    mounts = [line.split()[1].replace("\\040", " ") for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m == str(folder) or m.startswith(f"{folder}/")), key=len, reverse=True):
        _run("umount", "-l", mount, check=False)


def down(folder: Path) -> list[str]:
    """Stop the cluster in `folder` and undo its host changes; returns what it could not undo."""
    folder = folder.resolve()
    problems: list[str] = []
    try:
        state = State.load(folder)
    except FileNotFoundError:
        return [f"{folder}/cluster.json: no cluster recorded there"]
    for name in ("kwok", "kubelet", "kube-controller-manager", "kube-scheduler", "kube-apiserver", "etcd"):
        if name in state.pids:
            _stop(state.pids[name])
    for pid in _shims(folder):
        _stop(pid, grace=2)
    _remove_cgroups()
    if "containerd" in state.pids:
        _stop(state.pids["containerd"])
    for pid in _shims(folder):
        _stop(pid, grace=1)
    for name in sorted(set(_netns()) - set(state.netns_before)):
        if name.startswith("cni-"):
            _run("umount", "-l", f"/var/run/netns/{name}", check=False)
            with contextlib.suppress(OSError):
                os.unlink(f"/var/run/netns/{name}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _run("ip", "link", "delete", BRIDGE, check=False)
    chains_now = _iptables_chains()
    for key, chains in chains_now.items():
        tool, table = key.split("/")
        for chain in sorted(set(chains) - set(state.chains_before.get(key, []))):
            if chain.startswith("KUBE-"):
                _remove_chain(tool, table, chain)
    for path in HOST_PATHS:
        if str(path) not in state.host_paths_before and path.exists():
            _unmount_under(path)
            _run("rm", "-rf", "--one-file-system", path, check=False)
    _unmount_under(folder)
    _run("rm", "-rf", "--one-file-system", folder, check=False)
    if folder.exists():
        problems.append(f"{folder} could not be removed")
    if MARKER.exists() and json.loads(MARKER.read_text()).get("dir") == str(folder):
        MARKER.unlink()
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        problems.append(f"bridge {BRIDGE} still exists")
    if any((c / "kubepods").exists() for c in CGROUP_ROOT.iterdir() if not c.is_symlink()):
        problems.append("kubepods cgroups still exist")
    problems += [f"{p} still exists" for p in HOST_PATHS if str(p) not in state.host_paths_before and p.exists()]
    for key, chains in _iptables_chains().items():
        problems += [f"{key} chain {c} still exists" for c in set(chains) - set(state.chains_before.get(key, [])) if c.startswith("KUBE-")]
    problems += [f"netns {n} still exists" for n in set(_netns()) - set(state.netns_before) if n.startswith("cni-")]
    problems += [f"{name} (pid {pid}) still runs" for name, pid in state.pids.items() if _alive(pid)]
    problems += [f"containerd shim {pid} still runs" for pid in _shims(folder)]
    return problems


def _remove_chain(tool: str, table: str, chain: str) -> None:
    """Delete the rules jumping to `chain`, then the chain (the kubelet's canaries and hints)."""
    rules = _run(f"{tool}-save", "-t", table, check=False).stdout.splitlines()
    for rule in rules:
        if rule.startswith("-A ") and f"-j {chain}" in rule:
            _run(tool, "-t", table, "-D", *rule[3:].split(), check=False)
    _run(tool, "-t", table, "-F", chain, check=False)
    _run(tool, "-t", table, "-X", chain, check=False)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("up", "down"):
        print("usage: cluster.py up|down DIR", file=sys.stderr)
        return 2
    folder = Path(argv[2])
    if argv[1] == "up":
        try:
            cluster = up(folder)
        except ClusterError as exc:
            print(f"k8s-up: {exc}", file=sys.stderr)
            return 1
        print(cluster.kubeconfig)
        return 0
    problems = down(folder)
    for problem in problems:
        print(f"k8s-down: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
