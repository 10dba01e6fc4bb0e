"""GET / and POST /: the form, server-rendered results (JavaScript off) and examples."""
from __future__ import annotations

import io
import re
from pathlib import Path

from app.model_service import model_service
from harness.images import encode, photo

ROOT = Path(__file__).resolve().parents[2]


def test_form_is_labelled_and_accessible(client):
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert re.search(r'<form id="upload-form" method="post" action="/"\s+'
                     r'enctype="multipart/form-data"', page)
    accept = re.search(r'<input id="file" name="file" type="file" accept="([^"]+)"', page)[1]
    assert accept.split(",")[0] == "image/*" and {".heic", ".heif", ".avif"} <= set(accept.split(","))
    assert "JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC or AVIF," in page
    assert '<label for="file"' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert 'aria-live="polite"' in page and 'role="alert"' in page
    assert 'lang="en"' in page
    # Nothing from a CDN: every asset is ours and is served.
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    for asset in (a for a in assets if a.startswith("/static/")):
        assert client.get(asset).status_code == 200, asset


def test_post_renders_result_without_javascript(client, app):
    data = encode(photo(seed=9))
    r = client.post("/", data={"file": (io.BytesIO(data), "holiday.png")})
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    expected = client.post("/predict", data=data, content_type="image/png").get_json()
    label = re.search(r'id="result-label" class="label">([^<]+)<', page).group(1)
    assert label == expected["label"]
    assert f'{expected["confidence"] * 100:.1f}%' in page
    assert "holiday.png" in page
    assert 'src="data:image/jpeg;base64,' in page  # the image is shown
    bars = re.findall(r'<span class="bar-label">([^<]+)</span>.*?'
                      r'<span class="bar-value">([\d.]+)%</span>', page, re.S)
    vocab = model_service(app).info["vocab"]
    assert sorted(b[0] for b in bars) == sorted(vocab)  # one bar per class
    values = [float(v) for _, v in bars]
    assert values == sorted(values, reverse=True)  # highest first


def test_examples_listed_served_and_classified(client, model_dir):
    page = client.get("/").get_data(as_text=True)
    names = re.findall(r'name="example" value="([^"]+)"', page)
    assert sorted(names) == ["blue/blue.png", "red/red.png"]
    image = client.get("/examples/red/red.png")
    assert image.status_code == 200
    assert image.data == (model_dir / "examples" / "red" / "red.png").read_bytes()
    r = client.post("/", data={"example": "red/red.png"}, content_type="multipart/form-data")
    assert r.status_code == 200 and 'id="result-label"' in r.get_data(as_text=True)
    assert "red.png" in r.get_data(as_text=True)


def test_examples_cannot_escape_their_folder(client):
    for name in ("../export.pkl", "..%2Fexport.pkl", "red/../../export.pkl", "nope.png"):
        assert client.get(f"/examples/{name}").status_code == 404, name
    r = client.post("/", data={"example": "../export.pkl"}, content_type="multipart/form-data")
    assert r.status_code == 400 and b"(missing_file)" in r.data


def test_no_examples_section_without_folder(make_app, notebook_export):
    # notebook_export's own folder has no examples/.
    page = make_app(MODEL_PATH=str(notebook_export)).test_client().get("/")
    assert page.status_code == 200 and b'name="example"' not in page.data
