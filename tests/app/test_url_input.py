"""{"url": ...} on /predict (ALLOW_URL_FETCH): fetched from a local server, and every guard
against server-side request forgery refusing: the URL's own faults each with its own message,
every host refused or not reached with the same one (url_unreachable).

Safety: no test sends traffic anywhere but 127.0.0.1. Non-loopback addresses come from a
patched `socket.getaddrinfo` (the DNS answer; url_fetch's own resolver code runs) and must be
refused before any connection; `guard` makes sure of it by failing any attempt to connect
elsewhere.
"""
from __future__ import annotations

import base64
import http.server
import ipaddress
import socket
import threading
import time
import urllib.parse

import pytest

from app import url_fetch
from app.errors import ApiError
from app.url_fetch import UNREACHABLE, UrlFetcher, address_problem
from harness.images import encode, photo

PNG = encode(photo(seed=7))
ANY_PORT = range(1, 65536)  # the local servers listen on free ports, not 80 or 443


class Handler(http.server.BaseHTTPRequestHandler):
    hosts: list[str] = []
    release = threading.Event()  # ends a /stall

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", ctype="image/png", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        Handler.hosts.append(self.headers.get("Host"))
        path = self.path
        if path in ("/img.png", "/%C3%BC%20a.png?q=%C3%BC%20a"):
            self._send(200, PNG)
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(302, headers=[("Location", f"/redirect/{n - 1}" if n else "/img.png")])
        elif path.startswith("/to?"):
            self._send(302, headers=[("Location", path[4:])])
        elif path == "/page":
            self._send(200, b"<html>hello</html>", "text/html")
        elif path == "/no-location":
            self._send(302)
        elif path == "/big":  # no Content-Length: the body ends when the connection closes
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 16384)
        elif path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
        elif path == "/stall":  # headers, then nothing until the test lets go (or 60 s)
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            Handler.release.wait(60)
        elif path.startswith("/length?"):  # Content-Length as given, in latin-1 as sent
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: "
                             + urllib.parse.unquote(path[8:]).encode("latin-1")
                             + b"\r\nConnection: close\r\n\r\n" + PNG)
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(30):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.1)
            except ConnectionError:
                pass  # the fetch gave up first, as the tests want
        else:
            self._send(404, b"nothing", "text/plain")


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(autouse=True)
def guard(monkeypatch):
    """Fail any connection to anything but loopback, and record where fetches connect."""
    real = socket.create_connection
    seen = []

    def create_connection(address, timeout=None, source_address=None):
        ip = ipaddress.ip_address(address[0])
        assert ip.is_loopback, f"test tried to connect to {address}"
        seen.append((address, timeout))
        return real(address, timeout, source_address)

    monkeypatch.setattr(url_fetch.socket, "create_connection", create_connection)
    return seen


def resolve_to(monkeypatch, *addresses):
    """Names under .example resolve to `addresses`, as getaddrinfo answers (an IPv6 address
    with its 4-tuple); any other name or a literal IP goes to the real getaddrinfo. Returns
    the names looked up."""
    real = socket.getaddrinfo
    calls = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if not str(host).endswith(".example"):
            return real(host, port, family, type, proto, flags)
        calls.append(host)
        answers = []
        for address in addresses:
            if ":" in address:
                answers.append((socket.AF_INET6, type or socket.SOCK_STREAM, 6, "",
                                (address, port, 0, 0)))
            else:
                answers.append((socket.AF_INET, type or socket.SOCK_STREAM, 6, "",
                                (address, port)))
        return answers * 2  # one per address and protocol, as a resolver may answer

    monkeypatch.setattr(url_fetch.socket, "getaddrinfo", getaddrinfo)
    return calls


def refusal(fetch, url) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as info:
        fetch(url)
    return info.value.status, info.value.code, info.value.message


@pytest.fixture()
def fetch():
    return UrlFetcher(max_bytes=100_000, allow_loopback=True, ports=ANY_PORT)


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def url_client(make_app, server):
    return make_app(ALLOW_URL_FETCH="1", ALLOW_URL_FETCH_LOOPBACK="1",
                    URL_FETCH_PORTS=port_of(server)).test_client()


def test_url_answers_like_an_upload(url_client, server):
    r = url_client.post("/predict", json={"url": server + "/img.png"})
    assert r.status_code == 200, r.get_json()
    same = url_client.post("/predict", json={"image": base64.b64encode(PNG).decode()})
    assert r.get_json() == same.get_json()


def test_refusals_are_400s_with_codes(url_client, server):
    for url, code in [(server + "/page", "url_not_image"), ("ftp://x/a.png", "url_not_allowed"),
                      (server + "/redirect/5", "url_too_many_redirects"), (42, "invalid_field")]:
        r = url_client.post("/predict", json={"url": url})
        assert r.status_code == 400 and r.get_json()["error"]["code"] == code, url


def test_loopback_is_refused_without_the_test_only_setting(make_app, server, guard):
    client = make_app(ALLOW_URL_FETCH="1", URL_FETCH_PORTS=port_of(server)).test_client()
    r = client.post("/predict", json={"url": server + "/img.png"})
    assert r.status_code == 400
    assert r.get_json()["error"] == {"code": "url_unreachable", "message": UNREACHABLE}
    assert not guard


def test_only_ports_80_and_443_unless_configured(make_app, monkeypatch, server, guard):
    calls = resolve_to(monkeypatch, "93.184.216.34")
    for url in ("http://photos.example:8080/a.jpg", "https://photos.example:8443/a.jpg",
                "http://photos.example:22/", "http://127.0.0.1:6379/", server + "/img.png"):
        status, code, message = refusal(UrlFetcher(100_000, allow_loopback=True), url)
        assert (status, code) == (400, "url_not_allowed") and "ports 80, 443" in message, url
    assert not calls and not guard  # refused from the URL alone: no lookup, no connection
    client = make_app(ALLOW_URL_FETCH="1").test_client()  # the default, through the app
    r = client.post("/predict", json={"url": "http://photos.example:8080/a.jpg"})
    assert r.get_json()["error"]["code"] == "url_not_allowed"
    assert UrlFetcher(100_000, ports=(8080,)).ports == (8080,)


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("127.53.0.9", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link-local"), ("100.64.0.1", "not a public address"),
    ("192.0.2.1", "private"),
])
def test_every_non_public_address_is_refused_before_connecting(monkeypatch, guard, address,
                                                                 kind):
    resolve_to(monkeypatch, address)
    assert kind in address_problem(address)  # the reason, for the server's log only
    status, code, message = refusal(UrlFetcher(100_000), "http://photos.example/a.jpg")
    assert (status, code, message) == (400, "url_unreachable", UNREACHABLE) and not guard


def test_public_addresses_pass_the_check():
    for address in ("93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert address_problem(address) is None


def test_loopback_setting_allows_loopback_only():
    assert address_problem("127.0.0.1", allow_loopback=True) is None
    assert address_problem("::1", allow_loopback=True) is None
    assert address_problem("10.0.0.1", allow_loopback=True) == "a private address"
    assert address_problem("169.254.169.254", allow_loopback=True) == "a link-local address"


def test_one_bad_address_among_good_ones_is_refused(monkeypatch, guard):
    resolve_to(monkeypatch, "93.184.216.34", "10.0.0.1")
    assert refusal(UrlFetcher(100_000), "http://photos.example/")[1] == "url_unreachable"
    assert not guard


def test_connects_to_the_checked_address_resolving_once(monkeypatch, server, guard, fetch):
    port = int(server.rsplit(":", 1)[1])
    calls = resolve_to(monkeypatch, "127.0.0.1")
    Handler.hosts.clear()
    assert fetch(f"http://photos.example:{port}/img.png") == PNG
    assert calls == ["photos.example"]  # one lookup
    assert [a for a, _ in guard] == [("127.0.0.1", port)]  # to the address checked
    assert Handler.hosts == [f"photos.example:{port}"]  # the URL's host, for virtual hosts
    assert guard[0][1] == url_fetch.CONNECT_TIMEOUT


@pytest.mark.parametrize("url, says", [
    ("ftp://127.0.0.1/a.png", "Only http and https"),
    ("file:///etc/passwd", "Only http and https"),
    ("gopher://127.0.0.1:70/", "Only http and https"),
    ("javascript:alert(1)", "Only http and https"),
    ("//127.0.0.1/a.png", "Only http and https"),
    ("http://user:secret@127.0.0.1/a.png", "user name or password"),
    ("http:///a.png", "no host"),
    ("http://127.0.0.1:99999/", "cannot be parsed"),
    ("http://[::1/", "cannot be parsed"),
    ("http://127.0.0.1/" + "a" * 3000, "longer than 2048"),
])
def test_urls_that_are_not_plain_http_are_refused(fetch, guard, url, says):
    status, code, message = refusal(fetch, url)
    assert (status, code) == (400, "url_not_allowed") and says in message
    assert not guard


def test_paths_are_sent_percent_encoded(fetch, server):
    assert fetch(server + "/ü a.png?q=ü a") == PNG  # as a browser would send it
    assert fetch(server + "/%C3%BC%20a.png?q=%C3%BC%20a") == PNG  # escapes stay as they are


def test_redirects_are_followed_three_times_at_most(fetch, server):
    assert fetch(server + "/redirect/2") == PNG  # 3 redirects
    status, code, message = refusal(fetch, server + "/redirect/3")
    assert code == "url_too_many_redirects" and "more than 3" in message


@pytest.mark.parametrize("target, code", [
    ("http://10.0.0.1/a.png", "url_unreachable"),
    ("http://169.254.169.254/latest/meta-data/", "url_unreachable"),
    ("http://[::ffff:192.168.0.1]/", "url_unreachable"),
    ("file:///etc/passwd", "url_not_allowed"),
])
def test_each_redirect_is_checked_again(fetch, server, guard, target, code):
    assert refusal(fetch, f"{server}/to?{target}")[1] == code
    assert len(guard) == 1  # only the first, local, hop was connected


def test_redirect_without_location(fetch, server):
    assert refusal(fetch, server + "/no-location")[1] == "url_fetch_failed"


def test_byte_cap_while_streaming_and_when_declared(fetch, server):
    assert refusal(fetch, server + "/big")[1] == "url_too_large"  # 1 MB streamed, cap 100 kB
    assert refusal(fetch, server + "/big-declared")[1] == "url_too_large"


def test_read_timeout(monkeypatch, fetch, server):
    # The stall lasts until released, far past every timeout but READ_TIMEOUT: a fetch that
    # times out within 20 s timed out on the read, however slow the machine.
    monkeypatch.setattr(url_fetch, "READ_TIMEOUT", 0.5)
    monkeypatch.setattr(url_fetch, "CONNECT_TIMEOUT", 60)
    monkeypatch.setattr(url_fetch, "TOTAL_TIMEOUT", 60)
    Handler.release.clear()
    started = time.monotonic()
    try:
        code, message = refusal(fetch, server + "/stall")[1:]
    finally:
        Handler.release.set()
    assert code == "url_fetch_failed" and "timed out" in message
    assert time.monotonic() - started < 20


def test_http_errors_and_non_images(fetch, server):
    code, message = refusal(fetch, server + "/missing")[1:]
    assert code == "url_fetch_failed" and "HTTP 404" in message
    code, message = refusal(fetch, server + "/page")[1:]
    assert code == "url_not_image" and "text/html" in message


def test_one_answer_for_every_host_refused_or_not_reached(monkeypatch, fetch, guard):
    """A blocked address, a name that does not resolve, one without addresses and a closed
    port answer alike: the answers say nothing of the network behind the server."""
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    answers = {"closed port": refusal(fetch, f"http://127.0.0.1:{closed}/")}
    resolve_to(monkeypatch, "10.0.0.7")
    answers["private"] = refusal(fetch, f"http://photos.example:{closed}/")
    resolve_to(monkeypatch)
    answers["no address"] = refusal(fetch, f"http://photos.example:{closed}/")

    def fail(host, port, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(url_fetch.socket, "getaddrinfo", fail)
    answers["no such name"] = refusal(fetch, "http://no-such-host.invalid/")
    assert set(answers.values()) == {(400, "url_unreachable", UNREACHABLE)}, answers
    assert [a for a, _ in guard] == [("127.0.0.1", closed)]  # only the loopback one connected
    assert "10.0.0.7" not in UNREACHABLE and "127.0.0.1" not in UNREACHABLE


@pytest.mark.parametrize("value, code", [
    ("\u00b2", "url_fetch_failed"),  # superscript two: str.isdigit() says yes, int() says no
    ("\u0663", "url_fetch_failed"),  # Arabic-Indic three: int() takes it (sent as UTF-8)
    ("-1", "url_fetch_failed"), ("1e3", "url_fetch_failed"), ("12, 12", "url_fetch_failed"),
    ("9" * 40, "url_fetch_failed"), ("9" * 25, "url_too_large"),
])
def test_a_bad_content_length_is_a_400(url_client, server, value, code):
    raw = value.encode("utf-8").decode("latin-1")  # the bytes a remote would send
    r = url_client.post("/predict", json={"url": f"{server}/length?{urllib.parse.quote(raw)}"})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == code, r.get_json()


def test_stream_reads_are_chunked(monkeypatch, server):
    # A body far over the cap is cut after about one chunk past it, not read whole.
    reads = []
    real = url_fetch.http.client.HTTPResponse.read1

    def read1(self, n=-1):
        data = real(self, n)
        reads.append(len(data))
        return data

    monkeypatch.setattr(url_fetch.http.client.HTTPResponse, "read1", read1)
    with pytest.raises(ApiError):
        UrlFetcher(max_bytes=50_000, allow_loopback=True)(server + "/big")
    assert sum(reads) < 50_000 + 2 * url_fetch.CHUNK


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An https server on 127.0.0.1 with a self-signed certificate for "photos.example"."""
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=photos.example", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], folder / "cert.pem"
    httpd.shutdown()


def test_https_goes_to_the_checked_address_and_verifies_the_host(monkeypatch, tls_server,
                                                                  guard, fetch):
    import ssl

    port, cert = tls_server
    resolve_to(monkeypatch, "127.0.0.1")
    # An untrusted certificate is refused: TLS verification stays on through the pinning.
    code, message = refusal(fetch, f"https://photos.example:{port}/img.png")[1:]
    assert code == "url_fetch_failed" and "CERTIFICATE_VERIFY_FAILED" in message  # not generic:
    # TLS failed on a host that accepted the connection
    # Trusting it, the fetch works, connected to the checked address, the name verified.
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context",
                        lambda: (lambda c: (c.load_verify_locations(cert), c)[1])(real()))
    assert fetch(f"https://photos.example:{port}/img.png") == PNG
    assert {a for a, _ in guard} == {("127.0.0.1", port)}
    code, message = refusal(fetch, f"https://other.example:{port}/img.png")[1:]
    assert code == "url_fetch_failed" and "other.example" in message  # hostname mismatch
