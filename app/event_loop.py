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
