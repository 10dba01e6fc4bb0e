"""The settings this feature adds: upload size for phone photos, limits, EXACT_DECODE, threads."""
from __future__ import annotations

import pytest

from app.config import load_settings
from app.setting_parsers import ConfigError


def test_defaults_fit_phone_photos():
    s = load_settings(environ={})
    # a 108 MP phone JPEG is about 9x a 12 MP one (2.7-4 MB): 24-36 MB
    assert s.max_upload_mb >= 36
    assert s.max_declared_pixels >= 16320 * 12240  # a 200 MP sensor's photo
    assert s.max_image_pixels == 40_000_000
    assert s.exact_decode is False


def test_a_lone_request_may_use_every_core(monkeypatch):
    monkeypatch.setattr("app.machine.cpu_count", lambda: 4)
    s = load_settings(environ={})
    assert (s.workers, s.inference_threads) == (4, 4)
    assert load_settings(environ={"INFERENCE_THREADS": "1"}).inference_threads == 1


@pytest.mark.parametrize("raw, expected", [("true", True), ("1", True), ("yes", True),
                                           ("false", False), ("0", False), ("", False)])
def test_exact_decode_setting(raw, expected):
    assert load_settings(environ={"EXACT_DECODE": raw}).exact_decode is expected
    assert load_settings(environ={}, overrides={"EXACT_DECODE": raw}).exact_decode is expected


@pytest.mark.parametrize("source", ["environ", "overrides"])
def test_a_bad_exact_decode_value_is_refused_in_one_line_naming_it(source):
    with pytest.raises(ConfigError) as exc:
        load_settings(**{"environ": {}, source: {"EXACT_DECODE": "maybe"}})
    assert str(exc.value) == "EXACT_DECODE must be on or off, not 'maybe'."


def test_max_declared_pixels_is_checked():
    assert load_settings(environ={"MAX_DECLARED_PIXELS": "100000000"}).max_declared_pixels \
        == 100_000_000
    with pytest.raises(ConfigError, match="MAX_DECLARED_PIXELS"):
        load_settings(environ={"MAX_DECLARED_PIXELS": "lots"})
