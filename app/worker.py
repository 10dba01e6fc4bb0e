"""gunicorn's gevent worker with a cap on open connections and a per-pause read timeout.

A connection costs a greenlet (a few KB), not a thread, so slow, stalled and idle clients
cannot take the service away from others; gunicorn's gevent worker already bounds the
request head (and the keep-alive wait) by `keepalive` seconds. This subclass adds:

- a cap: past `worker_connections` open connections, a new one is answered at once with a
  503 JSON error and closed, instead of waiting unanswered in the kernel's queue;
- the socket timeout set by the app for the body (READ_TIMEOUT) is cleared after each
  request, so a kept-alive connection is timed by `keepalive` alone;
- on SIGTERM, connections still waiting for a request head (idle keep-alive ones) are
  closed at once, so a graceful stop waits only for requests really in flight;
- SIGHUP (forwarded by the master, gunicorn.conf.py) makes the worker look at models/live.json
  at once and swap to the version it names (app/model_follow.py), instead of killing it.

Model work runs in the hub's thread pool (app/event_loop.py), never on the event loop.
"""
from __future__ import annotations

import contextlib
import json
import signal
import warnings
from http import HTTPStatus

import gevent
from gevent import monkey, socket
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

from app.errors import ERRORS

# Connections accepted beyond the cap only to be told so; past that the kernel queues them.
OVERFLOW = 256
REFUSAL = json.dumps({"error": {
    "code": "too_many_connections",
    "message": "The server has too many open connections right now; please retry shortly."}})
_STATUS = HTTPStatus(ERRORS["too_many_connections"])
REFUSAL_RESPONSE = (f"HTTP/1.1 {_STATUS.value} {_STATUS.phrase}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(REFUSAL)}\r\nRetry-After: 1\r\nConnection: close\r\n"
                    f"\r\n{REFUSAL}").encode()


class BoundedGeventWorker(GeventWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_open = self.cfg.worker_connections
        self.worker_connections = self.max_open + OVERFLOW  # gevent's pool size
        self.open_connections = 0
        self.waiting_for_head: dict = {}  # greenlet -> its head deadline (gevent.Timeout)

    def patch(self):
        """gunicorn's patch(), but subprocess and os stay the standard library's. Commands run in
        real threads of this worker: the engine measurement's child (app/engine_switch.py), and
        ctypes.util.find_library's under PyTorch's import (app/explainer.py). In gevent's
        subprocess they failed, as its child watchers belong to the main thread's loop; with
        gevent's os.waitpid, every command after the first hung before it started (Popen waited
        on its exec pipe forever: explanations never loaded after a measurement). Nothing here
        forks or installs a SIGCHLD handler, which is what gevent's os and signal pair is for."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", monkey.MonkeyPatchWarning)  # signal without os: above
            monkey.patch_all(subprocess=False, os=False)
        self.sockets = [socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.detach())
                        for s in self.sockets]

    def init_signals(self):
        super().init_signals()
        signal.signal(signal.SIGHUP, self.handle_hup)
        signal.siginterrupt(signal.SIGHUP, False)

    def handle_hup(self, sig, frame):
        from app.model_service import model_service

        follower = model_service(self.wsgi).follower
        if follower is not None:
            follower.wake()

    def run(self):
        gevent.get_hub().threadpool.maxsize = self.cfg.threads  # model work (app/event_loop.py)
        super().run()

    @contextlib.contextmanager
    def timeout_ctx(self):
        """gunicorn waits for each request head under this (`keepalive` seconds, then close)."""
        timer = gevent.Timeout(self.cfg.keepalive, False)
        me = gevent.getcurrent()
        self.waiting_for_head[me] = timer
        try:
            with timer:
                yield
        finally:
            self.waiting_for_head.pop(me, None)

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        gevent.spawn(self.close_waiting_connections)

    def close_waiting_connections(self) -> None:
        """Until the worker exits: end every wait for a request head as if its deadline passed."""
        loop = gevent.get_hub().loop
        while True:
            for glet, timer in list(self.waiting_for_head.items()):
                loop.run_callback(self._end_head_wait, glet, timer)
            gevent.sleep(0.2)

    def _end_head_wait(self, glet, timer) -> None:
        """Throw the deadline from the event loop, as gevent's own Timeout does, and only if
        `glet` is still in that wait when it lands: a greenlet that got its request head in
        the meantime is serving it, and the throw would break that request (a 500; seen
        once in the SIGTERM drain test, 2 of 3,345 requests)."""
        if self.waiting_for_head.get(glet) is timer:
            glet.throw(timer)

    def handle(self, listener, client, addr):
        if self.open_connections >= self.max_open:
            self.refuse(client)
            return
        self.open_connections += 1
        try:
            super().handle(listener, client, addr)
        finally:
            self.open_connections -= 1

    def refuse(self, client) -> None:
        try:
            client.settimeout(1.0)
            client.sendall(REFUSAL_RESPONSE)
            util.close_graceful(client, timeout=1.0)  # FIN after the answer, not a reset
        except OSError:
            pass
        finally:
            util.close(client)

    def handle_request(self, listener_name, req, sock, addr):
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            try:
                sock.settimeout(None)
            except OSError:
                pass
