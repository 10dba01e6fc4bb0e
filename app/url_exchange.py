"""The network side of a URL fetch (app/url_fetch.py): one deadline over the whole exchange, a
DNS lookup that cannot stall the model, and the fetch abandoned when its client leaves.

- Every wait on the remote's socket (connect, the TLS handshake, each send and receive: the
  status line, `100 Continue` and other 1xx answers, headers, body, chunked trailers) gets
  the lesser of the per-read timeout and the time left as its timeout; with no time left it
  raises FetchTimedOut. A byte a second, an endless `100 Continue` or a stalled handshake
  therefore ends at the deadline like a slow body does.
- DNS lookups run in their own small pool of real threads, never the one that decodes images
  and runs the model (app/event_loop.py), under a timeout of their own inside the deadline.
- Under gevent, a greenlet watches the client's socket while the fetch runs; when the client
  closes it, the remote's socket is closed and the fetch fails at once (FetchAbandoned).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import http.client
import socket
import ssl
import time

from app.event_loop import gevent_active

DNS_THREADS = 2  # lookups at once per worker; more wait (each under its own timeout)


class FetchTimedOut(TimeoutError):
    """The fetch's deadline passed."""


class FetchAbandoned(ConnectionError):
    """The client that asked for the fetch has gone."""


class FetchDeadline:
    """The time left to one fetch (redirects included), and whether it was abandoned."""

    def __init__(self, total: float, per_read: float):
        self.total, self.per_read = total, per_read
        self.at = time.monotonic() + total
        self.abandoned = False
        self.sockets: list[socket.socket] = []

    def left(self) -> float:
        return self.at - time.monotonic()

    def wait_limit(self, per_wait: float | None = None) -> float:
        """The timeout for the next wait: at most `per_wait` (default: per read), and never
        past the deadline. Raises once the fetch is abandoned or out of time."""
        if self.abandoned:
            raise FetchAbandoned("the client disconnected")
        left = self.left()
        if left <= 0:
            raise FetchTimedOut(f"took longer than {self.total:g} s")
        return min(self.per_read if per_wait is None else per_wait, left)

    def abandon(self) -> None:
        """Stop the fetch: a wait in progress on its socket ends now, and the next raises."""
        self.abandoned = True
        for sock in self.sockets:
            sock.close()


# The socket methods that wait: each gets the deadline's timeout first (do_handshake: TLS).
WAITING_METHODS = ("recv", "recv_into", "send", "sendall", "do_handshake")


def _on_deadline_method(method):
    @functools.wraps(method)
    def on_deadline(self, *args, **kwargs):
        self.settimeout(self.fetch_deadline.wait_limit())
        return method(self, *args, **kwargs)
    return on_deadline


@functools.cache
def _on_deadline(base: type) -> type:
    """`base` (the standard library's socket or SSLSocket class, or gevent's) with every
    waiting method on the deadline of its instance's `fetch_deadline`."""
    methods = {name: _on_deadline_method(getattr(base, name))
               for name in WAITING_METHODS if hasattr(base, name)}
    return type(f"Deadline{base.__name__}", (base,), methods)


def open_connection(scheme: str, host: str, port: int, ip: str, deadline: FetchDeadline,
                    connect_timeout: float) -> http.client.HTTPConnection:
    """An HTTP(S) connection to the checked `ip`, with `host` for Host and TLS, every wait
    on `deadline`. Raises OSError (or FetchTimedOut, FetchAbandoned)."""
    plain = socket.create_connection((ip, port), deadline.wait_limit(connect_timeout))
    sock = _on_deadline(type(plain))(plain.family, plain.type, plain.proto,
                                     fileno=plain.detach())
    sock.fetch_deadline = deadline
    deadline.sockets.append(sock)
    if scheme == "https":
        context = ssl.create_default_context()
        context.sslsocket_class = _on_deadline(context.sslsocket_class)
        sock = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        sock.fetch_deadline = deadline
        deadline.sockets.append(sock)
        sock.do_handshake()  # verifies the certificate against `host`
        conn = http.client.HTTPSConnection(host, port, context=context)
    else:
        conn = http.client.HTTPConnection(host, port)
    conn.sock = sock  # http.client sends on it as given, never connecting again
    return conn


class DnsTimedOut(TimeoutError):
    """The lookup took longer than its timeout."""


@functools.cache
def _lookup_pool():
    """The worker's DNS threads (made in the worker, after the fork)."""
    if gevent_active():
        from gevent.threadpool import ThreadPool

        return ThreadPool(DNS_THREADS)
    return concurrent.futures.ThreadPoolExecutor(DNS_THREADS, thread_name_prefix="url-dns")


def lookup(host: str, port: int, timeout: float) -> list:
    """socket.getaddrinfo(host, port) for a stream socket, in the DNS threads, at most
    `timeout` seconds (DnsTimedOut); a lookup still stuck keeps its thread, not a model's."""
    pool = _lookup_pool()
    if not gevent_active():
        future = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise DnsTimedOut(f"no answer within {timeout:g} s") from None
    import gevent
    from gevent import monkey

    blocking = monkey.get_original("socket", "getaddrinfo")  # gevent's would use the hub's pool
    with gevent.Timeout(timeout, DnsTimedOut(f"no answer within {timeout:g} s")):
        return pool.apply(blocking, (host, port), {"type": socket.SOCK_STREAM})


@contextlib.contextmanager
def abandoned_if_client_leaves(client, deadline: FetchDeadline):
    """While inside, a client that closes `client` (its socket) abandons the fetch. Only
    under gevent, where each request is a greenlet and the watch costs one more."""
    if client is None or not gevent_active():
        yield
        return
    import gevent
    from gevent.socket import wait_read

    def watch() -> None:
        try:
            wait_read(client.fileno())
            if client.recv(1, socket.MSG_PEEK):
                return  # the next request of a pipelining client, not a goodbye
        except (OSError, ValueError):  # reset, or already closed
            pass
        deadline.abandon()

    watcher = gevent.spawn(watch)
    try:
        yield
    finally:
        watcher.kill(block=False)
