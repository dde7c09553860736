"""kubernetes_asyncio and aiohttp failures as the adapters' error tree (agent/errors.py).

The API server answers with a `Status` object whose `message` says what went wrong in one line;
that line, after what the agent was doing, is the error's text. A refusal (403) names the verb
and the resource the agent's Role lacks, so an operator knows which rule to grant
(charts/autogit/templates/rbac.yaml); it is never retried in a storm (PermissionRefused is not
`retryable`). An unanswered or unreachable API server is Transient: the reconciler then changes
nothing (unknown is never read as absent).
"""

from __future__ import annotations

import json

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from ..errors import AdapterError, Conflict, InvalidConfiguration, NotFound, PermissionRefused, Transient, one_line

__all__ = ["TRANSPORT_ERRORS", "api_message", "translate"]

# What a request that never got an answer raises (connection refused, TLS, timeout, a cut socket).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)


def api_message(exc: ApiException) -> str:
    """The API server's own one-line reason (its Status object's `message`), else the HTTP reason."""
    body: object = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip():
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and isinstance(status.get("message"), str) and status["message"]:
            return one_line(status["message"], 200)
    return one_line(str(exc.reason or f"HTTP {exc.status}"), 200)


def translate(exc: BaseException, what: str, *, verb: str, resource: str, config_field: str | None = None) -> AdapterError:
    """One library failure as agent.errors. `what`: what was being done (`creating pod r1`);
    `verb`/`resource`: the RBAC verb and resource of the request (`create`, `pods`), named by a
    refusal; `config_field`: the configuration key a 400/422 of this request points at."""
    if isinstance(exc, AdapterError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        line = api_message(exc)
        if status in (401, 403):
            missing = f"{verb} {resource}"
            return PermissionRefused(f"{what}: the API server refused `{missing}` ({status}: {line})", missing=missing, what=what)
        if status == 404:
            return NotFound(f"{what}: {line}", what=what)
        if status == 409:
            return Conflict(f"{what}: {line}", what=what)
        if status in (400, 422) and config_field is not None:
            return InvalidConfiguration(f"{what}: {line}", field=config_field, what=what)
        if status == 0 or status == 429 or status >= 500:
            return Transient(f"{what}: API server: {line}", what=what)
        return AdapterError(f"{what}: API server answered {status}: {line}", what=what)
    if isinstance(exc, aiohttp.ClientResponseError) and exc.status in (401, 403, 404, 409):
        # a websocket upgrade (pods/exec) refused: aiohttp keeps the status, not the Status body
        status_error = ApiException(status=exc.status, reason=exc.message or f"HTTP {exc.status}")
        return translate(status_error, what, verb=verb, resource=resource, config_field=config_field)
    if isinstance(exc, ConfigException):
        return InvalidConfiguration(f"{what}: {one_line(str(exc), 200)}", field=config_field or "runner.kubernetes.kubeconfig", what=what)
    if isinstance(exc, TRANSPORT_ERRORS):
        return Transient(f"{what}: API server unreachable: {type(exc).__name__}: {one_line(str(exc), 160)}", what=what)
    return AdapterError(f"{what}: {type(exc).__name__}: {one_line(str(exc), 160)}", what=what)
