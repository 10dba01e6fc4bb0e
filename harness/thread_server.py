"""An app served by werkzeug from a thread of the test process, where the test can still
reach the app's objects (the browser tests use it; the real served command is servers.py)."""
from __future__ import annotations

import contextlib
import threading


@contextlib.contextmanager
def served_in_thread(wsgi_app):
    """`wsgi_app` on a free loopback port, served by werkzeug from a thread of this process
    (where a test can still reach the app); yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
