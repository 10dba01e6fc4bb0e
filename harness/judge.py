"""The judge of hostile input: is this answer acceptable for this request?

A 200 with a well-formed prediction, or a 4xx with {"error": {"code", "message"}} whose code
is in the API's table (app.errors.ERRORS) with its own status; HTML for the form; gunicorn's
own 4xx only where the HTTP itself is malformed. A Tally counts a campaign's answers.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from app.errors import ERRORS
from harness.raw_http import Outcome, send


# expect: "ok" (200 with a prediction), "error" (a 4xx JSON error), "any" (200 or a 4xx JSON
# error), "http" (any 4xx, even gunicorn's own non-JSON answer to malformed HTTP), "reject"
# (a 4xx, or the connection closed without an answer: for requests that lie about their length).
@dataclass
class Case:
    name: str
    raw: bytes
    expect: str = "any"
    api: bool = True                   # /predict (JSON) or the HTML form at /
    codes: tuple = ()                  # acceptable error codes when expect == "error"
    timeout: float = 30.0


def judge(case: Case, out: Outcome) -> list[str]:
    """What is wrong with this response to this case; [] when it is acceptable."""
    problems = []
    status = out.status
    if status is None:
        if case.expect == "reject":
            return []
        return [f"no response ({out.error})"]
    if status >= 500:
        return [f"{status} server error: {out.body[:200]!r}"]
    if case.expect == "ok" and status != 200:
        problems.append(f"expected 200, got {status} {out.body[:200]!r}")
    if case.expect == "error" and status == 200:
        problems.append("expected a 4xx error, got 200")
    if not (status == 200 or 400 <= status < 500):
        problems.append(f"unexpected status {status}")
    if case.expect in ("http", "reject"):
        return problems
    ctype = out.headers.get("content-type", "")
    if not case.api:
        if "text/html" not in ctype:
            problems.append(f"form answered {status} with Content-Type {ctype!r}, not HTML")
        return problems
    try:
        doc = json.loads(out.body)
    except ValueError:
        return problems + [f"{status} with a non-JSON body {out.body[:120]!r}"]
    if status == 200:
        problems += check_prediction(doc)
    else:
        err = doc.get("error") if isinstance(doc, dict) else None
        if not (isinstance(err, dict) and isinstance(err.get("code"), str)
                and isinstance(err.get("message"), str) and err["message"]):
            problems.append(f"{status} without {{'error': {{'code', 'message'}}}}: {doc!r:.200}")
        else:
            code = err["code"]
            if code not in ERRORS:
                problems.append(f"code {code!r} is not in the API's error table")
            elif ERRORS[code] != status:
                problems.append(f"code {code} came with status {status}, not {ERRORS[code]}")
            if case.codes and code not in case.codes:
                problems.append(f"code {code}, expected one of {case.codes}")
    return problems


def check_prediction(doc) -> list[str]:
    if isinstance(doc, dict) and "predictions" in doc:
        return [p for item in doc["predictions"] for p in check_prediction(item)]
    try:
        probs = doc["probabilities"]
        ok = (isinstance(doc["label"], str) and isinstance(doc["index"], int)
              and abs(sum(probs.values()) - 1) <= 1e-5
              and doc["label"] == list(probs)[doc["index"]]
              and abs(probs[doc["label"]] - doc["confidence"]) <= 1e-6)
    except (KeyError, TypeError, IndexError, AttributeError):
        ok = False
    return [] if ok else [f"malformed prediction {doc!r:.200}"]


def error_code(out: Outcome) -> str | None:
    try:
        return json.loads(out.body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Tally:
    """Counts over a campaign, for the assertions and for the Reliability table."""
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    server_errors: int = 0
    no_response: int = 0
    problems: list = field(default_factory=list)

    def add(self, case: Case, out: Outcome) -> list[str]:
        self.cases += 1
        self.statuses[out.status] += 1
        if out.status is None:
            self.no_response += 1
        elif out.status >= 500:
            self.server_errors += 1
        code = error_code(out) if case.api else None
        if code:
            self.codes[code] += 1
        found = judge(case, out)
        if found:
            self.problems.append(f"{case.name} -> {'; '.join(found)}")
        return found


def run_cases(port: int, cases, tally: Tally | None = None) -> Tally:
    tally = tally or Tally()
    for case in cases:
        tally.add(case, send(port, case.raw, timeout=case.timeout))
    return tally
