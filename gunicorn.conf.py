"""gunicorn settings for `gunicorn -c gunicorn.conf.py "app:create_app()"` (see docs/serving.md).

The master loads the model once (preload_app) and forks the workers, which
share its memory. Worker, thread and inference-thread counts come from
app/config.py, so the app and gunicorn agree on them.
"""
import gc
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from app import serve_preloaded
from app.config import ROOT, load_settings
from app.setting_parsers import ConfigError
from app.worker import OVERFLOW
from classifier.storage import Store

try:
    _settings = load_settings()
except ConfigError as exc:  # a bad env var: one line, not a traceback
    raise SystemExit(f"Error: {exc}") from None

# create_app() in this master uses these settings and leaves warm-up to each worker
# after the fork (post_worker_init); see app/model_service.py.
serve_preloaded(_settings)

# Prometheus multi-process mode: every worker writes its samples here and /metrics
# merges them. Must be set before prometheus_client is imported (the app import).
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="classifier-metrics-")
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
# The only files on_starting deletes there: prometheus_client's own samples
# (counter_<pid>.db, gauge_livesum_<pid>.db, ...), whatever else the folder holds.
_SAMPLES_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


def _overlap(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


# Corrections are kept and the metrics folder is swept: never the one inside the other.
_feedback_store = Store(_settings.feedback_dir) if _settings.feedback_dir else None
if _feedback_store and _feedback_store.local \
        and _overlap(Path(_metrics_dir), Path(_settings.feedback_dir)):
    raise SystemExit(f"Error: PROMETHEUS_MULTIPROC_DIR ({_metrics_dir}) and FEEDBACK_DIR "
                     f"({_settings.feedback_dir}) overlap; give the metrics a folder of "
                     "their own (or leave PROMETHEUS_MULTIPROC_DIR unset).")

# Settings that name a bucket (s3://): each worker prepares its clients for them.
_models_store = Store(_settings.models_url) if _settings.models_url else None
_uses_buckets = any(store and not store.local for store in (_feedback_store, _models_store))

# A bucket that cannot be reached stops start-up: every correction would fail. A local
# folder not yet writable (a new volume, docs/deploy.md) is logged and answered with 503s.
if _feedback_store:
    _check = subprocess.run([sys.executable, "-m", "classifier.storage", "check",
                             _feedback_store.url], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    if _check.returncode and not _feedback_store.local:
        raise SystemExit(f"Error: FEEDBACK_DIR cannot be used: {_check.stderr.strip()}")
    if _check.returncode:
        print(f"Warning: FEEDBACK_DIR {_feedback_store} is not writable "
              f"({_check.stderr.strip()}); POST /feedback answers 503 until it is.",
              file=sys.stderr)

# MODELS_URL: serve the version its live.json names, copied into MODEL_PATH's folder first.
# A bucket away at start-up serves the copy already here, if any (app/model_follow.py).
if _models_store:
    _pull = subprocess.run([sys.executable, "-m", "classifier.model_bucket", "pull",
                            _models_store.url, str(_settings.model_path.parent)],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
    if _pull.returncode and not (_settings.model_path.parent / "live.json").is_file():
        raise SystemExit(f"Error: MODELS_URL cannot be used: {_pull.stderr.strip()}")
    if _pull.returncode:
        print(f"Warning: MODELS_URL {_models_store}: {_pull.stderr.strip()}; serving the "
              "version copied here before until it answers.", file=sys.stderr)


def _raise_open_files_limit(needed: int) -> None:
    """Each open connection is a file descriptor: lift the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# The cap, the refusals beyond it and the worker's own files.
_raise_open_files_limit(_settings.max_connections + OVERFLOW + 256)

bind = f"0.0.0.0:{_settings.port}"
preload_app = True
workers = _settings.workers
# Slow, stalled and idle clients (docs/reliability.md): every connection is a greenlet on
# gevent's event loop, so it costs a few KB rather than a thread, and model work runs in a
# pool of THREADS real threads per worker (app/event_loop.py). Bounds on each connection:
worker_class = "app.worker.BoundedGeventWorker"
threads = _settings.threads  # the worker's thread pool for decoding and inference
keepalive = _settings.header_timeout  # the whole request head (and a keep-alive wait), in s
worker_connections = _settings.max_connections  # open per worker; more get a 503 at once
# (the body: READ_TIMEOUT per pause and MIN_UPLOAD_KBPS on average; app/upload_deadline.py)
backlog = 1024
timeout = 60            # a worker silent this long is killed and replaced
graceful_timeout = 25   # SIGTERM: in-flight requests get this long to finish
control_socket_disable = True  # gunicorn 27 control socket: unused, and $HOME may be read-only
max_requests = 0        # a preloaded model does not leak; no recycling needed
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# One line per request, with the request id that the app echoes in X-Request-ID.
access_log_format = ('%(h)s "%(r)s" %(s)s %(B)sB %(M)sms rid=%({x-request-id}o)s '
                     'ua="%(a)s"')


def on_starting(server):
    # Stale samples from a previous run would be merged into /metrics. Only those go:
    # the folder may be on a volume that holds other things.
    with os.scandir(_metrics_dir) as entries:
        for entry in entries:
            if _SAMPLES_FILE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def post_worker_init(worker):
    # Set this worker's torch/onnxruntime threads and run one prediction before it
    # accepts a request, so /readyz 200 means "this worker answers fast". Then load
    # PyTorch for explanations behind the compiled graph where that serves
    # (app/explainer.py), serve the version models/live.json names now (a worker forked
    # after a swap starts with the master's model) and follow the pointer from then on
    # (app/model_follow.py).
    from app.event_loop import prepare_store_clients
    from app.model_follow import start_following
    from app.model_service import model_service

    if _uses_buckets:
        prepare_store_clients()  # before any s3:// store is used in this worker
    service = model_service(worker.wsgi)
    if not service.warm_up():
        worker.log.error("worker %s: %s", worker.pid, service.failure)
        return
    service.load_explanations(background=True)
    start_following(service)


def when_ready(server):
    # SIGHUP: each worker swaps to the version models/live.json names, in place, between
    # requests. gunicorn's own SIGHUP (re-read this file, fork new workers from the master,
    # which holds the model it preloaded, and stop the old ones) would not load it at all.
    def forward_hup():
        server.log.info("SIGHUP: workers follow models/live.json")
        for pid in list(server.WORKERS):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    server.handle_hup = forward_hup


def pre_fork(server, worker):
    # The preloaded model and libraries never die: keep the interpreter-exit GC (and every
    # collection) off them, so their pages stay shared with the master and exit is fast.
    gc.freeze()


def worker_exit(server, worker):
    # Runs in the worker once it has finished its requests (graceful drain). Skip the
    # interpreter teardown: walking the torch/onnxruntime heap took seconds and could abort
    # in a native destructor (SIGABRT), holding SIGTERM up to graceful_timeout. Metrics are
    # in mmapped files already; the master's child_exit marks this pid dead.
    if os.getpid() != worker.pid:  # gunicorn also calls this in the master (kill_worker)
        return
    exc = sys.exc_info()[1]  # the SystemExit on its way out carries the exit status
    code = exc.code if isinstance(exc, SystemExit) else 0
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
