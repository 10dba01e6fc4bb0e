"""Whether this process serves requests on gevent's event loop, and running CPU work off it.

Under the served worker (app/worker.py) every connection is a greenlet on one event loop.
Model work (decoding, torch or onnxruntime) would stop that loop for every other client,
so it runs in the hub's pool of real OS threads while the request's greenlet waits; torch
and onnxruntime release the GIL while they compute. Anywhere else (tests, `flask run`)
the work simply runs in the calling thread.
"""
from __future__ import annotations


def gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")


def off_event_loop(fn, *args, pool=None):
    """fn(*args), in a real thread when on gevent's event loop (of `pool`, a gevent ThreadPool,
    else the hub's); its result or exception."""
    if not gevent_active():
        return fn(*args)
    import gevent

    def call():  # the exception comes back as a value: gevent's pool would print it
        try:
            return fn(*args), None
        except Exception as exc:
            return None, exc

    result, error = (pool or gevent.get_hub().threadpool).apply(call)
    if error is not None:
        raise error
    return result


def prepare_store_clients() -> None:
    """Make the s3:// stores of classifier/storage.py (fsspec, s3fs) work in a gevent worker.
    Call once per worker, after gevent's patch and before any store is used.

    - fsspec starts its IO loop lazily in a `threading.Thread`, which under gevent is a
      greenlet of whichever thread first calls it (one of the hub's pool): the loop then
      counts as running in that OS thread, and the next store call there fails with
      "Calling sync() from within a running loop". Here it gets a native thread of its own
      (with its own hub for the sockets and name lookups inside the loop).
    - urllib3, imported by the master before the patch, keeps ssl's original SSLContext;
      botocore makes its contexts from that name, and setting their options then recurses
      without end (gevent#1016). It gets the patched class, as if imported after the patch.
    """
    if not gevent_active():
        return
    import asyncio
    import ssl
    import sys

    import fsspec.asyn
    from gevent import monkey

    urllib3_ssl = sys.modules.get("urllib3.util.ssl_")
    if urllib3_ssl is not None:
        urllib3_ssl.SSLContext = ssl.SSLContext
    start_native = monkey.get_original("_thread", "start_new_thread")
    made = monkey.get_original("_thread", "allocate_lock")()
    made.acquire()

    def run():  # the loop must be made in its thread: its selector belongs to that hub
        fsspec.asyn.loop[0] = asyncio.new_event_loop()
        made.release()
        fsspec.asyn.loop[0].run_forever()

    start_native(run, ())
    made.acquire()
