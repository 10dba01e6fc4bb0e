"""The hostile-input judge (harness/judge.py) holds every error code to the API's table."""
from __future__ import annotations

import json

import pytest

from app.errors import ERRORS
from harness.judge import Case, judge
from harness.raw_http import Outcome


def answer(status: int, code: str) -> Outcome:
    body = json.dumps({"error": {"code": code, "message": "m"}}).encode()
    return Outcome(status=status, headers={"content-type": "application/json"}, body=body)


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_code_must_come_with_its_status(code):
    case = Case("c", b"", "any" if ERRORS[code] < 500 else "error")
    if ERRORS[code] < 500:
        assert judge(case, answer(ERRORS[code], code)) == []
    wrong = 418 if ERRORS[code] != 418 else 400
    assert judge(case, answer(wrong, code)), f"{code} with {wrong} was accepted"


def test_a_code_outside_the_table_is_a_problem():
    assert judge(Case("c", b"", "error"), answer(400, "made_up"))
