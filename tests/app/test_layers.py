"""app/ depends one way: machine -> config -> errors -> model service -> {api, web, ...} -> create_app.

Read from the source (every import, those inside functions included), so a cycle
fails here even when a lazy import would hide it at run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

from app.config import ROOT

APP = ROOT / "app"
# Each module may import only modules of an earlier layer.
LAYERS = [
    {"machine", "version", "setting_parsers"},
    {"config", "event_loop"},
    {"errors", "settings_docs", "request_id", "upload_deadline", "url_exchange"},
    {"metrics", "security", "options", "url_fetch", "json_uploads", "openapi_schemas",
     "body_budget", "feedback_store", "review_metrics", "field_signals", "svg_charts",
     "explainer"},
    {"uploads", "limits", "model_follow", "review_access", "review_queue",
     "shadow", "engine_switch", "served_model"},
    {"openapi", "model_service"},
    {"api", "web", "health", "pages", "feedback", "review", "monitor"},
    {"__init__", "worker"},
]


def app_imports(path: Path) -> set[str]:
    """The app.* modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "app":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("app."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("app."))
    return found


def import_graph() -> dict[str, set[str]]:
    return {path.stem: app_imports(path) for path in sorted(APP.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in graph:
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"errors": {"web"}, "web": {"api"}, "api": {"errors"}}) == \
        ["errors", "web", "api", "errors"]
    assert find_cycle({"api": {"config"}, "config": set()}) is None


def test_no_import_cycle_in_app():
    assert find_cycle(import_graph()) is None


def test_every_module_is_in_a_layer_and_imports_only_earlier_layers():
    layer_of = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    graph = import_graph()
    assert set(graph) == set(layer_of), "put each app/ module in LAYERS"
    wrong = [f"{module} imports {dep}" for module, deps in graph.items() for dep in deps
             if layer_of[dep] >= layer_of[module]]
    assert not wrong
