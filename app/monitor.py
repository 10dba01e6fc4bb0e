"""/monitor: the field signals of the version this worker serves, for people.

The charts cover the last hours (a point a minute, app/field_signals.py's history) and are
drawn here as SVG, so the page needs no script and no external asset. They are this
worker's: under gunicorn each worker keeps its own history and window (the trade-off is in
app/field_signals.py); /metrics has the merged counters.

Other signals add a section with `MONITOR_SECTIONS.append(section)`, where
`section(service, model) -> dict | None` (service: app.model_service.ModelService, model:
the ServedModel shown) returns {"title": str, "rows": [(name, reference value or "",
live value)], "charts": [Markup from app.svg_charts]} or None to show nothing. The
shadow model's agreement with the live one (`shadow_section`, below) is one.
"""
from __future__ import annotations

import time

from flask import Blueprint, render_template

from app.field_signals import HISTORY_MINUTES
from app.model_service import model_service
from app.shadow import shadow_figures
from app.svg_charts import line_chart, paired_bars
from classifier.drift import CONFIDENCE_EDGES

bp = Blueprint("monitor", __name__)


def shadow_section(service, model) -> dict | None:
    """SHADOW_MODEL beside the version shown: its top-1 agreement with it and its own "not
    sure" rate, overall and per class of its top-1 (all workers, since this server started);
    beside the shadow's rate, the live model's over this worker's hours of history."""
    if service.shadow is None:
        return None
    pairs = [p for p in shadow_figures(service.shadow)["pairs"] if p["live"] == model.version]
    title = f"Shadow {service.shadow.version} beside {model.version}"
    if not pairs:
        return {"title": title, "rows": [("images shadowed", "", "none yet")], "charts": []}
    figures = pairs[0]
    minutes = service.signals.of(model).history.values()
    live_unsure = _rate(sum(m.unsure for m in minutes), sum(m.answers for m in minutes))

    def percent(rate):
        return "" if rate is None else f"{rate:.1%}"

    rows = [("images shadowed", "", f"{figures['images']} (dropped "
             f"{figures['requests']['dropped']}, failed {figures['requests']['failed']})"),
            ("top-1 agreement with the live model", "", percent(figures["agreement"])),
            ("not sure (live model, shadow)", percent(live_unsure),
             percent(figures["unsure_rate"]))]
    rows += [(f"not sure when the shadow says {row['label']}", "", percent(row["unsure_rate"]))
             for row in figures["per_class"]]
    return {"title": title, "rows": rows, "charts": []}


MONITOR_SECTIONS: list = [shadow_section]  # further sections (see the module doc)


def _series(history: dict, now: float, value) -> list[float | None]:
    """One value a minute from the first minute with answers (at most HISTORY_MINUTES ago)
    to now; None where the minute had none."""
    current = int(now // 60)
    first = min(history, default=current)
    first = max(first, current - HISTORY_MINUTES + 1)
    return [value(history[m]) if m in history else None for m in range(first, current + 1)]


def _rate(part, whole):
    return part / whole if whole else None


@bp.get("/monitor")
def monitor():
    service = model_service()
    model = service.model
    signals = service.signals
    state = signals.of(model)
    scores = signals.rescore(model.version)
    now = time.time()
    history = state.history
    reference, window = state.reference, state.window
    confidence_bins = [f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(CONFIDENCE_EDGES, CONFIDENCE_EDGES[1:])]
    live = len(window) > 0
    drift_series = _series(history, now, lambda m: m.drift)
    charts = {
        "answers": line_chart(_series(history, now, lambda m: m.answers),
                              max([m.answers for m in history.values()], default=1) or 1,
                              "answers a minute"),
        "unsure": line_chart(_series(history, now, lambda m: _rate(m.unsure, m.answers)), 1.0,
                             "share of answers not sure"),
        "confidence": line_chart(_series(history, now, lambda m: _rate(m.confidence_sum,
                                                                       m.answers)),
                                 1.0, "mean confidence"),
        "model_ms": line_chart(_series(history, now, lambda m: _rate(1000 * m.model_seconds,
                                                                     m.passes)),
                               max([1000 * m.model_seconds / m.passes for m in history.values()
                                    if m.passes], default=1.0), "model time, ms"),
        "drift": line_chart(drift_series, max([signals.threshold * 2,
                                               *(d for d in drift_series if d is not None)]),
                            "drift score", threshold=signals.threshold),
    }
    if reference is not None:
        charts["classes"] = paired_bars(
            list(reference.class_shares), list(reference.class_shares.values()),
            window.live_class_shares() if live else None, "class shares: reference, live")
        charts["confidence_bins"] = paired_bars(
            confidence_bins, reference.confidence_shares,
            window.live_confidence_shares() if live else None,
            "confidence histogram: reference, live")
    sections = [s for s in (section(service, model) for section in MONITOR_SECTIONS) if s]
    return render_template(
        "monitor.html", model=model, state=state, scores=scores, charts=charts,
        threshold=signals.threshold, window_size=signals.window_size,
        hours=HISTORY_MINUTES // 60, sections=sections,
        decode_ms=_rate(1000 * state.decode_seconds, state.decodes))
