"""deploy/alerts.yml, the example Prometheus rules: well formed, and naming only metrics and
labels the server exports (checked with promtool too where it is installed)."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import app.field_signals
import app.metrics
from app.config import ROOT

RULES = ROOT / "deploy" / "alerts.yml"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
PROMQL_WORDS = {"on", "by", "group_left", "max", "sum", "rate", "histogram_quantile", "le",
                "instance", "without"}


def exported() -> dict[str, set[str]]:
    """Every sample name the server's metrics produce -> the labels it carries."""
    names = {}
    for module in (app.metrics, app.field_signals):
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                for suffix in SUFFIXES[metric._type]:
                    extra = {"le"} if suffix == "_bucket" else set()
                    names[metric._name + suffix] = set(metric._labelnames) | extra
    return names


def rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_rule_is_an_alert_with_an_expression_a_duration_and_a_summary():
    found = rules()
    assert found
    for rule in found:
        assert rule["alert"] and rule["expr"].strip() and rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_rules_name_only_metrics_and_labels_the_server_exports():
    names = exported()
    for rule in rules():
        expr = rule["expr"]
        used = set(re.findall(r"\bclassifier_[a-z_]+", expr))
        assert used and used <= set(names), (rule["alert"], used - set(names))
        labels = set(re.findall(r"\b([a-z_]+)\s*=", expr))
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            labels |= {label.strip() for label in grouping.split(",")}
        known = set().union(*(names[name] for name in used)) | {"instance"}
        assert labels <= known, (rule["alert"], labels - known)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
