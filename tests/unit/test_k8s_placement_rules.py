"""A job's tags as its pod's scheduling constraints (agent/runtime/kubernetes.py `placement`):
the constraints admit exactly the nodes whose GPU profile carries the tags. The node-affinity
semantics are evaluated here as Kubernetes defines them (k8s.io/component-helpers
scheduling/corev1/nodeaffinity: terms ORed, expressions ANDed, Gt/Lt on integer label values,
a missing label fails); tests/k8s/test_k8s_placement.py holds the real scheduler to the same."""

from __future__ import annotations

import tomllib

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from k8s.nodes import amd_node, nvidia_node

from autogit.agent.inventory.kubernetes import Node, node_hardware
from autogit.agent.runtime.kubernetes import placement
from autogit.agent.tags import CC_FLOORS, VRAM_FLOORS_GIB


def _matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    value = labels.get(expr["key"])
    op = expr["operator"]
    if op == "Exists":
        assert "values" not in expr  # the API server refuses values with Exists
        return value is not None
    if op == "In":
        return value in expr["values"]
    # Gt/Lt: one value, an integer that is also a valid label value (so never negative)
    assert len(expr["values"]) == 1 and expr["values"][0].isdigit(), expr
    if value is None or not value.lstrip("-").isdigit():
        return False
    return int(value) > int(expr["values"][0]) if op == "Gt" else int(value) < int(expr["values"][0])


def admits(spec: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in spec.get("nodeSelector", {}).items()):
        return False
    terms = spec.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms")
    return terms is None or any(all(_matches(e, labels) for e in t["matchExpressions"]) for t in terms)


def ready(raw: dict[str, Any]) -> Node:
    raw["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return Node.model_validate(raw)


@given(memory_mib=st.integers(1024, 300 * 1024), floor=st.sampled_from(VRAM_FLOORS_GIB))
def test_the_memory_floor_admits_exactly_the_gpus_that_carry_its_tag(memory_mib: int, floor: int) -> None:
    raw = nvidia_node("n", memory_mib=memory_mib)
    [gpu] = node_hardware([ready(raw)], [])[0].gpus
    tags = frozenset({"gpu", f"vram-ge-{floor}g"})
    spec = placement(tags, "amd64", gpu).pod_spec()
    assert admits(spec, raw["metadata"]["labels"]) == (tags <= gpu.tags)


@given(major=st.integers(3, 13), minor=st.integers(0, 9), floor=st.sampled_from(CC_FLOORS))
def test_the_compute_capability_floor_admits_exactly_the_gpus_that_carry_its_tag(major: int, minor: int, floor: tuple[int, int]) -> None:
    raw = nvidia_node("n", compute=(major, minor))
    [gpu] = node_hardware([ready(raw)], [])[0].gpus
    tags = frozenset({"gpu", f"cc-ge-{floor[0]}.{floor[1]}"})
    spec = placement(tags, None, gpu).pod_spec()
    assert admits(spec, raw["metadata"]["labels"]) == (tags <= gpu.tags)


def test_a_gpu_is_held_only_through_its_extended_resource() -> None:
    raw = nvidia_node("a100", product="NVIDIA-A100-SXM4-80GB", memory_mib=81920, compute=(8, 0), mig={"1g.10gb": (7, 9728)})
    gpus = {g.resource: g for g in node_hardware([ready(raw)], [])[0].gpus}
    slice_ = placement(frozenset({"mig-1g.10gb"}), "amd64", gpus["nvidia.com/mig-1g.10gb"])
    assert slice_.limits == {"nvidia.com/mig-1g.10gb": "1"}
    assert slice_.node_selector == {"kubernetes.io/arch": "amd64"} and slice_.terms == ()
    amd = node_hardware([ready(amd_node("mi"))], [])[0].gpus[0]
    assert placement(frozenset({"gpu", "rocm"}), "amd64", amd).limits == {"amd.com/gpu": "1"}
    text = repr(slice_.pod_spec([{"key": "k", "operator": "Exists"}]))
    assert "hostPath" not in text and "/dev/" not in text and "privileged" not in text


def test_a_product_tag_is_held_by_the_products_that_carry_it() -> None:
    raw = nvidia_node("h100")
    [gpu] = node_hardware([ready(raw)], [])[0].gpus
    spec = placement(frozenset({"gpu", "h100", "vram-ge-40g"}), "amd64", gpu, products=frozenset({"NVIDIA-H100-80GB-HBM3"})).pod_spec()
    assert admits(spec, raw["metadata"]["labels"])
    other = nvidia_node("l40s", product="NVIDIA-L40S", memory_mib=46068)
    assert not admits(spec, other["metadata"]["labels"])  # 45 GiB passes the floor, not the product


def test_no_gpu_means_only_the_architecture() -> None:
    assert placement(frozenset({"arm64"}), "arm64", None).pod_spec() == {"nodeSelector": {"kubernetes.io/arch": "arm64"}}
    assert placement(frozenset(), None, None).pod_spec() == {}


# gitlab-runner's KubernetesConfig keys (common/config.go, `toml:` tags) that the agent writes,
# and the nested NodeSelectorRequirement / KubernetesPodSpec keys: a key outside these would be
# ignored by the real runner (the double refuses unknown keys, as ADR-007 asks).
def _runner_kubernetes_keys() -> set[str]:
    """gitlab-runner's KubernetesConfig keys (common/config.go), as the gitlab-runner double's table has them."""
    from unit.test_runner_config import runner_double

    return set(runner_double.CONFIG_TYPES["runners.kubernetes"])


def test_the_runner_section_uses_only_gitlab_runner_keys_and_patches_the_gpu_limit_in() -> None:
    import json

    import tomli_w

    from autogit.agent.runtime.kubernetes import kubernetes_section

    raw = nvidia_node("h100")
    [gpu] = node_hardware([ready(raw)], [])[0].gpus
    where = placement(frozenset({"gpu", "vram-ge-40g", "cc-ge-9.0"}), "amd64", gpu)
    section = kubernetes_section(where, namespace="ci", service_account="autogit-runner", image="debian:bookworm-slim",
                                 labels={"autogit.io/runner": "r1"}, tolerations={"nvidia.com/gpu": "NoSchedule"}, cpu="1", memory="2Gi")  # fmt: skip
    assert set(section) <= _runner_kubernetes_keys()
    assert section["privileged"] is False and section["allow_privilege_escalation"] is False
    terms = section["affinity"]["node_affinity"]["required_during_scheduling_ignored_during_execution"]["node_selector_terms"]
    assert len(terms) == 2 and all({"key", "operator"} <= set(e) <= {"key", "operator", "values"} for t in terms for e in t["match_expressions"])
    [patch] = section["pod_spec"]
    assert set(patch) == {"name", "patch_type", "patch"} and patch["patch_type"] == "strategic"
    assert json.loads(patch["patch"]) == {"containers": [{"name": "build", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    text = tomli_w.dumps({"runners": [{"name": "r1", "executor": "kubernetes", "kubernetes": section}]})
    assert "[runners.kubernetes]" in text and "hostPath" not in text and "/dev/" not in text
    from unit.test_runner_config import runner_double

    runner_double.validate(tomllib.loads(text))  # every key and type as gitlab-runner decodes them
    plain = kubernetes_section(placement(frozenset({"arm64"}), "arm64", None), namespace="ci", service_account="sa", image="i", labels={})
    assert "pod_spec" not in plain and "affinity" not in plain and plain["node_selector"] == {"kubernetes.io/arch": "arm64"}
