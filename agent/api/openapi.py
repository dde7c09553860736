"""The OpenAPI 3.1 document of the v1 socket API, built from the schema module's pydantic models
(OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic emits). The route table
below is the single list of routes: the server registers its handlers from it and the docs are
generated from it, so neither can name a route the other lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .. import __version__
from .schema import API_VERSION, RESPONSE_MODELS, ActionRequest

__all__ = ["ROUTES", "Route", "openapi_document"]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str  # handler name on the server, and the operationId
    summary: str
    response: str | None  # component name of the 200 body; None: not JSON
    admin: bool = False
    path_param: str | None = None  # what {id} names
    errors: tuple[int, ...] = ()
    query: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    content_type: str = "application/json"


_SINCE = {
    "name": "since",
    "in": "query",
    "required": False,
    "description": "Replay kept events with a sequence number above this one first. ASCII digits only, at most 18.",
    "schema": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/status", "status", "Agent phase, health, counts and the host.", "StatusResponse"),
    Route("GET", "/v1/gpus", "gpus", "GPUs with live readings and the runner/job holding each.", "GpusResponse"),
    Route("GET", "/v1/runners", "runners", "Runners this host has, as observed.", "RunnersResponse"),
    Route("GET", "/v1/jobs", "jobs", "Pending jobs: the runner serving each, or why it waits.", "JobsResponse"),
    Route("GET", "/v1/plan", "plan", "The planner's latest decisions.", "PlanResponse"),
    Route("GET", "/v1/fleet", "fleet", "Runners of every AutoGit host on the same GitLab, by host.", "FleetResponse"),
    Route(
        "GET", "/v1/events", "events", "Live event stream, one Event per line (NDJSON); blank lines are heartbeats.",
        "Event", errors=(400,), query=(_SINCE,), content_type="application/x-ndjson",
    ),
    Route("GET", "/v1/openapi.json", "openapi", "This document.", None),
    Route("GET", "/metrics", "metrics", "Prometheus metrics (text exposition format).", None, content_type="text/plain"),
    Route("POST", "/v1/gpus/{id}/drain", "drain_gpu", "Drain a GPU: no new runner gets it; a busy one finishes its job. Kept across agent restarts.", "ActionResponse", admin=True, path_param="GPU id", errors=(404,)),
    Route("POST", "/v1/gpus/{id}/undrain", "undrain_gpu", "Make an operator-drained GPU schedulable again (also one that is gone, or drained before a restart).", "ActionResponse", admin=True, path_param="GPU id", errors=(404,)),
    Route("POST", "/v1/runners/{id}/drain", "drain_runner", "Drain a runner: it takes no new job and is removed once idle. Kept across agent restarts until the runner is gone.", "ActionResponse", admin=True, path_param="runner id", errors=(404,)),
    Route("POST", "/v1/scaling/pause", "pause", "Pause scaling: start nothing new; idle runners are still reaped. Kept across agent restarts until resumed.", "ActionResponse", admin=True),
    Route("POST", "/v1/scaling/resume", "resume", "Resume scaling.", "ActionResponse", admin=True),
    Route("POST", "/v1/config/reload", "reload", "Re-read the config file; a bad one is refused and the old one kept (409).", "ActionResponse", admin=True, errors=(409,)),
)

_ERROR_TEXT = {
    400: "Bad request: malformed JSON, an unknown or invalid field, or a bad parameter.",
    403: "The peer may not do this (see docs/security/).",
    404: "No such GPU, runner or route.",
    408: "The request body did not arrive in time.",
    409: "Refused; the agent keeps its current state.",
    413: "Request body too large.",
    503: "Too many connections (this uid's api.max_connections_per_uid, or every slot it may use), or the agent is stopping.",
}


def _error(code: int) -> dict[str, Any]:
    return {"description": _ERROR_TEXT[code], "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": route.name, "summary": route.summary, "tags": ["actions" if route.admin else "read"]}
    params = list(route.query)
    if route.path_param:
        params.append({"name": "id", "in": "path", "required": True, "description": route.path_param, "schema": {"type": "string"}})
    if params:
        op["parameters"] = params
    if route.response is not None:
        body = {"schema": {"$ref": f"#/components/schemas/{route.response}"}}
    elif route.content_type == "text/plain":
        body = {"schema": {"type": "string"}}
    else:
        body = {"schema": {"type": "object"}}
    op["responses"] = {"200": {"description": "OK", "content": {route.content_type: body}}}
    codes = set(route.errors) | {403, 503}
    if route.admin:
        codes |= {400, 408, 413}
        op["requestBody"] = {
            "required": False,
            "description": "Optional. Unknown fields are a 400.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActionRequest"}}},
        }
    for code in sorted(codes):
        op["responses"][str(code)] = _error(code)
    return op


@cache
def _document() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation" if m is ActionRequest else "serialization") for m in RESPONSE_MODELS
    ]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AutoGit agent socket API",
            "version": f"{API_VERSION} (autogit {__version__})",
            "description": "HTTP/JSON on the agent's unix socket (default /run/autogit/agent.sock). "
            "Errors are {\"error\": {\"type\", \"message\"}}. Reading needs the socket group; "
            "POST actions need root or the admin group.",
        },
        "servers": [{"url": "http://autogit", "description": "any host name; the transport is the unix socket"}],
        "paths": paths,
        "components": {"schemas": top["$defs"]},
    }


def openapi_document() -> dict[str, Any]:
    import copy

    return copy.deepcopy(_document())
