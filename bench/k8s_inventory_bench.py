"""Benchmark: reading the cluster's hardware (agent/inventory/kubernetes.py) on a real API server
with 10 and with 1,000 kwok nodes of mixed hardware (tests/k8s/nodes.py), beside a same-run
baseline that makes the same two API calls (list nodes, list pods) and only parses the JSON.

One pass = GET /api/v1/nodes + GET /api/v1/pods (2 API calls, whatever the node count), the
wire models' validation, and node_hardware() (tags, GPU profiles, capacity). Printed: median and
p90 per pass for both, the difference (what the inventory itself costs), API calls per pass.

    .venv/bin/python bench/k8s_inventory_bench.py [--repeat 15] [--dir /tmp/autogit-k8s]

With --dir, the cluster scripts/k8s-up started there is used (its fake nodes are removed after);
without, a fresh one is brought up and torn down. Needs root and scripts/k8s-build's binaries.
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from k8s.cluster import Cluster, down, up  # noqa: E402
from k8s.nodes import TEST_LABEL, many_nodes  # noqa: E402

from autogit.agent.inventory.kubernetes import Node, Pod, node_hardware  # noqa: E402


class Api:
    """The two list calls, counted, with the admin token (what the agent's watch would start from)."""

    def __init__(self, cluster: Cluster) -> None:
        config = json.loads(cluster.kubeconfig.read_text())
        self.base = config["clusters"][0]["cluster"]["server"]
        self.token = config["users"][0]["user"]["token"]
        self.ctx = ssl.create_default_context(cafile=config["clusters"][0]["cluster"]["certificate-authority"])
        self.calls = 0

    def get(self, path: str) -> Any:
        self.calls += 1
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=60) as resp:
            return json.loads(resp.read())


def baseline(api: Api) -> int:
    nodes, pods = api.get("/api/v1/nodes"), api.get("/api/v1/pods")
    return len(nodes["items"]) + len(pods["items"])


def inventory(api: Api) -> int:
    nodes = [Node.model_validate(n) for n in api.get("/api/v1/nodes")["items"]]
    pods = [Pod.model_validate(p) for p in api.get("/api/v1/pods")["items"]]
    return len(node_hardware(nodes, pods))


def measure(fn: Callable[[Api], int], api: Api, repeat: int) -> tuple[float, float, float]:
    fn(api)  # warm the connection path and caches
    api.calls = 0
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(api)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1], api.calls / repeat


def run(cluster: Cluster, repeat: int) -> None:
    api = Api(cluster)
    print(f"{'nodes':>6} {'what':<34} {'median ms':>10} {'p90 ms':>8} {'API calls/pass':>15}")
    created = 0
    for count in (10, 1000):
        nodes = many_nodes(count - created, prefix=f"bench-{count}")
        for start in range(0, len(nodes), 250):
            cluster.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes[start:start + 250]}), timeout=300)
        created = count
        total = len(cluster.kubectl_json("get", "nodes", "-l", f"{TEST_LABEL}=fake")["items"])
        for name, fn in (("baseline: list nodes+pods, parse", baseline), ("inventory: + models + node_hardware", inventory)):
            med, p90, calls = measure(fn, api, repeat)
            print(f"{total:>6} {name:<34} {med:>10.1f} {p90:>8.1f} {calls:>15.0f}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--dir", type=Path, help="use the cluster scripts/k8s-up started here")
    args = parser.parse_args()
    if args.dir:
        cluster = Cluster(args.dir)
        try:
            run(cluster, args.repeat)
        finally:
            cluster.kubectl("delete", "nodes", "-l", f"{TEST_LABEL}=fake", "--wait=false", timeout=300)
        return 0
    folder = Path(tempfile.mkdtemp(prefix="autogit-k8s-bench-", dir="/tmp"))
    cluster = up(folder)
    try:
        run(cluster, args.repeat)
    finally:
        problems = down(folder)
    for problem in problems:
        print(f"teardown: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
