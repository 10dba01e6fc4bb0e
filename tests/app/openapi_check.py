"""Answers against the service's OpenAPI 3.0 document (openapi-schema-validator).

`CheckedClient` is the test client of every app test (tests/app/conftest.py): each JSON
answer it receives is checked against the document of the app that gave it, errors
included, so no endpoint can answer JSON that the document does not describe, whichever
test calls it. `check_response` does the same for a requests.Response from a real server.
"""
from __future__ import annotations

import re

from flask.testing import FlaskClient
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec
from werkzeug.exceptions import HTTPException

from app.errors import ERRORS

ERROR = {"$ref": "#/components/schemas/Error"}
# The one answer no operation documents: a bug, logged and answered generically (app/errors.py).
BUG = 500


def validate(value, schema: dict, doc: dict) -> None:
    """`value` against an OpenAPI 3.0 schema whose $refs point into `doc`'s components;
    raises jsonschema.ValidationError."""
    OAS30Validator({**schema, "components": doc["components"]}).validate(value)


def is_json(response) -> bool:
    """A response without headers is a body already parsed as JSON (tests/test_doc_examples.py)."""
    headers = getattr(response, "headers", None)
    return headers is None or \
        headers.get("Content-Type", "").split(";")[0].strip() == "application/json"


def _body(response):
    return response.get_json() if hasattr(response, "get_json") else response.json()


def check_error(body, status: int, doc: dict, named: str | None = None) -> None:
    """An error answer: the Error schema, a code whose status (errors.ERRORS) is the one
    answered and, given the response's description, a code it names."""
    validate(body, ERROR, doc)
    code = body["error"]["code"]
    assert ERRORS[code] == status, f"{code} answered with {status}, not {ERRORS[code]}"
    assert named is None or re.search(rf"\b{code}\b", named), f"{code} not in {named!r}"


def check_response(doc: dict, path: str, method: str, response) -> None:
    """The status is documented for this operation, and a JSON body matches its schema.
    `response`: a Flask test response or a requests.Response."""
    operation = doc["paths"][path][method.lower()]
    status = response.status_code
    if status == BUG and is_json(response):
        return check_error(_body(response), status, doc)
    assert str(status) in operation["responses"], f"{method} {path} -> {status} is not documented"
    documented = operation["responses"][str(status)]
    content = documented.get("content", {})
    if not is_json(response):
        return
    if path == "/openapi.json":  # the document itself: its schema is the OpenAPI specification
        return validate_spec(_body(response))
    assert "application/json" in content, f"{method} {path} -> {status}: undocumented JSON"
    schema = content["application/json"]["schema"]
    validate(_body(response), schema, doc)
    if schema == ERROR:
        check_error(_body(response), status, doc, documented["description"])


def document_of(app) -> dict:
    """The app's document as GET /openapi.json gives it now (settings may have been patched),
    without a request of its own through the app's hooks (metrics, logs)."""
    with app.test_request_context("/openapi.json"):
        return app.make_response(app.view_functions["api.openapi"]()).get_json()


def check_answer(app, response) -> None:
    """Any JSON answer of `app`: its operation's (check_response); where no route answered
    (404, 405), an error; from a route the document lacks, a failure."""
    if not is_json(response):
        return
    doc, request = document_of(app), response.request
    try:
        rule, _ = app.url_map.bind_to_environ(request.environ).match(return_rule=True)
    except HTTPException:  # no route: not found, method not allowed, redirect
        return check_error(_body(response), response.status_code, doc)
    path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)  # <path:name> -> {name}
    method = request.method.lower()
    assert method in doc["paths"].get(path, {}), \
        f"{request.method} {path} answers JSON but is not in the OpenAPI document"
    check_response(doc, path, method, response)


class CheckedClient(FlaskClient):
    """A Flask test client that checks every answer with check_answer."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        check_answer(self.application, response)
        return response
