"""A small JSON-schema check for the subset of OpenAPI 3.0 that app/openapi.py uses.

Supports $ref, allOf, oneOf, type, nullable, required, properties,
additionalProperties, items, minItems/maxItems, enum, minimum/maximum, pattern;
raises on any other keyword so the document cannot silently outgrow the check.
"""
from __future__ import annotations

import re

KNOWN = {"$ref", "allOf", "oneOf", "type", "nullable", "required", "properties",
         "additionalProperties", "items", "minItems", "maxItems", "enum", "minimum",
         "maximum", "pattern", "description", "format"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool,
         "integer": int, "number": (int, float)}


class SchemaError(AssertionError):
    pass


def resolve(doc: dict, ref: str) -> dict:
    node = doc
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def validate(value, schema: dict, doc: dict, where: str = "$") -> None:
    unknown = set(schema) - KNOWN
    if unknown:
        raise SchemaError(f"{where}: schema keywords not supported by the check: {unknown}")
    if "$ref" in schema:
        return validate(value, resolve(doc, schema["$ref"]), doc, where)
    for sub in schema.get("allOf", []):
        validate(value, sub, doc, where)
    if "oneOf" in schema:
        matches = 0
        for sub in schema["oneOf"]:
            try:
                validate(value, sub, doc, where)
                matches += 1
            except SchemaError:
                pass
        if matches != 1:
            raise SchemaError(f"{where}: matches {matches} of oneOf, not exactly 1")
    if value is None:
        if schema.get("nullable"):
            return
        if "type" in schema:
            raise SchemaError(f"{where}: null but not nullable")
    kind = schema.get("type")
    if kind:
        ok = isinstance(value, TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            raise SchemaError(f"{where}: {value!r} is not {kind}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        raise SchemaError(f"{where}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise SchemaError(f"{where}: {value} > {schema['maximum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        raise SchemaError(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(f"{where}: missing required {name!r}")
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                validate(item, props[name], doc, f"{where}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(item, schema["additionalProperties"], doc, f"{where}.{name}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise SchemaError(f"{where}: fewer than {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            raise SchemaError(f"{where}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            validate(item, schema.get("items", {}), doc, f"{where}[{i}]")


def check_response(doc: dict, path: str, method: str, response) -> None:
    """Validate a Flask test response (or requests.Response) against the document."""
    operation = doc["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path} -> {status} is not documented"
    content = operation["responses"][status].get("content")
    if not content or "application/json" not in content:
        return
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    validate(body, content["application/json"]["schema"], doc)
