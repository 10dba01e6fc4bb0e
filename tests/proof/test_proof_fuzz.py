"""Hostile input against /predict and the form, through a real gunicorn: never a 5xx.

CI runs a bounded slice (the generated corpus once, Hypothesis with few examples);
benchmarks/fuzz_long.py runs the long version. PROOF_EXAMPLES raises the Hypothesis budget.
"""
from __future__ import annotations

import os
import random
import socket
import threading
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import load_settings
from harness.hostile_cases import corpus
from harness.hostile_images import bitflipped, bombs
from harness.images import EXT, FORMATS, MIME, image_bytes, truncated
from harness.judge import Case, Tally, error_code, run_cases
from harness.raw_http import (
    Outcome,
    http_request,
    multipart,
    raw_upload,
    read_response,
    send,
    upload,
)
from harness.shipped_config import gunicorn_settings
from harness.waiting import run_in_threads, wait_until
from tests.proof.conftest import PROOF_ENV, record_figures

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = int(os.environ.get("PROOF_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
MAX_UPLOAD_MB = float(PROOF_ENV["MAX_UPLOAD_MB"])
MAX_BATCH = int(PROOF_ENV["MAX_BATCH"])
READ_TIMEOUT = load_settings(PROOF_ENV).read_timeout  # a stalled upload is cut off after it

TALLY = Tally()  # every request this module sends, for the figures


@pytest.fixture(scope="module")
def server(proof_server):
    proof_server.start_pids = proof_server.worker_pids()
    return proof_server


def fire(server, case: Case) -> Outcome:
    out = send(server.port, case.raw, timeout=case.timeout)
    problems = TALLY.add(case, out)
    assert not problems, f"{case.name}: {problems}\n{server.log_tail(15)}"
    return out


def test_generated_corpus_never_5xx(server):
    cases = corpus(max_upload_mb=MAX_UPLOAD_MB, max_batch=MAX_BATCH, seed=0)
    tally = run_cases(server.port, cases)
    TALLY.cases += tally.cases
    TALLY.statuses.update(tally.statuses)
    TALLY.codes.update(tally.codes)
    TALLY.server_errors += tally.server_errors
    print(f"\ncorpus: {tally.cases} cases, statuses {dict(tally.statuses)}, "
          f"codes {dict(tally.codes)}")
    assert tally.server_errors == 0
    assert not tally.problems, "\n".join(tally.problems[:40])


def test_bombs_are_refused_as_too_large(server):
    """Files declaring more pixels than MAX_IMAGE_PIXELS: 413 image_too_large, API and form."""
    for name, data in bombs().items():
        if name.endswith("badcrc"):
            continue  # a broken header is refused as invalid before its size is believed
        out = fire(server, Case(name, upload("/predict", data, name), "error"))
        assert (out.status, error_code(out)) == (413, "image_too_large"), name
        form = fire(server, Case(name + "/form", upload("/", data, name), "error", api=False))
        assert form.status == 413, name


def test_oversized_body_gets_413_json(server):
    body = os.urandom(int(MAX_UPLOAD_MB * 2**20) + 4096)
    out = fire(server, Case("oversize", upload("/predict", body, "big.png", "image/png"),
                              "error"))
    assert (out.status, error_code(out)) == (413, "payload_too_large")


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(server, data):
    fire(server, Case("hyp_bytes", upload("/predict", data, "x.jpg", "image/jpeg"), "error"))
    if data:
        fire(server, Case("hyp_bytes_raw", raw_upload(data, "image/jpeg"), "error"))


@FUZZ
@given(fmt=st.sampled_from(FORMATS), cut=st.floats(0, 1), seed=st.integers(0, 2**16),
       flips=st.integers(0, 16), width=st.integers(1, 120), height=st.integers(1, 120))
def test_damaged_images_same_answer_on_api_and_form(server, fmt, cut, seed, flips, width, height):
    data = image_bytes(fmt, (width, height), seed=seed)
    data = bitflipped(truncated(data, cut) if cut < 1 else data, random.Random(seed), flips)
    api = fire(server, Case("hyp_damaged", upload("/predict", data, f"x.{EXT[fmt]}",
                                                       MIME[fmt]), "any"))
    form = fire(server, Case("hyp_damaged/form", upload("/", data, f"x.{EXT[fmt]}",
                                                            MIME[fmt]), "any", api=False))
    assert api.status == form.status, "the form and the API disagree about the same file"


@FUZZ
@given(ctype=st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
       valid=st.booleans())
def test_any_content_type(server, ctype, valid):
    data = image_bytes("PNG") if valid else b"not an image"
    # DEL is a control character RFC 9110 forbids in a field value: gunicorn answers that
    # malformed HTTP with its own 400, as it does a NUL (hostile_cases.lying_type_cases).
    level = "http" if "\x7f" in ctype else "any" if valid else "error"
    fire(server, Case("hyp_ctype_raw", raw_upload(data, ctype), level))
    fire(server, Case("hyp_ctype_part", upload("/predict", data, "x", ctype),
                        "any" if valid else "error"))


PIECES = st.sampled_from([b"--B", b"--B--", b"\r\n", b"\n", b"\r\n\r\n",
                          b'Content-Disposition: form-data; name="file"; filename="a.png"',
                          b'Content-Disposition: form-data; name="file"',
                          b"Content-Disposition: form-data", b"Content-Type: image/png",
                          b'name="file"', b";", b"\x00", b"--", b"B"])


@FUZZ
@given(pieces=st.lists(st.one_of(PIECES, st.binary(max_size=64), st.just(b"PNG")), max_size=40),
       boundary=st.sampled_from(["B", "", "B; charset=x", '"B"', "B" * 200, "Z"]))
def test_malformed_multipart(server, pieces, boundary):
    png = image_bytes("PNG", (8, 8))
    body = b"".join(png if p == b"PNG" else p for p in pieces)
    ctype = "multipart/form-data; boundary=" + boundary
    fire(server, Case("hyp_multipart", http_request(
        "POST", "/predict", [("Content-Type", ctype)], body), "any"))
    fire(server, Case("hyp_multipart/form", http_request(
        "POST", "/", [("Content-Type", ctype)], body), "any", api=False))


def test_workers_survived_and_memory_bounded(server):
    """After everything above: the same workers, ready, and memory within 100 MB of the
    baseline taken once every worker had warmed up (conftest's proof_server)."""
    assert server.alive()
    assert server.ready()
    assert server.worker_pids() == server.start_pids, (
        f"workers were replaced during the fuzz run:\n{server.log_tail(30)}")
    watch = server.watch
    mb = 2**20
    figures = {"fuzz_cases": TALLY.cases, "fuzz_5xx": TALLY.server_errors,
               "fuzz_no_response": TALLY.no_response,
               "fuzz_statuses": {str(k): v for k, v in TALLY.statuses.items()},
               "fuzz_codes": dict(TALLY.codes),
               "fuzz_rss_baseline_mb": round(watch.baseline_rss / mb),
               "fuzz_rss_peak_mb": round(watch.peak_rss / mb),
               "fuzz_pss_peak_mb": round(watch.peak_pss / mb),
               "fuzz_rss_after_mb": round(server.rss_bytes() / mb)}
    record_figures(**figures)
    print("\n", figures)
    assert TALLY.server_errors == 0
    # 2 workers decoding at most 4 MP images: a few tens of MB each at most, no leak.
    assert watch.peak_rss - watch.baseline_rss < 600 * mb, figures
    assert server.rss_bytes() - watch.baseline_rss < 100 * mb, figures


# ---------------------------------------------------------------- slow clients
def _capacity() -> int:
    s = gunicorn_settings(PROOF_ENV)
    return int(s.get("workers", 1)) * max(1, int(s.get("threads", 1)))


def _probe(server, timeout: float = 20.0) -> float | None:
    """Seconds a normal prediction took, or None if it did not come back in time."""
    start = time.monotonic()
    try:
        r = requests.post(server.url + "/predict", timeout=timeout,
                          files={"file": ("a.png", image_bytes("PNG"), "image/png")})
    except requests.RequestException:
        return None
    return time.monotonic() - start if r.status_code == 200 else None


DRIBBLE_BYTES, DRIBBLE_PAUSE = 60, 0.05


def answered_or_closed(out) -> bool:
    """A dribbler's end that is fine: an answer under 500, or the server closing on it. A
    timeout on either side is not: that client was left hanging."""
    if isinstance(out, Outcome):
        return out.status < 500 if out.status is not None else "timeout" not in out.error
    return isinstance(out, ConnectionError)


def test_slow_dribbling_clients_do_not_starve_others(server):
    """More dribbling clients than worker threads (1 byte per 50 ms for the first 60 bytes):
    a normal request is still served promptly, and every dribbler gets an answer or a close
    (each in its own thread: one still running at the end, or one whose answer never came,
    fails the test)."""
    # A dribbler holds a thread while it dribbles, and a client may then pause up to
    # READ_TIMEOUT: the probe waits at most that long for a thread.
    window = DRIBBLE_BYTES * DRIBBLE_PAUSE + READ_TIMEOUT
    n = _capacity() + 2
    raw = upload("/predict", image_bytes("PNG", (8, 8)), "a.png", "image/png")

    def dribble() -> Outcome:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            for byte in raw[:DRIBBLE_BYTES]:
                sock.sendall(bytes([byte]))
                time.sleep(DRIBBLE_PAUSE)
            sock.sendall(raw[DRIBBLE_BYTES:])
            return read_response(sock, timeout=30)

    def probe_among_them() -> float | None:
        time.sleep(1.0)
        return _probe(server, timeout=2 * window)

    *dribblers, took = run_in_threads(lambda i: dribble() if i < n else probe_among_them(),
                                      n + 1, timeout=1 + 2 * window + 30)
    assert took is not None and took < window, (
        f"a normal request waited {took}s behind dribblers (allowed {window}s)")
    left_hanging = [out for out in dribblers if not answered_or_closed(out)]
    assert not left_hanging, f"{len(left_hanging)} of {n} dribblers: {left_hanging}"
    assert server.ready()


def test_stalled_clients_are_cut_off_and_do_not_starve_others(server):
    """Clients that send headers and part of the body, then stall, one more than there are
    worker threads. Each gets 400 bad_request once it has been silent for READ_TIMEOUT, which
    frees its thread: the extra one waits a round for a thread, so all are answered within two
    rounds, and a normal request waiting behind them is answered too."""
    n = _capacity() + 1
    rounds = -(-n // _capacity())
    limit = rounds * READ_TIMEOUT + 10  # + slack for a loaded 2-core machine
    png = image_bytes("PNG")
    ctype, body = multipart([("file", "a.png", "image/png", png)])
    head = http_request("POST", "/predict", [("Content-Type", ctype)], body)
    head = head[:len(head) - len(body) + 100]  # headers and the first 100 body bytes
    socks, outcomes, probe = [], {}, {}

    def answer(i, sock):
        outcomes[i] = read_response(sock, timeout=limit)

    try:
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(head)
            socks.append(sock)
        start = time.monotonic()
        readers = [threading.Thread(target=answer, args=(i, sock)) for i, sock in enumerate(socks)]
        for t in readers:
            t.start()
        time.sleep(1.0)
        prober = threading.Thread(target=lambda: probe.update(took=_probe(server, 2 * limit)))
        prober.start()
        for t in readers:
            t.join(timeout=limit + 5)
        waited = time.monotonic() - start
        prober.join(timeout=2 * limit)
    finally:
        for sock in socks:
            sock.close()
    answers = [(o.status, error_code(o)) for o in outcomes.values()]
    took = probe.get("took")
    record_figures(stalled_clients=n, stalled_answered=len(answers),
                   stalled_close_wait_s=round(waited, 1),
                   probe_behind_stalled_s=None if took is None else round(took, 2))
    assert answers == [(400, "bad_request")] * n, (
        f"{n} stalled uploads (READ_TIMEOUT {READ_TIMEOUT}s, allowed {limit}s): {answers} "
        f"{[o.error for o in outcomes.values()]}")
    assert took is not None, (f"with {n} stalled clients (capacity {_capacity()}), a normal "
                              f"request got no answer within {2 * limit}s")
    assert wait_until(server.ready, 30) and server.alive()
