"""Pages for people beside the form: the API docs (/docs) and the training report (/report)."""
from __future__ import annotations

import re

from flask import Blueprint, render_template, request, send_from_directory, url_for
from markupsafe import Markup, escape

from app.config import app_settings
from app.errors import ApiError
from app.model_service import model_service
from app.openapi import openapi_document

bp = Blueprint("pages", __name__)
REPORT_PAGE = "report.html"


@bp.app_template_filter("code_spans")
def code_spans(text: str) -> Markup:
    """OpenAPI descriptions are CommonMark: show their `code` spans as code (escaped)."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def schema_type(schema: dict) -> str:
    """A short human name for a schema: 'string', 'array of Ranked', 'Explanation', ..."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "oneOf" in schema:
        return " or ".join(schema_type(s) for s in schema["oneOf"])
    if "allOf" in schema:
        return " + ".join(schema_type(s) for s in schema["allOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        kind = f"array of {schema_type(schema.get('items', {}))}"
    if "enum" in schema:
        kind += ": " + ", ".join(str(v) for v in schema["enum"] if v is not None)
    if "minimum" in schema or "maximum" in schema:
        kind += f" ({schema.get('minimum', '')}..{schema.get('maximum', '')})"
    return kind + (" or null" if schema.get("nullable") else "")


def schema_fields(schema: dict) -> list[dict]:
    """One row per property: name, type, required, description."""
    required = set(schema.get("required", []))
    return [{"name": name, "type": schema_type(prop), "required": name in required,
             "description": prop.get("description", "")}
            for name, prop in schema.get("properties", {}).items()]


@bp.get("/docs")
def docs():
    doc = openapi_document(model_service(), app_settings(), request.host_url)
    return render_template("docs.html", doc=doc, schema_type=schema_type,
                           schemas={name: {"type": schema_type(s), "fields": schema_fields(s),
                                           "description": s.get("description", "")}
                                    for name, s in doc["components"]["schemas"].items()})


def _report_dir():
    folder = model_service().report_dir
    if folder is None:
        raise ApiError("not_found", "This model has no training report: training writes "
                                    "report/report.html beside export.pkl; a notebook export "
                                    "has none.")
    return folder


@bp.get("/report")
def report():
    folder = _report_dir()
    # The report links its images relatively ('history.png'): resolve them under /report/.
    page = (folder / REPORT_PAGE).read_text(encoding="utf-8")
    base = url_for("pages.report_file", name="x")[:-1]
    page = page.replace("<head>", f'<head><base href="{base}">', 1)
    return page, 200, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/report/<path:name>")
def report_file(name: str):
    return send_from_directory(_report_dir(), name, max_age=3600)
