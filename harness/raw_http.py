"""A raw HTTP/1.1 client: requests written byte for byte and sent on a plain socket.

Malformed multipart, lying Content-Length/Content-Type and HTTP-level garbage reach the
server exactly as written; the answer is parsed by http.client. The one multipart builder
of the harness (tests, slow uploads and benchmarks use it). Loopback only.
"""
from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass, field

CRLF = b"\r\n"


def multipart(parts, boundary: bytes = b"proofBoundary7MA4YWxkTrZu0gW") -> tuple[str, bytes]:
    """parts: (name, filename or None, content type or None, data). -> (Content-Type, body)."""
    body = b""
    for name, filename, ctype, data in parts:
        disp = b'Content-Disposition: form-data; name="' + _b(name) + b'"'
        if filename is not None:
            disp += b'; filename="' + _b(filename) + b'"'
        body += b"--" + boundary + CRLF + disp + CRLF
        if ctype is not None:
            body += b"Content-Type: " + _b(ctype) + CRLF
        body += CRLF + data + CRLF
    body += b"--" + boundary + b"--" + CRLF
    return "multipart/form-data; boundary=" + boundary.decode("latin-1"), body


def _b(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def http_request(method: str, path: str, headers=(), body: bytes = b"",
                 content_length: bool | int = True) -> bytes:
    """Raw HTTP/1.1 request bytes. content_length: True (the real length), False (none) or a lie."""
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1"), b"Host: 127.0.0.1"]
    for key, value in headers:
        lines.append(_b(key) + b": " + _b(value))
    if content_length is True:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    elif content_length is not False:
        lines.append(b"Content-Length: " + str(content_length).encode())
    return CRLF.join(lines) + CRLF + CRLF + body


def upload(path: str, data: bytes, filename="upload.bin", ctype="application/octet-stream",
           extra_headers=()) -> bytes:
    content_type, body = multipart([("file", filename, ctype, data)])
    return http_request("POST", path, [("Content-Type", content_type), *extra_headers], body)


def raw_upload(data: bytes, ctype: str) -> bytes:
    return http_request("POST", "/predict", [("Content-Type", ctype)], data)


@dataclass
class Outcome:
    status: int | None = None          # None: no HTTP response came back
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    error: str = ""                    # why no response (reset, timeout, ...)
    seconds: float = 0.0


def send(port: int, raw: bytes, timeout: float = 30.0, chunk: int = 65536,
         pause: float = 0.0, host: str = "127.0.0.1") -> Outcome:
    """Send raw request bytes and read one response. A server that answers before reading the
    whole body (413) may reset the connection: the response is still read if it arrived."""
    start = time.monotonic()
    sock = socket.create_connection((host, port), timeout=timeout)
    error = ""
    try:
        try:
            for i in range(0, len(raw), chunk):
                sock.sendall(raw[i:i + chunk])
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError) as exc:
            error = f"send: {type(exc).__name__}"
        except TimeoutError:
            error = "send: timeout"
        out = read_response(sock, timeout=max(0.05, start + timeout - time.monotonic()))
    finally:
        sock.close()
    out.error = "; ".join(e for e in (error, out.error) if e)
    out.seconds = time.monotonic() - start
    return out


def read_response(sock: socket.socket, timeout: float) -> Outcome:
    """One HTTP response from `sock`, parsed by http.client (lengths, chunking, close)."""
    out = Outcome()
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        out.status = response.status
        out.headers = {k.lower(): v for k, v in response.getheaders()}
        out.body = response.read()
    except TimeoutError:
        out.error = "read: timeout"
    except http.client.IncompleteRead as exc:
        out.body, out.error = exc.partial, "read: incomplete body"
    except http.client.RemoteDisconnected:
        out.error = "closed without a response"
    except (http.client.HTTPException, ConnectionError) as exc:
        out.error = f"read: {type(exc).__name__}"
    finally:
        response.close()
    return out


def chunked(body: bytes, size: int = 65536) -> bytes:
    """`body` in Transfer-Encoding: chunked, `size` bytes a chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"
