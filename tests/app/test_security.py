"""API_KEY on /predict (the form stays public) and CORS_ORIGINS."""
from __future__ import annotations

import io

import pytest

from harness.images import encode, photo

KEY = "s3cret-key-\u00e9"  # non-ASCII: compared as bytes


@pytest.fixture(scope="module")
def keyed(make_app):
    return make_app(API_KEY=KEY).test_client()


def post(client, **headers):
    return client.post("/predict", data=encode(photo()), content_type="image/png",
                       headers=headers)


def test_api_key_required_when_set(keyed):
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                    {"Authorization": KEY}, {"Authorization": "Basic " + KEY},
                    {"X-API-Key": KEY[:-1]}]:
        r = post(keyed, **headers)
        assert r.status_code == 401, headers
        assert r.get_json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_key_accepted_as_bearer_or_header(keyed):
    assert post(keyed, Authorization=f"Bearer {KEY}").status_code == 200
    assert post(keyed, **{"X-API-Key": KEY}).status_code == 200


def test_form_and_read_only_endpoints_stay_public(keyed):
    r = keyed.post("/", data={"file": (io.BytesIO(encode(photo())), "a.png")})
    assert r.status_code == 200 and b'id="result-label"' in r.data
    page = keyed.get("/").get_data(as_text=True)
    assert "data-predict-url" not in page  # the script leaves submission to the form
    for path in ("/model", "/healthz", "/readyz", "/openapi.json", "/metrics"):
        assert keyed.get(path).status_code == 200, path
    assert keyed.get("/openapi.json").get_json()["paths"]["/predict"]["post"]["security"]


def test_no_key_configured_means_open(client):
    assert post(client).status_code == 200
    assert "data-predict-url" in client.get("/").get_data(as_text=True)


@pytest.fixture(scope="module")
def cors(make_app):
    return make_app(CORS_ORIGINS="https://app.example.com, https://other.example").test_client()


def test_cors_allowed_origin(cors):
    r = post(cors, Origin="https://app.example.com")
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Origin" in r.headers["Vary"]
    assert "X-Request-ID" in r.headers["Access-Control-Expose-Headers"]


def test_cors_preflight(cors):
    r = cors.options("/predict", headers={"Origin": "https://other.example",
                                          "Access-Control-Request-Method": "POST",
                                          "Access-Control-Request-Headers": "authorization"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://other.example"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]


def test_cors_other_origin_and_no_config(cors, client):
    r = post(cors, Origin="https://evil.example")
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    r = post(client, Origin="https://app.example.com")
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_wildcard_and_preflight_needs_no_key(make_app):
    client = make_app(CORS_ORIGINS="*", API_KEY=KEY).test_client()
    r = client.options("/predict", headers={"Origin": "https://x.example",
                                            "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    r = post(client, Origin="https://x.example")
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == "*"
