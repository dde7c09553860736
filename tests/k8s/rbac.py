"""A ServiceAccount holding exactly some RBAC rules, and a kubeconfig for it: the tests that
check the agent needs no more than it declares (agent/runtime/kubernetes.py AGENT_*_RULES)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from k8s.cluster import Cluster

from autogit.agent.runtime.kubernetes import Rule


def _rules(rules: Iterable[Rule]) -> list[dict[str, list[str]]]:
    return [{"apiGroups": [r.api_group], "resources": list(r.resources), "verbs": list(r.verbs)} for r in rules]


@contextmanager
def service_account_kubeconfig(cluster: Cluster, ns: str, folder: Path, namespaced: Iterable[Rule], cluster_wide: Iterable[Rule] = ()) -> Iterator[Path]:
    """A ServiceAccount `agent` in `ns` bound to a Role of `namespaced` rules and, if any, a
    ClusterRole of `cluster_wide` ones (named after the namespace, deleted afterwards); yields a
    kubeconfig holding its token."""
    wide = list(cluster_wide)
    name = f"{ns}-agent"
    objects: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agent", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "agent", "namespace": ns}, "rules": _rules(namespaced)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "agent", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent"},
         "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": ns}]},
    ]  # fmt: skip
    if wide:
        objects += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": _rules(wide)},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": ns}]},
        ]  # fmt: skip
    cluster.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    try:
        token = cluster.kubectl("create", "token", "agent", "-n", ns, "--duration", "30m").stdout.strip()
        kubeconfig = json.loads(cluster.kubeconfig.read_text())
        kubeconfig["users"] = [{"name": kubeconfig["users"][0]["name"], "user": {"token": token}}]
        path = folder / f"{ns}-agent.kubeconfig"
        path.write_text(json.dumps(kubeconfig))
        yield path
    finally:
        if wide:
            cluster.kubectl("delete", "clusterrolebinding,clusterrole", name, check=False)
