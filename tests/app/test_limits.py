"""Per-client budgets (app/limits.py): 429 `rate_limited` with Retry-After per budget and
per client, the trusted proxy header only when configured, the explanation cap, and
metric labels that clients cannot multiply."""
from __future__ import annotations

import io

import pytest

from app.limits import EXTENSION, ClientLimits
from harness.images import encode, photo

PNG = encode(photo(seed=31), "PNG")


@pytest.fixture()
def limited(make_app, tmp_path_factory):
    """An app with small budgets, its counts fresh for each test."""
    def make(**config):
        app = make_app(**{"PREDICT_RATE": "2/minute", "EXPLAIN_RATE": "3/minute",
                          "FEEDBACK_RATE": "1/minute", "MAX_EXPLANATIONS": "2", **config})
        app.extensions[EXTENSION] = ClientLimits(app.extensions["settings"])
        return app
    return make


def predict(client, query="", files=1, **kwargs):
    data = {"file": [(io.BytesIO(PNG), f"{i}.png") for i in range(files)]}
    return client.post("/predict" + query, data=data, **kwargs)


def assert_limited(r):
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    if r.mimetype == "text/html":  # the form's page
        assert b"(rate_limited)" in r.data
    else:
        assert r.get_json()["error"]["code"] == "rate_limited"
        assert "per 1 minute" in r.get_json()["error"]["message"]


def test_predict_budget_per_address(limited):
    client = limited().test_client()
    assert [predict(client).status_code for _ in range(2)] == [200, 200]
    assert_limited(predict(client))
    # The form's POST / draws on the same budget.
    assert_limited(client.post("/", data={"file": (io.BytesIO(PNG), "a.png")}))
    # Another address has its own.
    assert predict(client, environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 200


def test_ipv6_clients_count_by_their_64(limited):
    client = limited().test_client()
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::ffff"):
        assert predict(client, environ_base={"REMOTE_ADDR": host}).status_code == 200
    assert_limited(predict(client, environ_base={"REMOTE_ADDR": "2001:db8:1:2:abcd::9"}))
    assert predict(client, environ_base={"REMOTE_ADDR": "2001:db8:1:3::1"}).status_code == 200


def test_key_holders_share_the_key_budget_wherever_they_are(limited):
    client = limited(API_KEY="s3cret").test_client()
    key = {"X-API-Key": "s3cret"}
    for host in ("192.0.2.1", "192.0.2.2"):
        assert predict(client, headers=key, environ_base={"REMOTE_ADDR": host}).status_code \
            == 200
    assert_limited(predict(client, headers=key, environ_base={"REMOTE_ADDR": "192.0.2.3"}))
    # Without the key a client counts by its address: answered 401, not 429.
    assert predict(client, environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 401


def test_client_ip_header_is_trusted_only_when_configured(limited):
    trusting = limited(CLIENT_IP_HEADER="Fly-Client-IP").test_client()
    for ip in ("203.0.113.1", "203.0.113.2"):  # one proxy address, two clients
        assert predict(trusting, headers={"Fly-Client-IP": ip}).status_code == 200
        assert predict(trusting, headers={"Fly-Client-IP": ip}).status_code == 200
        assert_limited(predict(trusting, headers={"Fly-Client-IP": ip}))

    plain = limited().test_client()  # the header is anyone's to send: ignored
    assert [predict(plain, headers={"Fly-Client-IP": f"203.0.113.{i}"}).status_code
            for i in range(2)] == [200, 200]
    assert_limited(predict(plain, headers={"Fly-Client-IP": "203.0.113.3"}))


def test_explanations_have_their_own_budget_counted_per_image(limited):
    client = limited(PREDICT_RATE="100/minute").test_client()
    assert predict(client, "?explain=1", files=2).status_code == 200
    r = predict(client, "?explain=1", files=2)  # 2 + 2 > 3
    assert r.status_code == 429 and "explained images" in r.get_json()["error"]["message"]
    assert "Retry-After" in r.headers
    assert predict(client, "?explain=1").status_code == 200  # 2 + 1 = 3
    assert predict(client, files=2).status_code == 200  # predictions alone are not held up


def test_explanations_per_request_are_capped(limited):
    client = limited(PREDICT_RATE="100/minute", EXPLAIN_RATE="100/minute").test_client()
    r = predict(client, "?explain=1", files=3)
    assert (r.status_code, r.get_json()["error"]["code"]) == (400, "too_many_explanations")
    assert "at most 2" in r.get_json()["error"]["message"]
    assert predict(client, files=3).status_code == 200


def test_feedback_budget(limited, tmp_path):
    client = limited(FEEDBACK_DIR=str(tmp_path)).test_client()
    assert client.post("/feedback?label=red", data=PNG, content_type="image/png"
                       ).status_code == 201
    r = client.post("/feedback?label=red", data=PNG, content_type="image/png")
    assert r.status_code == 429 and "corrections" in r.get_json()["error"]["message"]
    assert predict(client).status_code == 200  # a separate budget


def test_unknown_methods_share_one_metric_label(client):
    for method in ("BREW", "PROPFIND", "XYZZYQ"):
        assert client.open("/healthz", method=method).status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="other"' in text
    assert not any(m in text for m in ("BREW", "PROPFIND", "XYZZYQ"))
