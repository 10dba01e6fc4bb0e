"""The model card and the not-sure / explanation result on the form (no JavaScript), /report, /docs."""
from __future__ import annotations

import io
import json
import re
from html import unescape
from types import SimpleNamespace

import pytest

from harness.images import encode, photo


@pytest.fixture(scope="module")
def trained_client(make_app, trained_model):
    return make_app(MODEL_PATH=str(trained_model)).test_client()


def card(page: str) -> dict[str, str]:
    section = re.search(r'<section id="model-card".*?</section>', page, re.DOTALL).group(0)
    return {unescape(t): unescape(d) for t, d in
            re.findall(r"<dt>([^<]+)</dt><dd>([^<]*)</dd>", section)}


def test_model_card_shows_what_export_json_records(trained_client, trained_model):
    metadata = json.loads(trained_model.with_suffix(".json").read_text())
    page = trained_client.get("/").get_data(as_text=True)
    rows = card(page)
    assert rows["Classes"] == ", ".join(metadata["vocab"])
    assert rows["Validation accuracy"] == \
        f"{metadata['metrics']['validation']['accuracy'] * 100:.1f}%"
    # the first version of a models folder freezes --test-pct of the training split as its test set
    assert rows["Test accuracy"] == f"{metadata['metrics']['test']['accuracy'] * 100:.1f}%"
    assert rows["Training images"] == str(metadata["dataset"]["images"]["train"])
    assert rows["Created"] == metadata["created_at"][:10]
    assert rows["Architecture"] == metadata["arch"]
    assert rows["Input size"] == "32 × 32 px"
    recall = dict(re.findall(r"<tr><td>([^<]+)</td><td>([\d.]+%)</td></tr>", page))
    assert recall == {label: f"{row['recall'] * 100:.1f}%" for label, row in
                      metadata["metrics"]["validation"]["per_class"].items()}
    assert 'href="/report"' in page


def test_model_card_of_a_notebook_export_says_what_is_unknown(client):
    page = client.get("/").get_data(as_text=True)
    rows = card(page)
    assert rows["Classes"] == "blue, green, red"
    assert rows["Architecture"] == "resnet18" and rows["Input size"] == "32 × 32 px"
    for name in ("Validation accuracy", "Test accuracy", "Training images"):
        assert rows[name].startswith("unknown (notebook export"), name
    assert rows["Not-sure threshold"].startswith("none")
    assert rows["Created"].endswith("(file date)")
    assert 'href="/report"' not in page


def test_report_is_served_with_its_images(trained_client, trained_model):
    r = trained_client.get("/report")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert '<base href="/report/">' in page and "Training report" in page
    images = re.findall(r"<img src=[\"']([^\"']+)[\"']", page)
    assert "confusion_matrix.png" in images
    for name in images:
        image = trained_client.get("/report/" + name)
        assert image.status_code == 200 and image.mimetype == "image/png", name
        assert image.data == (trained_model.parent / "report" / name).read_bytes()
    assert trained_client.get("/report/../export.pkl").status_code == 404
    assert trained_client.get("/report/nope.png").status_code == 404


def test_no_report_is_a_404_in_json_or_html(client):
    r = client.get("/report")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    assert "no training report" in r.get_json()["error"]["message"]
    assert client.get("/report/history.png").get_json()["error"]["code"] == "not_found"
    page = client.get("/report", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert b"no training report" in page.data


def test_result_page_without_javascript_says_not_sure(make_app):
    client = make_app(UNSURE_THRESHOLD="1").test_client()
    r = client.post("/", data={"file": (io.BytesIO(encode(photo())), "x.png")},
                    content_type="multipart/form-data")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert re.search(r'<section id="result" class="result unsure"', page)
    assert re.search(r'<span id="result-unsure" class="unsure-note" >Not sure — closest match:',
                     page)
    assert "<title>Not sure: " in page
    assert re.search(r'<figure id="explanation" class="explanation" hidden>', page)


def test_result_page_without_javascript_is_sure_and_explains_on_request(client):
    r = client.post("/", data={"file": (io.BytesIO(encode(photo())), "x.png"), "explain": "1"},
                    content_type="multipart/form-data")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert '<section id="result" class="result"' in page
    assert re.search(r'id="result-unsure" class="unsure-note" hidden', page)
    assert re.search(r'<img id="explanation-image"[^>]*\s+src="data:image/png;base64,', page)
    assert re.search(r'<figure id="explanation" class="explanation" >', page)
    bad = client.post("/", data={"file": (io.BytesIO(encode(photo())), "x.png"),
                                 "explain": "yes"}, content_type="multipart/form-data")
    assert bad.status_code == 400 and b"(invalid_parameter)" in bad.data


def test_docs_are_made_from_the_openapi_document(client):
    doc = client.get("/openapi.json").get_json()
    r = client.get("/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = unescape(r.get_data(as_text=True))
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    operations = [(m, p) for p, ops in doc["paths"].items() for m in ops]
    for method, path in operations:
        assert f"<h2><code>{method.upper()} {path}</code></h2>" in page
    assert page.count("<figcaption>curl</figcaption>") == len(operations)
    assert page.count("<figcaption>Python</figcaption>") == len(operations)
    assert 'curl -s -F file=@photo.jpg "http://localhost/predict?top_k=3"' in page
    assert 'requests.post("http://localhost/predict?top_k=3", files={"file": photo})' in page
    for name in ("top_k", "threshold", "explain", "unsure", "Explanation", "Ranked"):
        assert f"<code>{name}</code>" in page or f"<h3>{name}</h3>" in page, name


def test_docs_examples_carry_the_api_key_when_one_is_set(make_app):
    page = unescape(make_app(API_KEY="k").test_client().get("/docs").get_data(as_text=True))
    assert 'curl -s -H "Authorization: Bearer $API_KEY" -F file=@photo.jpg' in page


def test_docs_python_examples_run(client):
    """Each GET example, run against this app (requests swapped for the test client)."""
    doc = client.get("/openapi.json").get_json()

    class Requests:
        @staticmethod
        def get(url, **kwargs):
            response = client.get(url.removeprefix("http://localhost"))
            assert response.status_code == 200, url
            return SimpleNamespace(json=response.get_json, text=response.get_data(as_text=True))

    for path, ops in doc["paths"].items():
        if "get" not in ops or path.startswith("/report"):
            continue
        source = next(s["source"] for s in ops["get"]["x-codeSamples"] if s["lang"] == "Python")
        printed = []
        exec(source.replace("import requests\n", ""),  # noqa: S102 - our own example code
             {"requests": Requests, "print": printed.append})
        assert printed and printed[0], path
