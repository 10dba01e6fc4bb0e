"""Field signals end to end: the drift score on a stream that shifts, /metrics per version,
/monitor without a browser (tests/app/test_monitor_browser.py has the browser)."""
from __future__ import annotations

import io
import re

import pytest
from PIL import Image, ImageOps

from harness.images import encode, shuffled_image_folder

WINDOW = 60  # DRIFT_WINDOW here: the stream test's requests stay few
# docs/serving.md: with DRIFT_WINDOW=60, colour-inverted images cross the threshold within
# this many requests after the shift (measured: 22 on the session's tiny model).
DETECTED_WITHIN = WINDOW // 2
IN_DISTRIBUTION = 120  # requests before the shift: the window slides over 60 full windows


def post(client, data: bytes, name: str = "x.png"):
    response = client.post("/predict", data={"file": (io.BytesIO(data), name)})
    response.close()  # the server's close: the answers are counted after the response
    assert response.status_code == 200, response.get_json()
    return response


def test_drift_crosses_its_threshold_soon_after_the_stream_shifts_and_not_before(
        app_for, referenced_model, tmp_path):
    app = app_for(referenced_model, DRIFT_WINDOW=str(WINDOW))
    client, service = app.test_client(), app.extensions["classifier"]
    version, threshold = service.model.version, service.signals.threshold
    stream = shuffled_image_folder(tmp_path / "stream", IN_DISTRIBUTION // 3, seed=11)
    before, after = [], []
    for path in stream:
        post(client, path.read_bytes())
        before.append(service.signals.rescore(version))
    for path in stream[:WINDOW]:
        post(client, encode(ImageOps.invert(Image.open(path).convert("RGB"))))
        after.append(service.signals.rescore(version).score)
    assert before[WINDOW - 2] is None and before[WINDOW - 1] is not None  # a full window first
    in_distribution = [s.score for s in before if s is not None]
    assert max(in_distribution) < threshold, in_distribution
    crossed = next(i for i, score in enumerate(after, 1) if score > threshold)
    print(f"crossed after {crossed} requests; in distribution at most {max(in_distribution):.3f}")
    assert crossed <= DETECTED_WITHIN, after
    assert min(after[crossed:]) > threshold  # and stays over while the shift lasts


def metric(text: str, name: str, **labels) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return None


def test_metrics_carry_the_field_signals_per_version(app_for, referenced_model, tmp_path):
    app = app_for(referenced_model, DRIFT_WINDOW="4", UNSURE_THRESHOLD="0.99")
    client, service = app.test_client(), app.extensions["classifier"]
    version = service.model.version
    paths = shuffled_image_folder(tmp_path / "images", 2, seed=3)
    before = client.get("/metrics").get_data(as_text=True)  # one registry per test process
    answers = [post(client, path.read_bytes()).get_json() for path in paths[:4]]
    jpeg = encode(Image.open(paths[4]).convert("RGB"), "JPEG")
    answers.append(post(client, jpeg, "x.jpg").get_json())
    text = client.get("/metrics").get_data(as_text=True)

    def added(name: str, **labels) -> float:
        return (metric(text, name, version=version, **labels) or 0) - \
            (metric(before, name, version=version, **labels) or 0)

    assert added("classifier_confidence_count") == 5
    assert added("classifier_unsure_total") == sum(a["unsure"] for a in answers)
    assert added("classifier_input_images_total", format="PNG") == 4
    assert added("classifier_input_images_total", format="JPEG") == 1
    assert added("classifier_input_megapixels_count", format="JPEG") == 1
    assert added("classifier_decode_seconds_count") == 5
    assert added("classifier_model_seconds_count") == 5
    scores = service.signals.versions[version].scores
    assert metric(text, "classifier_drift_score", version=version, signal="score") == \
        pytest.approx(scores.score)
    assert metric(text, "classifier_drift_score", version=version, signal="embedding") == \
        pytest.approx(scores.embedding)
    assert "classifier_drift_threshold 0.25" in text


def test_monitor_shows_the_drift_score_and_the_reference_beside_the_live_shares(
        app_for, referenced_model, tmp_path):
    app = app_for(referenced_model, DRIFT_WINDOW="3")
    client = app.test_client()
    page = client.get("/monitor").get_data(as_text=True)
    assert "Collecting: 0 of 3 answers" in page
    for path in shuffled_image_folder(tmp_path / "images", 1, seed=5):
        post(client, path.read_bytes())
    page = client.get("/monitor").get_data(as_text=True)
    assert re.search(r"Drift\s+score <strong>[\d.]+</strong> against the threshold\s+0.25", page)
    assert page.count("<svg") == 7  # five lines, class shares and confidence bins
    assert 'class="threshold"' in page
    classes = re.search(r'aria-label="class shares: reference, live">(.*?)</svg>', page).group(1)
    assert classes.count('class="reference"') == classes.count('class="live"') == 3
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)


def test_monitor_says_when_a_model_has_no_reference(make_app):
    page = make_app().test_client().get("/monitor").get_data(as_text=True)  # a notebook export
    assert "No reference" in page
