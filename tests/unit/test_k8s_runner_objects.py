"""One runner's Kubernetes objects (agent/runtime/kubernetes.py): its config.toml, the only
place its token is written, in a Secret; its manager pod valid Kubernetes 1.37 (strict), never
privileged, no host path, the token in neither its spec nor its environment."""

from __future__ import annotations

import json

import kubernetes_validate
import tomli_w

from autogit.agent.runtime.kubernetes import (
    CONFIG_KEY,
    POD_SPEC_FEATURE_FLAG,
    kubernetes_section,
    manager_pod,
    placement,
    runner_secret,
)

TOKEN = "glrt-RUNNER-TOKEN-0123456789"


def config_toml() -> str:
    section = kubernetes_section(placement(frozenset({"arm64"}), "arm64", None), namespace="ci", service_account="autogit-runner",
                                 image="debian:bookworm-slim", labels={"autogit.io/runner": "r1"})  # fmt: skip
    runner = {"name": "r1", "url": "https://gitlab.example.com", "token": TOKEN, "executor": "kubernetes",
              "feature_flags": {POD_SPEC_FEATURE_FLAG: True}, "kubernetes": section}  # fmt: skip
    return tomli_w.dumps({"concurrent": 1, "runners": [runner]})


def test_the_token_is_only_in_the_secret() -> None:
    secret = runner_secret("r1", "ci", config_toml(), owner="agent-a")
    pod = manager_pod("r1", "ci", image="gitlab/gitlab-runner:alpine-v17.11.3", service_account="autogit-runner", owner="agent-a",
                      annotations={"autogit.io/gitlab-id": "42", "autogit.io/tags": "arm64"}, grace_seconds=3600)  # fmt: skip
    assert TOKEN in secret["stringData"][CONFIG_KEY]
    assert TOKEN not in json.dumps(pod)
    spec = pod["spec"]
    assert spec["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]
    for container in spec["initContainers"] + spec["containers"]:
        assert "env" not in container and "envFrom" not in container
        assert container["securityContext"]["privileged"] is False and container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "hostPath" not in json.dumps(pod) and "hostNetwork" not in json.dumps(pod)
    assert spec["terminationGracePeriodSeconds"] == 3600


def test_both_are_valid_kubernetes() -> None:
    kubernetes_validate.validate(runner_secret("r1", "ci", config_toml(), owner="a"), "1.37.0", strict=True)
    pod = manager_pod("r1", "ci", image="i", service_account="sa", owner="a", annotations={}, grace_seconds=60)
    kubernetes_validate.validate(pod, "1.37.0", strict=True)


def test_job_pods_get_no_host_path_and_no_privilege() -> None:
    """What a job can reach on Kubernetes (docs/security/README.md): its pod is made from this
    [runners.kubernetes] table, which mounts nothing of the node (no host_path volumes, so no
    Docker or containerd socket) and is never privileged."""
    section = kubernetes_section(placement(frozenset({"arm64"}), "arm64", None), namespace="ci", service_account="autogit-runner",
                                 image="debian:bookworm-slim", labels={})  # fmt: skip
    assert "volumes" not in section and "host_path" not in json.dumps(section)
    assert section["privileged"] is False and section["allow_privilege_escalation"] is False
