"""Fetching an image from a URL for {"url": ...} on /predict (ALLOW_URL_FETCH), safely.

A server that fetches URLs for strangers can be pointed at its own network
(server-side request forgery: cloud metadata at 169.254.169.254, admin ports on
localhost, the private LAN). So: http and https only, on the ports of URL_FETCH_PORTS
(80 and 443); the host is resolved once and every address it resolves to must be public
(no loopback, private, link-local, multicast, reserved or unspecified address, IPv4 or
IPv6, IPv4-mapped included); the connection goes to the address that was checked, so a
second DNS answer cannot swap it; each of at most MAX_REDIRECTS redirects is checked the
same way. A host that is refused, does not resolve or does not accept the connection gets
one answer, `url_unreachable`, whatever the reason (logged here): the answers cannot map
the internal network. One deadline covers the whole exchange, the body is cut at the
upload limit, and it must be an image (app/url_exchange.py does the network side).
"""
from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import re
import socket
import ssl
import string
from urllib.parse import quote, urljoin, urlsplit

from PIL import Image, UnidentifiedImageError

from app.errors import ApiError
from app.url_exchange import (
    FetchDeadline,
    abandoned_if_client_leaves,
    lookup,
    open_connection,
)
from classifier.decode_guard import check_structure
from classifier.image_files import ALLOWED_FORMATS
from classifier.images import DEFAULT_MAX_IMAGE_PIXELS

log = logging.getLogger(__name__)

SCHEMES = {"http": 80, "https": 443}
MAX_REDIRECTS = 3
CONNECT_TIMEOUT = 5.0  # seconds to open the connection
DNS_TIMEOUT = 5.0  # seconds for one DNS lookup
READ_TIMEOUT = 10.0  # seconds any one read may wait
TOTAL_TIMEOUT = 30.0  # seconds for the whole exchange: DNS, connect, TLS, headers, body; redirects
CHUNK = 64 * 1024
USER_AGENT = "image-classifier-url-fetch/1.0"
# Checked in this order, so 169.254.169.254 is named link-local rather than private.
ADDRESS_KINDS = (("unspecified", "an unspecified address"), ("loopback", "a loopback address"),
                 ("link_local", "a link-local address"), ("multicast", "a multicast address"),
                 ("reserved", "a reserved address"), ("private", "a private address"))
PATH_SAFE = string.punctuation  # left as they are: all printable ASCII but the space
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
CONTENT_LENGTH = re.compile(r"[0-9]{1,30}")  # ASCII digits: int() would also take "٣" or "²"
# Failures of the exchange itself; ValueError: http.client's parse of a chunk size, for one.
EXCHANGE_ERRORS = (OSError, http.client.HTTPException, ValueError)
# url_unreachable's message, the same for every host refused or not reached.
UNREACHABLE = ("This server cannot fetch from the URL's host: it does not resolve to a public "
               "address, or it did not accept the connection.")


def resolve(host: str, port: int, timeout: float = DNS_TIMEOUT) -> list[str]:
    """Every address `host` resolves to, each once (one DNS lookup, in the DNS threads)."""
    infos = lookup(host, port, timeout)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_problem(text: str, allow_loopback: bool = False) -> str | None:
    """Why a fetch must not connect to this IP address (for the log), or None when it may."""
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


class UrlFetcher:
    """One request's fetch of a URL (a new one per request: it watches that request's client)."""

    def __init__(self, max_bytes: int, allow_loopback: bool = False,
                 ports: tuple[int, ...] = (80, 443), client=None):
        self.max_bytes = max_bytes
        self.allow_loopback = allow_loopback
        self.ports = ports
        self.client = client  # the client's socket under gunicorn: its leaving ends the fetch

    def __call__(self, url: str) -> bytes:
        deadline = FetchDeadline(TOTAL_TIMEOUT, READ_TIMEOUT)
        with abandoned_if_client_leaves(self.client, deadline):
            return self._fetch(url, deadline)

    def _fetch(self, url: str, deadline: FetchDeadline) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            response, conn = self._get(url, deadline)
            try:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.getheader("Location")
                    if not location:
                        raise ApiError("url_fetch_failed", f"{_short(url)} redirected nowhere "
                                       "(no Location header).")
                    url = urljoin(url, location)
                    continue
                if response.status != 200:
                    raise ApiError("url_fetch_failed", f"{_short(url)} answered HTTP "
                                   f"{response.status} {response.reason[:60]}, not an image.")
                data = self._read(response, url, deadline)
            finally:
                conn.close()
            _check_image(data, url, response.getheader("Content-Type"))
            return data
        raise ApiError("url_too_many_redirects",
                       f"The URL redirected more than {MAX_REDIRECTS} times; not followed.")

    def _target(self, url: str, deadline: FetchDeadline):
        """(scheme, host, port, checked ip, path) or a refusal."""
        if len(url) > 2048:
            raise ApiError("url_not_allowed", "The URL is longer than 2048 characters.")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ApiError("url_not_allowed", f"The URL cannot be parsed: {exc}.") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ApiError("url_not_allowed", f"Only http and https URLs are fetched, not "
                           f"{(scheme or '(none)')[:20]!r}.")
        if parts.username is not None or parts.password is not None:
            raise ApiError("url_not_allowed", "URLs with a user name or password are not "
                           "fetched.")
        host = parts.hostname
        if not host:
            raise ApiError("url_not_allowed", "The URL has no host.")
        port = port or SCHEMES[scheme]
        if port not in self.ports:
            raise ApiError("url_not_allowed", f"This server fetches only from port"
                           f"{'s' if len(self.ports) > 1 else ''} "
                           f"{', '.join(map(str, self.ports))}, not {port}.")
        try:
            addresses = resolve(host, port, deadline.wait_limit(DNS_TIMEOUT))
        except (OSError, UnicodeError) as exc:  # DnsTimedOut, FetchTimedOut are OSErrors
            raise _unreachable(url, exc, deadline) from None
        problems = [(a, address_problem(a, self.allow_loopback)) for a in addresses]
        refused = [f"{a}: {problem}" for a, problem in problems if problem]
        if refused or not addresses:
            raise _unreachable(url, "; ".join(refused) or "no address", deadline)
        # Spaces, control characters and non-ASCII percent-encoded, as a browser sends them
        # (http.client refuses them); everything else, escapes included, as given.
        path = quote(parts.path or "/", safe=PATH_SAFE) + (
            f"?{quote(parts.query, safe=PATH_SAFE)}" if parts.query else "")
        return scheme, host, port, addresses[0], path

    def _get(self, url: str, deadline: FetchDeadline):
        scheme, host, port, ip, path = self._target(url, deadline)
        try:
            conn = open_connection(scheme, host, port, ip, deadline, CONNECT_TIMEOUT)
        except ssl.SSLError as exc:  # the host answered; its TLS (certificate, handshake) failed
            raise _failed(url, exc, deadline) from None
        except EXCHANGE_ERRORS as exc:
            raise _unreachable(url, exc, deadline) from None
        try:
            conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
            return conn.getresponse(), conn
        except EXCHANGE_ERRORS as exc:
            conn.close()
            raise _failed(url, exc, deadline) from None

    def _read(self, response, url: str, deadline: FetchDeadline) -> bytes:
        declared = response.getheader("Content-Length")
        if declared is not None and not CONTENT_LENGTH.fullmatch(declared.strip()):
            raise ApiError("url_fetch_failed", f"{_short(url)} sent an invalid Content-Length "
                           f"({declared[:20]!r}).")
        if declared is not None and int(declared) > self.max_bytes:
            raise _too_large(self.max_bytes)
        buf = io.BytesIO()
        try:
            while chunk := response.read1(CHUNK):
                buf.write(chunk)
                if buf.tell() > self.max_bytes:
                    raise _too_large(self.max_bytes)
        except EXCHANGE_ERRORS as exc:
            raise _failed(url, exc, deadline, "read") from None
        return buf.getvalue()


def _unreachable(url: str, why, deadline: FetchDeadline) -> ApiError:
    """The one answer for every host refused or not reached; why goes to the log only."""
    if deadline.abandoned or deadline.left() <= 0:
        return _failed(url, why, deadline)
    log.info("url fetch refused, %s: %s", _short(url), why)
    return ApiError("url_unreachable", UNREACHABLE)


def _failed(url: str, exc, deadline: FetchDeadline, what: str = "fetched") -> ApiError:
    """The fetch failed after the host was reached (or ran out of time, or was abandoned)."""
    if deadline.abandoned:
        return ApiError("url_fetch_failed", f"{_short(url)}: the fetch was abandoned, as the "
                        "client disconnected.")
    if deadline.left() <= 0:
        return ApiError("url_fetch_failed", f"{_short(url)} took longer than "
                        f"{deadline.total:g} s to fetch.")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        reason = "timed out"
    else:
        reason = (str(exc) or type(exc).__name__)[:120]
    return ApiError("url_fetch_failed", f"{_short(url)} could not be {what}: {reason}.")


def _check_image(data: bytes, url: str, content_type: str | None) -> None:
    """Refuse a page or any other non-image before it goes further (headers only)."""
    try:
        check_structure(data, DEFAULT_MAX_IMAGE_PIXELS)  # Image.open itself can amplify
        Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ApiError("url_not_image", f"{_short(url)} is not an image we can read "
                       f"(it sent {(content_type or 'no Content-Type')[:60]}, "
                       f"{len(data)} bytes).") from None


def _too_large(max_bytes: int) -> ApiError:
    return ApiError("url_too_large", f"The image at the URL is larger than "
                    f"{max_bytes / 2**20:g} MB; not downloaded.")


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."


def fetcher_for(settings, client=None) -> UrlFetcher:
    """The fetcher for one request; `client` is its socket (gunicorn's), watched while fetching."""
    return UrlFetcher(settings.max_content_length, settings.allow_url_fetch_loopback,
                      settings.url_fetch_ports, client)
