"""The project's version, written once: pyproject.toml reads it (setuptools' dynamic
metadata) and the OpenAPI document (app/openapi.py) shows it."""
VERSION = "1.1.0"
