"""URL input held to its deadline (app/url_exchange.py): every stall of a hostile server ends at
the one deadline, DNS lookups never take the model's threads, and a fetch ends when its client
leaves.

Safety: the hostile server listens on 127.0.0.1 only; fetches reach it through
ALLOW_URL_FETCH_LOOPBACK's test-only allowance and a port list that names its port.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from app import url_exchange, url_fetch
from app.url_fetch import UNREACHABLE, UrlFetcher
from harness import ROOT
from harness.images import encode, photo
from harness.servers import GunicornServer
from harness.waiting import wait_until

PNG = encode(photo(seed=7))
GIVE_UP = 15.0  # seconds a stall lasts at most: far past the deadlines the tests set
TICK = 0.05  # seconds between the trickled bytes


class HostileServer:
    """Answers `GET /<stall>` by stalling as named, a few bytes every TICK, each read by the
    fetch well within any per-read timeout; only a deadline over the whole exchange ends it.
    A TLS hello gets no answer at all. `closed` records when each stall's connection closed."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requested = threading.Event()
        self.closed: list[tuple[str, float]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        stall = "tls"
        with conn:
            try:
                first = conn.recv(1, socket.MSG_PEEK)
                if first == b"\x16":  # a TLS ClientHello: never answer it
                    self._trickle(conn, [])
                    return
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                self.requested.set()
                stall = head.split(b" ", 2)[1].decode().strip("/")
                getattr(self, f"_{stall}")(conn)
            except OSError:
                pass
            finally:
                self.closed.append((stall, time.monotonic()))

    def _trickle(self, conn, parts, then=b""):
        """Send `then`, then the parts one per TICK (repeating the last) until GIVE_UP or
        until the fetch closes the connection."""
        conn.sendall(then)
        end = time.monotonic() + GIVE_UP
        part = b""
        while time.monotonic() < end:
            part = parts.pop(0) if parts else part
            if part:
                conn.sendall(part)
            elif _closed_by_peer(conn, TICK):
                return
            time.sleep(TICK)

    def _continue(self, conn):  # an endless run of 100 Continue
        self._trickle(conn, [b"HTTP/1.1 100 Continue\r\n\r\n"])

    def _status(self, conn):  # a status line a byte at a time (its reason never ends)
        self._trickle(conn, [b"K"], then=b"HTTP/1.1 200 O")

    def _headers(self, conn):  # one header whose value never ends
        self._trickle(conn, [b"a"], then=b"HTTP/1.1 200 OK\r\nX-Slow: ")

    def _trailers(self, conn):  # the whole image, then trailer lines without end
        body = b"%x\r\n%s\r\n0\r\n" % (len(PNG), PNG)
        self._trickle(conn, [b"X-Trailer: 1\r\n"],
                      then=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)

    def _body(self, conn):  # a declared body sent a byte at a time
        self._trickle(conn, [b"\0"], then=b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")

    def _hold(self, conn):  # headers, then a byte a second: only the deadline or a close ends it
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        end = time.monotonic() + GIVE_UP * 4
        while time.monotonic() < end and not _closed_by_peer(conn, 1.0):
            conn.sendall(b"\0")

    def close(self):
        self.listener.close()


def _closed_by_peer(conn: socket.socket, wait: float) -> bool:
    """Whether the other end closed the connection (waiting up to `wait` s to see)."""
    conn.settimeout(wait)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        conn.settimeout(None)


@pytest.fixture(scope="module")
def hostile():
    server = HostileServer()
    yield server
    server.close()


@pytest.fixture()
def short_deadline(monkeypatch):
    """A 1 s deadline; every other timeout far longer, so only the deadline can end a stall."""
    monkeypatch.setattr(url_fetch, "TOTAL_TIMEOUT", 1.0)
    for name in ("READ_TIMEOUT", "CONNECT_TIMEOUT", "DNS_TIMEOUT"):
        monkeypatch.setattr(url_fetch, name, 60.0)


@pytest.mark.usefixtures("short_deadline")
@pytest.mark.parametrize("stall", ["continue", "status", "headers", "trailers", "body"])
def test_each_stall_ends_at_the_deadline(hostile, stall):
    fetch = UrlFetcher(10**6, allow_loopback=True, ports=(hostile.port,))
    started = time.monotonic()
    with pytest.raises(url_fetch.ApiError) as info:
        fetch(f"{hostile.url}/{stall}")
    took = time.monotonic() - started
    assert info.value.code == "url_fetch_failed"
    assert "took longer than 1 s" in info.value.message, info.value.message
    assert took < GIVE_UP / 2, took  # the stall would have lasted GIVE_UP


@pytest.mark.usefixtures("short_deadline")
def test_a_stalled_tls_handshake_ends_at_the_deadline(hostile):
    fetch = UrlFetcher(10**6, allow_loopback=True, ports=(hostile.port,))
    started = time.monotonic()
    with pytest.raises(url_fetch.ApiError) as info:
        fetch(f"https://127.0.0.1:{hostile.port}/img.png")
    assert "took longer than 1 s" in info.value.message, info.value.message
    assert time.monotonic() - started < GIVE_UP / 2


def test_a_stalled_lookup_ends_at_its_own_timeout(monkeypatch):
    release = threading.Event()

    def stalled(*args, **kwargs):
        release.wait(GIVE_UP)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", stalled)
    monkeypatch.setattr(url_fetch, "DNS_TIMEOUT", 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(url_fetch.ApiError) as info:
            UrlFetcher(10**6)("http://slow-dns.example/a.png")
    finally:
        release.set()
    assert (info.value.code, info.value.message) == ("url_unreachable", UNREACHABLE)
    assert time.monotonic() - started < GIVE_UP / 2


# Run under gevent, as the served worker does: the hub's pool (the decoding and model threads,
# app/event_loop.py) has one thread, and four lookups stall for 3 s in the DNS threads.
GEVENT_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import _socket, json, gevent
from app import url_exchange
from app.event_loop import off_event_loop
gevent.get_hub().threadpool.maxsize = 1
real, sleep = _socket.getaddrinfo, monkey.get_original("time", "sleep")
def slow(*args, **kwargs):
    sleep(3)
    return real(*args, **kwargs)
_socket.getaddrinfo = slow
clock = monkey.get_original("time", "monotonic")
started = clock()
lookups = [gevent.spawn(url_exchange.lookup, "localhost", 80, 0.5) for _ in range(4)]
gevent.sleep(0.2)
model_started = clock()
off_event_loop(lambda: 42)
model_waited = clock() - model_started
gevent.joinall(lookups)
print(json.dumps({"model_waited": model_waited, "lookups": clock() - started,
                  "errors": [type(g.exception).__name__ for g in lookups]}))
"""


def test_stalled_lookups_leave_the_model_threads_alone():
    out = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model_waited"] < 1.5, result  # not behind a 3 s lookup
    assert result["errors"] == ["DnsTimedOut"] * 4 and result["lookups"] < 2.5, result


def test_the_deadline_closes_what_it_abandons():
    deadline = url_exchange.FetchDeadline(30, 10)
    a, b = socket.socketpair()
    deadline.sockets.append(a)
    deadline.abandon()
    with pytest.raises(url_exchange.FetchAbandoned):
        deadline.wait_limit()
    assert a.fileno() == -1
    b.close()


@pytest.mark.e2e
def test_the_fetch_ends_when_its_client_leaves(model_dir, hostile):
    """The real server fetches a body that trickles for a minute; the client hangs up; the
    fetch's connection must close within seconds, not at the 30 s deadline."""
    env = {"ALLOW_URL_FETCH": "1", "ALLOW_URL_FETCH_LOOPBACK": "1",
           "URL_FETCH_PORTS": str(hostile.port), "WEB_CONCURRENCY": "1"}
    with GunicornServer(model_dir / "export.pkl", env=env) as server:
        body = json.dumps({"url": f"{hostile.url}/hold"}).encode()
        hostile.requested.clear()
        client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                       b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert hostile.requested.wait(30), server.log_tail()
        time.sleep(1.0)  # the fetch is reading the trickle
        client.close()
        left = time.monotonic()
        assert wait_until(lambda: any(s == "hold" for s, _ in hostile.closed), timeout=40)
        closed = next(t for s, t in hostile.closed if s == "hold")
        assert closed - left < 5, closed - left  # the deadline would have been 30 s
