"""The API's documents: the OpenAPI document is well-formed and covers every route the server
registers, and docs/api/README.md is exactly what the generator prints."""

from __future__ import annotations

from pathlib import Path

import jsonschema_rs

from autogit.agent.api.docgen import render
from autogit.agent.api.openapi import ROUTES, openapi_document
from autogit.agent.api.server import ApiServer

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_api_docs_match_the_generator():
    assert (ROOT / "docs/api/README.md").read_text() == render(), "run: python -m autogit.agent.api.docgen > docs/api/README.md"


def test_every_route_has_a_handler_and_every_ref_resolves():
    doc = openapi_document()
    for route in ROUTES:
        assert callable(getattr(ApiServer, f"_h_{route.name}"))
        assert route.method.lower() in doc["paths"][route.path]
    schemas = doc["components"]["schemas"]
    text = str(doc)
    for name in {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in schemas, name
    # Each component is itself a valid JSON Schema 2020-12 document (OpenAPI 3.1's dialect).
    for name in schemas:
        jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})
    assert doc["openapi"] == "3.1.0"
