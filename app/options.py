"""What a client may ask of /predict (and the form) besides the image: top_k, threshold, explain.

Checked before any image is decoded; a bad value is a 400 invalid_parameter naming
the parameter, the value and what would do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from app.errors import ApiError
from classifier.prediction import DEFAULT_TOP_K

SWITCH = {"1": True, "true": True, "0": False, "false": False}
# The parameters as openapi.py documents them.
PARAMETERS = {
    "top_k": f"How many classes `top` lists, highest first: a whole number from 1 up "
             f"(more than the model has lists them all). Default: {DEFAULT_TOP_K}, or every "
             f"class if the model has fewer.",
    "threshold": "Confidence below which the answer is flagged `unsure`, from 0 to 1 "
                 "(0: never). Default: UNSURE_THRESHOLD, else the model's own from "
                 "export.json, else none.",
    "explain": "1 (or true) adds `explanation`: a Grad-CAM heatmap of what the model looked at "
               "for its top class. Needs the PyTorch model (EXPLANATIONS=on); at most "
               "MAX_EXPLANATIONS images per request, each counted against EXPLAIN_RATE.",
}


@dataclass(frozen=True)
class AnswerOptions:
    top_k: int
    threshold: float | None
    explain: bool


def _bad(name: str, raw: str, wanted: str) -> ApiError:
    return ApiError("invalid_parameter", f"{name} must be {wanted}, not {raw[:40]!r}.")


def answer_options(values, classes: int, default_threshold: float | None) -> AnswerOptions:
    """Parse `values` (request.args, or the form's fields) for a model with `classes` classes."""
    top_k, threshold, explain = min(DEFAULT_TOP_K, classes), default_threshold, False
    raw = values.get("top_k")
    if raw is not None:
        try:
            top_k = int(raw)
        except ValueError:
            top_k = 0
        if top_k < 1:
            raise _bad("top_k", raw, "a whole number from 1 up")
        top_k = min(top_k, classes)
    raw = values.get("threshold")
    if raw is not None:
        try:
            threshold = float(raw)
        except ValueError:
            threshold = math.nan
        if not 0 <= threshold <= 1:
            raise _bad("threshold", raw, "a number from 0 to 1")
    raw = values.get("explain")
    if raw is not None:
        if raw.strip().lower() not in SWITCH:
            raise _bad("explain", raw, "1 or 0 (or true or false)")
        explain = SWITCH[raw.strip().lower()]
    return AnswerOptions(top_k, threshold, explain)
