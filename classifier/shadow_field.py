"""A shadow candidate's figures in the field, from the server's Prometheus samples: what
GET /shadow answers and what `python -m training.compare A B --field SOURCE` prints beside
its test-set verdict. No Flask and no torch: the server (app/shadow.py) writes the counters,
this reads them back, from the server's own registry or from a saved /metrics or /shadow.
"""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

# The counters app/shadow.py keeps (Prometheus names, less "_total"), all labelled by the
# live version and the shadow version that answered beside it.
IMAGES = "classifier_shadow_images"      # + label: the shadow's top-1 class
UNSURE = "classifier_shadow_unsure"      # + label: the shadow's "not sure" answers, by class
AGREED = "classifier_shadow_agreed"      # images whose top-1 equals the live model's
REQUESTS = "classifier_shadow_requests"  # + outcome: shadowed, dropped (queue full), failed
OUTCOMES = ("shadowed", "dropped", "failed")
FETCH_TIMEOUT = 10.0  # seconds for --field's URL


class FieldSourceError(ValueError):
    """--field's source cannot be read; the message says which and why."""


def field_pairs(families) -> list[dict]:
    """Prometheus metric families -> one summary per (live, shadow) pair: images answered,
    top-1 agreement with the live model, the shadow's "not sure" rate overall and per class
    (of its own top-1), and requests shadowed, dropped and failed."""
    counts: dict[tuple[str, str], dict] = {}
    for family in families:
        for sample in family.samples:
            name, labels = sample.name.removesuffix("_total"), sample.labels
            if name not in (IMAGES, UNSURE, AGREED, REQUESTS) or not sample.name.endswith("_total"):
                continue
            pair = counts.setdefault((labels["live"], labels["shadow"]), {
                "images": {}, "unsure": {}, "agreed": 0, "requests": dict.fromkeys(OUTCOMES, 0)})
            value = int(sample.value)
            if name == AGREED:
                pair["agreed"] += value
            elif name == REQUESTS:
                pair["requests"][labels["outcome"]] = value + pair["requests"].get(labels["outcome"], 0)
            else:
                key = "images" if name == IMAGES else "unsure"
                pair[key][labels["label"]] = pair[key].get(labels["label"], 0) + value
    return [summarise(live, shadow, **pair) for (live, shadow), pair in sorted(counts.items())]


def summarise(live: str, shadow: str, images: dict, unsure: dict, agreed: int,
              requests: dict) -> dict:
    total, total_unsure = sum(images.values()), sum(unsure.values())

    def rate(part, whole):
        return round(part / whole, 4) if whole else None

    return {"live": live, "shadow": shadow, "images": total, "agreed": agreed,
            "agreement": rate(agreed, total), "unsure_rate": rate(total_unsure, total),
            "per_class": [{"label": label, "images": n, "unsure": unsure.get(label, 0),
                           "unsure_rate": rate(unsure.get(label, 0), n)}
                          for label, n in sorted(images.items())],
            "requests": requests}


def read_field(source: str) -> list[dict]:
    """The pairs from `source`: a URL or a file holding a /shadow answer (JSON) or a /metrics
    page (Prometheus text); FieldSourceError when it cannot be read."""
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
                text = response.read().decode("utf-8", "replace")
        else:
            text = Path(source).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        raise FieldSourceError(f"--field {source} cannot be read: {exc}") from None
    try:
        answer = json.loads(text)
    except ValueError:
        return parse_metrics(source, text)
    if not isinstance(answer, dict) or not isinstance(answer.get("pairs"), list):
        raise FieldSourceError(f"--field {source} is JSON but not a /shadow answer (no pairs).")
    return answer["pairs"]


def parse_metrics(source: str, text: str) -> list[dict]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return field_pairs(list(text_string_to_metric_families(text)))
    except (ValueError, KeyError) as exc:
        raise FieldSourceError(f"--field {source} is neither a /shadow answer nor a /metrics "
                               f"page ({type(exc).__name__}: {str(exc)[:100]}).") from None


def field_line(pairs: list[dict], live: str, shadow: str, source: str) -> str:
    """What compare prints for `shadow` answering beside `live` in the field."""
    pair = next((p for p in pairs if p["live"] == live and p["shadow"] == shadow), None)
    if pair is None:
        seen = ", ".join(f"{p['shadow']} beside {p['live']}" for p in pairs) or "none"
        return f"in the field ({source}): no figures for {shadow} beside {live} (pairs: {seen})"
    per_class = ", ".join(f"{row['label']} {row['unsure_rate']}" for row in pair["per_class"])
    requests = pair["requests"]
    return (f"in the field ({source}): B {shadow} beside A {live} on {pair['images']} images: "
            f"top-1 agreement {pair['agreement']}, B's \"not sure\" rate {pair['unsure_rate']} "
            f"(by B's class: {per_class or '-'}); requests shadowed {requests['shadowed']}, "
            f"dropped {requests['dropped']}, failed {requests['failed']}")
