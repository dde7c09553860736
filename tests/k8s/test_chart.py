"""The Helm chart charts/autogit: `helm lint`, `helm template` validated offline against the
Kubernetes 1.37 OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors), and
what the chart promises: least-privilege RBAC equal to what the agent declares it uses, the
token only in a Secret (a file, never env), a hardened pod, the agent's own config parser
accepting the rendered agent.yaml, every value documented, the monitoring files read as they are."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from autogit.agent.config import parse_config
from autogit.agent.leader import LEADER_RULES
from autogit.agent.runtime.kubernetes import AGENT_CLUSTER_RULES, AGENT_RULES, RUNNER_RULES, Rule

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/autogit"
TOKEN = "glpat-NEVER-IN-A-SPEC-0123456789"
K8S_VERSION = "1.37.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # prometheus-operator's; no schema offline


def helm(binary: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"HELM_CACHE_HOME": "/tmp/autogit-helm/cache", "HELM_CONFIG_HOME": "/tmp/autogit-helm/config",
           "HELM_DATA_HOME": "/tmp/autogit-helm/data", "PATH": "/usr/bin:/bin"}  # fmt: skip
    out = subprocess.run([str(binary), *args], capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def render(binary: Path, *sets: str, namespace: str = "ci") -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    return [doc for doc in yaml.safe_load_all(helm(binary, *args).stdout) if doc]


FULL = ("gitlab.token=" + TOKEN, "gitlab.webhookSecret=hook-SECRET-42", "gitlab.url=https://gitlab.example.com", "webhook.enabled=true",
        "ingress.enabled=true", "ingress.host=hooks.example.com", "ingress.tls.clusterIssuer=letsencrypt", "ingress.className=traefik",
        "metrics.serviceMonitor.enabled=true", "grafanaDashboard.enabled=true", "prometheusRule.enabled=true",
        "runners.namespace=ci-jobs")  # fmt: skip


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_helm_lint(helm_binary: Path) -> None:
    out = helm(helm_binary, "lint", "--strict", str(CHART), "--set", "gitlab.existingSecret=autogit-gitlab")
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("sets", [("gitlab.existingSecret=autogit-gitlab",), FULL], ids=["minimal", "everything-on"])
def test_every_manifest_is_valid_kubernetes_1_37(helm_binary: Path, sets: tuple[str, ...]) -> None:
    docs = render(helm_binary, *sets)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "Role", "RoleBinding", "ConfigMap", "Service", "NetworkPolicy"} <= kinds
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_caught_by_the_validator() -> None:
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}, "spec": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _rules(role: dict[str, Any]) -> set[Rule]:
    return {Rule(g, tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"] for g in r["apiGroups"]}


def test_rbac_grants_exactly_what_the_agent_and_runner_managers_use(helm_binary: Path) -> None:
    docs = render(helm_binary, *FULL)
    [cluster_role] = by_kind(docs, "ClusterRole")
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "Role")}
    assert _rules(cluster_role) == set(AGENT_CLUSTER_RULES)
    assert _rules(roles["rel-autogit"]) == set(AGENT_RULES)
    assert _rules(roles["rel-autogit-runner"]) == set(RUNNER_RULES)
    leader = roles.pop("rel-autogit-leader")  # the election's Lease, in the agent's own namespace
    assert _rules(leader) == {Rule(*rule) for rule in LEADER_RULES} and leader["metadata"]["namespace"] == "ci"
    assert all(r["metadata"]["namespace"] == "ci-jobs" for r in roles.values())  # namespaced where it can be
    assert "*" not in json.dumps([cluster_role, leader, *roles.values()])
    [binding] = by_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-autogit", "namespace": "ci"}]


def test_the_token_is_only_in_the_secret_and_reaches_the_agent_as_a_file(helm_binary: Path) -> None:
    docs = render(helm_binary, *FULL)
    [secret] = by_kind(docs, "Secret")
    assert set(secret["data"]) == {"gitlab-token", "webhook-secret"}
    others = json.dumps([d for d in docs if d["kind"] != "Secret"])
    assert TOKEN not in others and "hook-SECRET-42" not in others
    [deploy] = by_kind(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    [agent] = pod["containers"]
    # no variable from a Secret: only the downward API's pod name and namespace (the Lease)
    assert "envFrom" not in agent and all(set(e.get("valueFrom", {})) <= {"fieldRef"} for e in agent["env"])
    env = {e["name"]: e["value"] for e in agent["env"] if "value" in e}
    mount = next(m for m in agent["volumeMounts"] if m["name"] == "credentials")
    assert env["CREDENTIALS_DIRECTORY"] == mount["mountPath"] and mount["readOnly"]
    assert next(v for v in pod["volumes"] if v["name"] == "credentials")["secret"]["secretName"] == secret["metadata"]["name"]


def test_an_existing_secret_is_used_and_none_is_created(helm_binary: Path) -> None:
    docs = render(helm_binary, "gitlab.existingSecret=my-gitlab")
    assert not by_kind(docs, "Secret")
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "credentials")["secret"]["secretName"] == "my-gitlab"


def test_without_a_token_the_install_is_refused_with_the_reason(helm_binary: Path) -> None:
    out = helm(helm_binary, "template", "rel", str(CHART), check=False)
    assert out.returncode != 0
    assert "gitlab.existingSecret (a Secret with key gitlab-token) or gitlab.token is required" in out.stderr


def test_the_pod_is_hardened(helm_binary: Path) -> None:
    pod = by_kind(render(helm_binary, *FULL), "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [agent] = pod["containers"]
    ctx = agent["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False and ctx["privileged"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(agent)
    assert not any("hostPath" in v for v in pod["volumes"])  # never a host device or socket


def test_the_rendered_agent_yaml_is_accepted_by_the_agents_own_parser(helm_binary: Path) -> None:
    docs = render(helm_binary, *FULL, "config.scaling.max_runners=3", "config.gitlab.poll_interval=5")
    [cm] = [d for d in by_kind(docs, "ConfigMap") if "agent.yaml" in d["data"]]
    config = parse_config(cm["data"]["agent.yaml"], "chart")
    assert config.scaling.max_runners == 3 and config.gitlab.poll_interval == 5
    assert str(config.gitlab.url) == "https://gitlab.example.com/"
    assert config.api.metrics_listen == "0.0.0.0:9180" and config.webhook.enabled and config.webhook.listen == "0.0.0.0:9181"
    assert str(config.state_file).startswith("/var/lib/autogit/")  # on the writable emptyDir, not the read-only root


def test_the_runners_values_become_the_kubernetes_runtimes_settings(helm_binary: Path) -> None:
    def agent_config(*sets: str) -> Any:
        [cm] = [d for d in by_kind(render(helm_binary, *FULL, *sets), "ConfigMap") if "agent.yaml" in d["data"]]
        return parse_config(cm["data"]["agent.yaml"], "chart")

    config = agent_config("runners.namespace=ci-jobs", "runners.image=local/runner:1", "runners.helperImage=local/helper:1",
                          "runners.jobImage=local/job:1", "runners.jobPullPolicy=never", "runners.imagePullPolicy=Never")  # fmt: skip
    runner = config.runner
    assert runner.runtime == "kubernetes" and runner.kubernetes.kubeconfig is None  # the agent's in-cluster ServiceAccount
    assert (runner.kubernetes.namespace, runner.kubernetes.service_account, runner.kubernetes.image_pull_policy) == ("ci-jobs", "rel-autogit-runner", "Never")
    assert (runner.image, runner.helper_image, runner.job_image, runner.pull_policy) == ("local/runner:1", "local/helper:1", "local/job:1", "never")
    assert config.fleet.enabled is False  # a presence registration would outlive `helm uninstall`
    assert agent_config("config.fleet.enabled=true").fleet.enabled is True
    docker = agent_config("runners.runtime=docker").runner
    assert docker.runtime == "docker" and str(docker.docker.config_dir) == "/var/lib/autogit/runners"


def test_ingress_routes_only_the_webhook_with_cert_manager_tls(helm_binary: Path) -> None:
    [ingress] = by_kind(render(helm_binary, *FULL), "Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["tls"] == [{"hosts": ["hooks.example.com"], "secretName": "rel-autogit-webhook-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert [(p["path"], p["pathType"], p["backend"]["service"]["port"]["name"]) for p in rule["http"]["paths"]] == [("/hooks/gitlab", "Exact", "webhook")]
    out = helm(helm_binary, "template", "rel", str(CHART), "--set", "gitlab.existingSecret=s", "--set", "ingress.enabled=true",
               "--set", "ingress.host=h.example.com", check=False)  # fmt: skip
    assert out.returncode != 0 and "set webhook.enabled too" in out.stderr


def test_the_probes_ask_healthz_on_a_port_no_service_or_policy_opens(helm_binary: Path) -> None:
    """Probes on /metrics failed once anyone filled that port's connection cap (issue 24): they
    ask the agent's /healthz (api.health_listen) on a port of its own instead."""
    docs = render(helm_binary, *FULL)
    [deployment] = by_kind(docs, "Deployment")
    [agent] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "agent"]
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert agent[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    [cm] = [d for d in by_kind(docs, "ConfigMap") if "agent.yaml" in d["data"]]
    config = parse_config(cm["data"]["agent.yaml"], "chart")
    assert config.api.health_listen == f"0.0.0.0:{ports['health']}" and ports["health"] != ports["metrics"]
    service_ports = {p.get("targetPort", p["port"]) for s in by_kind(docs, "Service") for p in s["spec"]["ports"]}
    assert "health" not in service_ports and ports["health"] not in service_ports


def test_network_policy_admits_only_metrics_and_webhook(helm_binary: Path) -> None:
    [policy] = by_kind(render(helm_binary, *FULL, "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring"), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ports == ["metrics", "webhook"]
    assert policy["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    egress_ports = sorted({p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]})
    assert egress_ports == [53, 80, 443, 6443]


def test_the_monitoring_files_are_shipped_exactly(helm_binary: Path) -> None:
    docs = render(helm_binary, *FULL)
    [dashboard] = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {"autogit-dashboard.json": (CHART / "files/autogit-dashboard.json").read_text()}
    assert json.loads(dashboard["data"]["autogit-dashboard.json"])["title"]
    [rule] = by_kind(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == (yaml.safe_load((CHART / "files/autogit-alerts.yaml").read_text())["groups"] or [])
    [monitor] = by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    off = render(helm_binary, "gitlab.existingSecret=s")
    assert not by_kind(off, "PrometheusRule") and not by_kind(off, "ServiceMonitor") and len(by_kind(off, "ConfigMap")) == 1


def _leaves(values: dict[str, Any], schema: dict[str, Any], path: str = "") -> list[str]:
    undocumented = []
    for key, value in values.items():
        sub = schema.get("properties", {}).get(key)
        if sub is None or not sub.get("description"):
            undocumented.append(f"{path}{key}")
        elif isinstance(value, dict) and "properties" in sub:
            undocumented += _leaves(value, sub, f"{path}{key}.")
    return undocumented


def test_every_value_is_documented_and_checked_by_the_schema(helm_binary: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _leaves(values, schema) == []
    typo = helm(helm_binary, "template", "rel", str(CHART), "--set", "gitlab.existingSecret=s", "--set", "metrics.prot=1", check=False)
    assert typo.returncode != 0 and "prot" in typo.stderr
    wrong = helm(helm_binary, "template", "rel", str(CHART), "--set", "gitlab.existingSecret=s", "--set", "image.pullPolicy=Sometimes", check=False)
    assert wrong.returncode != 0 and "pullPolicy" in wrong.stderr
