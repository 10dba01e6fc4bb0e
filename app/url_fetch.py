"""Fetching an image from a URL for {"url": ...} on /predict (ALLOW_URL_FETCH), safely.

A server that fetches URLs for strangers can be pointed at its own network
(server-side request forgery: cloud metadata at 169.254.169.254, admin ports on
localhost, the private LAN). So: http and https only; the host is resolved once and
every address it resolves to must be public (no loopback, private, link-local,
multicast, reserved or unspecified address, IPv4 or IPv6, IPv4-mapped included); the
connection goes to the address that was checked, so a second DNS answer cannot swap
it; each of at most MAX_REDIRECTS redirects is checked the same way; connect, read and
total time are bounded, the body is cut at the upload limit, and it must be an image.
Every refusal is an ApiError 400 whose code and message say why.
"""
from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import time
from urllib.parse import urljoin, urlsplit

from PIL import Image, UnidentifiedImageError

from app.errors import ApiError
from classifier.decode_guard import check_structure
from classifier.images import ALLOWED_FORMATS, DEFAULT_MAX_IMAGE_PIXELS

SCHEMES = {"http": 80, "https": 443}
MAX_REDIRECTS = 3
CONNECT_TIMEOUT = 5.0  # seconds to open the connection
READ_TIMEOUT = 10.0  # seconds any one read may wait
TOTAL_TIMEOUT = 30.0  # seconds for the whole fetch, redirects included
CHUNK = 64 * 1024
USER_AGENT = "image-classifier-url-fetch/1.0"
# Checked in this order, so 169.254.169.254 is named link-local rather than private.
ADDRESS_KINDS = (("unspecified", "an unspecified address"), ("loopback", "a loopback address"),
                 ("link_local", "a link-local address"), ("multicast", "a multicast address"),
                 ("reserved", "a reserved address"), ("private", "a private address"))
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def _refuse(code: str, message: str) -> ApiError:
    return ApiError(code, message)


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, each once (one DNS lookup)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_problem(text: str, allow_loopback: bool = False) -> str | None:
    """Why a fetch must not connect to this IP address, or None when it may."""
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 reaches 10.0.0.1
    if allow_loopback and any(address in net for net in LOOPBACK
                              if net.version == address.version):
        return None
    for kind, words in ADDRESS_KINDS:
        if getattr(address, f"is_{kind}"):
            return words
    if not address.is_global:
        return "not a public address"
    return None


class _PinnedConnection:
    """http.client connections to one checked IP, with the URL's host for Host and TLS."""

    @staticmethod
    def open(scheme: str, host: str, port: int, ip: str, timeout: float):
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)

        def connect_to_checked_ip(address, timeout=None, source_address=None):
            return socket.create_connection((ip, port), timeout, source_address)

        conn._create_connection = connect_to_checked_ip  # TLS still verifies `host`
        return conn


class UrlFetcher:
    def __init__(self, max_bytes: int, allow_loopback: bool = False):
        self.max_bytes = max_bytes
        self.allow_loopback = allow_loopback

    def __call__(self, url: str) -> bytes:
        deadline = time.monotonic() + TOTAL_TIMEOUT
        for _ in range(MAX_REDIRECTS + 1):
            response, conn = self._get(url, deadline)
            try:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.getheader("Location")
                    if not location:
                        raise _refuse("url_fetch_failed", f"{_short(url)} redirected nowhere "
                                      "(no Location header).")
                    url = urljoin(url, location)
                    continue
                if response.status != 200:
                    raise _refuse("url_fetch_failed", f"{_short(url)} answered HTTP "
                                  f"{response.status} {response.reason}, not an image.")
                data = self._read(response, url, deadline)
            finally:
                conn.close()
            _check_image(data, url, response.getheader("Content-Type"))
            return data
        raise _refuse("url_too_many_redirects",
                      f"The URL redirected more than {MAX_REDIRECTS} times; not followed.")

    def _target(self, url: str):
        """(scheme, host, port, checked ip, path) or a refusal saying why not."""
        if len(url) > 2048:
            raise _refuse("url_not_allowed", "The URL is longer than 2048 characters.")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise _refuse("url_not_allowed", f"The URL cannot be parsed: {exc}.") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise _refuse("url_not_allowed", f"Only http and https URLs are fetched, not "
                          f"{(scheme or '(none)')[:20]!r}.")
        if parts.username is not None or parts.password is not None:
            raise _refuse("url_not_allowed", "URLs with a user name or password are not "
                          "fetched.")
        host = parts.hostname
        if not host:
            raise _refuse("url_not_allowed", "The URL has no host.")
        port = port or SCHEMES[scheme]
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise _refuse("url_fetch_failed", f"The host {host[:100]!r} could not be "
                          f"resolved ({exc}).") from None
        if not addresses:
            raise _refuse("url_fetch_failed", f"The host {host[:100]!r} has no address.")
        for address in addresses:
            problem = address_problem(address, self.allow_loopback)
            if problem:
                raise _refuse("url_blocked_address", f"The host {host[:100]!r} resolves to "
                              f"{address}, {problem}: this server fetches only from public "
                              "addresses.")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return scheme, host, port, addresses[0], path

    def _get(self, url: str, deadline: float):
        scheme, host, port, ip, path = self._target(url)
        conn = _PinnedConnection.open(scheme, host, port, ip, CONNECT_TIMEOUT)
        try:
            conn.connect()
            conn.sock.settimeout(min(READ_TIMEOUT, max(0.01, deadline - time.monotonic())))
            conn.request("GET", path, headers={"User-Agent": USER_AGENT,
                                               "Accept": "image/*"})
            return conn.getresponse(), conn
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _refuse("url_fetch_failed", f"{_short(url)} could not be fetched: "
                          f"{_reason(exc)}.") from None

    def _read(self, response, url: str, deadline: float) -> bytes:
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(self.max_bytes)
        buf = io.BytesIO()
        try:
            while True:
                if time.monotonic() > deadline:
                    raise _refuse("url_fetch_failed", f"{_short(url)} took longer than "
                                  f"{TOTAL_TIMEOUT:g} s to download.")
                chunk = response.read1(CHUNK)
                if not chunk:
                    return buf.getvalue()
                buf.write(chunk)
                if buf.tell() > self.max_bytes:
                    raise _too_large(self.max_bytes)
        except (OSError, http.client.HTTPException) as exc:
            raise _refuse("url_fetch_failed", f"{_short(url)} could not be read: "
                          f"{_reason(exc)}.") from None


def _check_image(data: bytes, url: str, content_type: str | None) -> None:
    """Refuse a page or any other non-image before it goes further (headers only)."""
    try:
        check_structure(data, DEFAULT_MAX_IMAGE_PIXELS)  # Image.open itself can amplify
        Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise _refuse("url_not_image", f"{_short(url)} is not an image we can read "
                      f"(it sent {(content_type or 'no Content-Type')[:60]}, "
                      f"{len(data)} bytes).") from None


def _too_large(max_bytes: int) -> ApiError:
    return _refuse("url_too_large", f"The image at the URL is larger than "
                   f"{max_bytes / 2**20:g} MB; not downloaded.")


def _reason(exc: Exception) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return (str(exc) or type(exc).__name__)[:120]


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."


def fetcher_for(settings) -> UrlFetcher:
    return UrlFetcher(settings.max_content_length, settings.allow_url_fetch_loopback)
