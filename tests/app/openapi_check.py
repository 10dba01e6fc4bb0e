"""Real responses against the service's OpenAPI 3.0 document, with openapi-schema-validator."""
from __future__ import annotations

from openapi_schema_validator import OAS30Validator


def validate(value, schema: dict, doc: dict) -> None:
    """`value` against an OpenAPI 3.0 schema whose $refs point into `doc`'s components;
    raises jsonschema.ValidationError."""
    OAS30Validator({**schema, "components": doc["components"]}).validate(value)


def check_response(doc: dict, path: str, method: str, response) -> None:
    """The status is documented for this operation, and a JSON body matches its schema.
    `response`: a Flask test response or a requests.Response."""
    operation = doc["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path} -> {status} is not documented"
    content = operation["responses"][status].get("content", {})
    if "application/json" in content:
        body = response.get_json() if hasattr(response, "get_json") else response.json()
        validate(body, content["application/json"]["schema"], doc)
