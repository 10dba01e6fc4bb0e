"""Checking responses against the service's own OpenAPI document."""
from __future__ import annotations

from openapi_schema_validator import OAS30Validator


def validate(value, schema: dict, doc: dict) -> None:
    """`value` against an OpenAPI 3.0 schema whose $refs point into `doc`'s components."""
    OAS30Validator({**schema, "components": doc["components"]}).validate(value)


def check_response(doc: dict, path: str, method: str, response) -> None:
    """The status is documented for this operation, and a JSON body matches its schema."""
    operation = doc["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path} -> {status} is not documented"
    content = operation["responses"][status].get("content", {})
    if "application/json" in content:
        validate(response.get_json(), content["application/json"]["schema"], doc)
