"""Reads what the API server says about Dynamic Resource Allocation, for the Kubernetes runtime
(ADR-015): whether resource.k8s.io/v1 is served, which DeviceClasses exist, and the NVIDIA
driver's devices in the ResourceSlices. Thin: what it reads is decided on by agent/dra.py
(`gpu_path`, `claim_for`).

Unknown is never absent: only a 404 for the API group version means "not served"; any other
failure (a refusal, a timeout, an answer that cannot be read) leaves the answer unknown, with
one line saying why, and the runtime then starts no GPU runner rather than guess a path.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio.client import ApiClient, ResourceV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from ..dra import DRIVER, DraDevice, DraSupport, devices_from_slices
from .k8s_errors import translate

__all__ = ["read_devices", "read_support"]

# RBAC: `list` of deviceclasses and resourceslices, cluster-wide (kubernetes.py
# AGENT_CLUSTER_RULES). The API group's discovery document needs none: every authenticated
# user may read it (the system:discovery ClusterRole).


async def read_support(client: ApiClient, timeout: float) -> DraSupport:
    """resource.k8s.io/v1 served? Which DeviceClasses? (None where it could not be read.)"""
    api = ResourceV1Api(client)
    try:
        await api.get_api_resources(_request_timeout=timeout)
    except ApiException as exc:
        if exc.status == 404:
            return DraSupport(served=False, classes=frozenset())
        return DraSupport(None, None, str(translate(exc, "reading the resource.k8s.io/v1 discovery", verb="get", resource="/apis")))
    except Exception as exc:  # transport failures: unknown, not absent
        return DraSupport(None, None, str(translate(exc, "reading the resource.k8s.io/v1 discovery", verb="get", resource="/apis")))
    try:
        listed = await api.list_device_class(_request_timeout=timeout)
    except Exception as exc:
        error = translate(exc, "listing DeviceClasses", verb="list", resource="deviceclasses.resource.k8s.io")
        return DraSupport(True, None, str(error))
    return DraSupport(True, frozenset(c.metadata.name for c in listed.items or [] if c.metadata and c.metadata.name))


async def read_devices(client: ApiClient, timeout: float) -> tuple[list[DraDevice], list[str]]:
    """The NVIDIA driver's devices in the cluster's ResourceSlices, and one line per device that
    could not be read. Raises agent.errors (a refusal, the API unreachable) when none can be."""
    api = ResourceV1Api(client)
    try:
        listed = await api.list_resource_slice(field_selector=f"spec.driver={DRIVER}", _request_timeout=timeout)
    except Exception as exc:
        raise translate(exc, "listing ResourceSlices", verb="list", resource="resourceslices.resource.k8s.io") from None
    items: list[dict[str, Any]] = client.sanitize_for_serialization(listed).get("items") or []
    return devices_from_slices(items)
