"""Slow, stalled and idle connections held open against a server, a client that never reads
its answers, and a slow honest upload.

The slow-client campaign (harness/slow_client_campaign.py) runs them beside normal load;
tests may drive them alone. One thread runs every attacking socket from a selector, so
hundreds of them cost the measuring process almost nothing:

- slow_header: sends `POST /predict HTTP/1.1` and then one more header line every `interval`
  seconds, never finishing the head;
- slow_body: sends a complete head (Content-Length 1 MB) and then one body byte every
  `interval` seconds;
- idle: keep-alive connections left silent, half of them right after one finished request
  (`GET /healthz`), half of them from the moment they connect.

Each slot reconnects as soon as the server closes it, so `count` connections of each kind stay
open for the whole run. Every connection's open and close times are kept, so the caller can
check that the server closed each one within its deadline.
"""
from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

KINDS = ("slow_header", "slow_body", "idle")


@dataclass
class Conn:
    kind: str
    index: int
    sock: socket.socket
    connecting: bool = True
    opened: float = 0.0         # connect completed
    clock: float = 0.0          # when the server's deadline starts (idle: after the response)
    closed: float | None = None  # the server closed it (EOF, reset or refused write)
    answer: bytes = b""         # what the server sent, if anything
    next_send: float = 0.0
    sent_request: bool = False  # idle: the one request has been answered


@dataclass
class Closed:
    kind: str
    held: float        # seconds from the start of its deadline to the server's close
    answer: str        # the status line the server sent first ("" when it sent none)


@dataclass
class Attack:
    """`count` connections of each kind against 127.0.0.1:`port`, until stop()."""
    port: int
    count: int = 200
    interval: float = 1.0
    kinds: tuple = KINDS
    closed: list[Closed] = field(default_factory=list)
    connect_errors: int = 0
    _conns: dict = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Attack:
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def open_now(self) -> dict:
        """How many connections of each kind are established right now."""
        counts = {k: 0 for k in self.kinds}
        for conn in list(self._conns.values()):
            if not conn.connecting and conn.closed is None:
                counts[conn.kind] += 1
        return counts

    def wait_open(self, timeout: float) -> dict:
        """Wait until every slot is connected (or timeout); the counts reached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.open_now()
            if all(v >= self.count for v in counts.values()):
                break
            time.sleep(0.1)
        return self.open_now()

    def stop(self) -> list[float]:
        """Stop and close everything; the ages (s) of the connections still open at that moment."""
        self._stop.set()
        self._thread.join(timeout=10)
        now = time.monotonic()
        still = [now - c.clock for c in self._conns.values()
                 if not c.connecting and c.closed is None]
        for conn in self._conns.values():
            conn.sock.close()
        self._sel.close()
        return still

    # -- the loop ------------------------------------------------------------
    def _connect(self, kind: str, index: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            self.connect_errors += 1
            return
        conn = Conn(kind, index, sock)
        self._conns[(kind, index)] = conn
        self._sel.register(sock, selectors.EVENT_WRITE, conn)

    def _established(self, conn: Conn, now: float) -> None:
        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.connect_errors += 1
            self._forget(conn)
            return
        conn.connecting = False
        conn.opened = conn.clock = now
        self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
        if conn.kind == "slow_header":
            self._send(conn, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        elif conn.kind == "slow_body":
            self._send(conn, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: image/png\r\nContent-Length: 1000000\r\n\r\n")
        elif conn.index % 2 == 0:  # idle after one request; odd ones stay silent from the start
            self._send(conn, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        conn.next_send = now + self.interval

    def _send(self, conn: Conn, data: bytes) -> None:
        try:
            conn.sock.send(data)
        except OSError:
            self._closed(conn, time.monotonic())

    def _readable(self, conn: Conn, now: float) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            if len(conn.answer) < 4096:
                conn.answer += data[:4096]
            if conn.kind == "idle" and not conn.sent_request and b"\r\n\r\n" in conn.answer:
                conn.sent_request = True
                conn.clock = now  # the keep-alive deadline starts after the response
            return
        self._closed(conn, now)

    def _closed(self, conn: Conn, now: float) -> None:
        if conn.closed is not None:
            return
        conn.closed = now
        first = conn.answer.split(b"\r\n", 1)[0].decode("latin-1")
        if conn.kind == "idle" and conn.index % 2 == 0 and conn.sent_request:
            first = ""  # the /healthz answer is not the server's word on the idle connection
        self.closed.append(Closed(conn.kind, now - conn.clock, first))
        self._forget(conn)

    def _forget(self, conn: Conn) -> None:
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        self._conns.pop((conn.kind, conn.index), None)

    def _run(self) -> None:
        for i in range(self.count):  # ramp up, interleaving the kinds
            for kind in self.kinds:
                self._connect(kind, i)
        while not self._stop.is_set():
            now = time.monotonic()
            for key in [(k, i) for k in self.kinds for i in range(self.count)]:
                if key not in self._conns:
                    self._connect(*key)  # keep `count` of each kind open
            for key, _ in self._sel.select(timeout=0.05):
                conn = key.data
                if conn.connecting:
                    self._established(conn, time.monotonic())
                else:
                    self._readable(conn, time.monotonic())
            now = time.monotonic()
            for conn in list(self._conns.values()):
                if conn.connecting or conn.closed is not None or now < conn.next_send:
                    continue
                conn.next_send = now + self.interval
                if conn.kind == "slow_header":
                    self._send(conn, b"X-Slow-%d: x\r\n" % int(now * 1000))
                elif conn.kind == "slow_body":
                    self._send(conn, b"x")


def slow_upload(port: int, body: bytes, content_type: str, rate: float,
                timeout: float) -> tuple[int | None, float, bytes]:
    """POST /predict with `body` sent at `rate` bytes/s: (status, seconds, response body)."""
    t0 = time.monotonic()
    step = 0.1
    chunk = max(1, int(rate * step))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                     % (content_type.encode(), len(body)))
        sent = 0
        try:
            while sent < len(body):
                sock.sendall(body[sent:sent + chunk])
                sent += chunk
                lag = t0 + sent / rate - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
        except OSError:
            pass  # the server answered early (an error); read what it said
        data = b""
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except OSError:
            pass
    seconds = time.monotonic() - t0
    head, _, rest = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = None
    return status, seconds, rest


def unread_requests(port: int, path: str, count: int) -> socket.socket:
    """A reader that never reads: a connection with the smallest receive buffer the kernel
    allows, `count` pipelined `GET path` sent on it at once, and not a byte read back. Once
    the answers fill both sides' buffers the server's write waits on this client. The caller
    closes the returned socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connect: the window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode() * count)
    return sock


def noise_png(target_bytes: int) -> bytes:
    """A PNG of random pixels (incompressible), close to `target_bytes` long."""
    import io

    import numpy as np
    from PIL import Image

    side = int((target_bytes / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()
