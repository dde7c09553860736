"""The wire schema is its own set of models: every response model, at every depth, ignores
fields it does not know (a newer agent may add them), while the agent's internal models stay
strict; and each wire model mirrors its internal model field for field, so the server can build
one from the other without losing or inventing anything."""

from __future__ import annotations

import importlib
from datetime import datetime, UTC

import pytest
from pydantic import BaseModel, ValidationError

from autogit.agent.api import schema
from autogit.agent.api.openapi import openapi_document
from autogit.agent.model import Gpu, GpuVendor, Host, Job, JobWait, Plan, WaitReason

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _internal(ref: str) -> type[BaseModel]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(f"autogit.agent.{module}"), name)


def _nested_models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                _nested_models(tp, seen)
            stack.extend(getattr(tp, "__args__", ()))
    return seen


def test_every_response_model_at_every_depth_is_a_wire_model_that_ignores_unknown_fields():
    found: set[type[BaseModel]] = set()
    for model in schema.RESPONSE_MODELS:
        if model is not schema.ActionRequest:
            _nested_models(model, found)
    assert schema.Gpu in found and schema.Event in found and schema.StartRunner in found
    for model in found:
        assert model.__module__ == schema.__name__, f"{model.__module__}.{model.__name__} is not a wire model"
        assert issubclass(model, schema.Wire), model
        assert model.model_config.get("extra") == "ignore", model


def test_only_the_request_body_is_closed_in_the_openapi_document():
    closed = [name for name, spec in openapi_document()["components"]["schemas"].items() if spec.get("additionalProperties") is False]
    assert closed == ["ActionRequest"]


@pytest.mark.parametrize("wire", list(schema.WIRE_MIRRORS), ids=lambda m: m.__name__)
def test_each_wire_model_mirrors_its_internal_model(wire: type[schema.Wire]):
    internal = _internal(schema.WIRE_MIRRORS[wire])
    assert list(wire.model_fields) == list(internal.model_fields), f"{wire.__name__} drifted from {internal.__name__}"
    for name, field in wire.model_fields.items():
        theirs = internal.model_fields[name]
        assert field.is_required() == theirs.is_required(), name
        if not field.is_required():
            assert field.get_default(call_default_factory=True) == theirs.get_default(call_default_factory=True), name
    # The internal one stays strict: a typo in a scenario or config is an error.
    assert internal.model_config.get("extra") == "forbid"


def test_internal_models_are_built_into_wire_models_without_loss():
    gpu = Gpu(id="GPU-1", vendor=GpuVendor.NVIDIA, model="NVIDIA L4", memory_mb=23034, tags=["l4"])
    host = Host(hostname="h", arch="amd64", emulated=["arm64"], cpus=8, memory_mb=16384, gpus=[gpu])
    plan = Plan(waiting=[JobWait(job=1, reason=WaitReason.NO_MATCHING_HARDWARE, detail="no s390x", missing_tags=["s390x"])])
    job = Job(id=1, project_id=2, tags=["s390x"], created_at=NOW)
    for internal, wire in ((host, schema.Host), (plan, schema.Plan), (job, schema.Job)):
        built = wire.model_validate(internal)
        assert type(built) is wire
        assert built.model_dump(mode="json") == internal.model_dump(mode="json")


def test_a_field_from_a_newer_agent_is_ignored_by_the_wire_and_refused_by_the_internal_model():
    raw = {"id": "GPU-1", "vendor": "nvidia", "model": "L4", "memory_mb": 1, "numa_node": 1}
    assert schema.Gpu.model_validate(raw).id == "GPU-1"
    with pytest.raises(ValidationError, match="numa_node"):
        Gpu.model_validate(raw)
    body = {"hostname": "h", "host": {"arch": "amd64", "cpus": 1, "memory_mb": 1, "gpus": [raw], "numa": 2}}
    status = schema.StatusResponse.model_validate(
        {**body, "phase": "running", "gitlab": {"ok": True, "x": 1}, "docker": {}, "counts": {"y": 0}, "paused": False, "started_at": NOW.isoformat()}
    )
    assert status.host is not None and status.host.gpus[0].model == "L4"
