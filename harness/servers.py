"""Start the real service the way production does, on a free loopback port, for tests and benchmarks.

    with GunicornServer(model_path, env={"MAX_UPLOAD_MB": "1"}) as server:
        requests.get(server.url + "/readyz")

The command is the contract's own, `gunicorn -c gunicorn.conf.py "app:create_app()"`
from the repo root, with configuration passed only through the documented
environment variables (MODEL_PATH, PORT, WEB_CONCURRENCY, THREADS, ...). The
only addition is `--bind 127.0.0.1:PORT`, so a test never listens beyond
loopback whatever the config file's default bind is. Everything is bounded in
time: start-up waits at most `ready_timeout` seconds, stopping at most
`stop_timeout`, and a server is always killed (its whole process group) on exit.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.multiprocess import MultiProcessCollector

from app.config import ENV_NAMES
from harness import ROOT
from harness.waiting import run_in_threads


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_command(port: int, loopback: bool = True) -> list[str]:
    script = Path(sys.executable).parent / "gunicorn"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]
    cmd = base + ["-c", "gunicorn.conf.py", "app:create_app()"]
    if loopback:
        cmd += ["--bind", f"127.0.0.1:{port}"]
    return cmd


# Tests and benchmarks drive a server from one address, which the per-client budgets
# (app/limits.py) would soon answer with 429; a test of those budgets passes its own.
UNLIMITED_RATES = {"PREDICT_RATE": "1000000/minute", "EXPLAIN_RATE": "1000000/minute",
                   "FEEDBACK_RATE": "1000000/minute"}


def server_env(model_path, port: int, env: dict | None = None) -> dict:
    """The parent's environment minus anything that would change the service, plus ours."""
    merged = {k: v for k, v in os.environ.items()
              if k not in ENV_NAMES and k not in ("GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR")}
    merged.update(MODEL_PATH=str(model_path), PORT=str(port), PYTHONUNBUFFERED="1",
                  **UNLIMITED_RATES)
    merged.update({k: str(v) for k, v in (env or {}).items()})
    return merged


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return 0


class ServerExited(RuntimeError):
    pass


class GunicornServer:
    """One gunicorn master (and its workers) in its own process group."""

    def __init__(self, model_path, env: dict | None = None, ready_timeout: float = 120.0,
                 stop_timeout: float = 30.0, log_path: Path | None = None):
        self.model_path = Path(model_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = server_env(model_path, self.port, env)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="gunicorn-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    # -- lifecycle --------------------------------------------------------
    def start(self, wait: bool = True) -> GunicornServer:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(gunicorn_command(self.port), cwd=ROOT, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise ServerExited(f"gunicorn exited with {self.proc.returncode} before "
                                   f"/readyz:\n{self.log_tail()}")
            if _get(self.url + "/readyz") == 200:
                self._wait_explanations(deadline)
                return
            time.sleep(0.25)
        tail = self.log_tail()
        self.kill()
        raise TimeoutError(f"/readyz not 200 within {timeout or self.ready_timeout}s:\n{tail}")

    def _wait_explanations(self, deadline: float, settled: int = 6) -> None:
        """Until no worker says its PyTorch model for explanations is still "loading" (each
        loads it behind the served graph: app/explainer.py), so that tests see the server's
        steady state (its memory, ?explain=1) as before; /readyz answers per worker, so
        `settled` answers in a row must agree."""
        in_a_row = 0
        while in_a_row < settled and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                    loading = json.loads(resp.read()).get("explanations") == "loading"
            except (OSError, ValueError):
                loading = True
            in_a_row = 0 if loading else in_a_row + 1
            time.sleep(0.1 if not loading else 0.25)

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the master to exit by itself; its exit code, or None on timeout."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def terminate(self, timeout: float | None = None) -> int | None:
        """SIGTERM the master (graceful shutdown) and wait; kill the group if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        code = self.wait_exit(timeout or self.stop_timeout)
        if code is None:
            self.kill()
        return code

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        try:
            self.terminate()
        finally:
            self.kill()  # stray workers of a master that died badly share its group
            if getattr(self, "_log", None):
                self._log.close()

    def __enter__(self) -> GunicornServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- inspection -------------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> list[psutil.Process]:
        """The master and every descendant (workers)."""
        try:
            master = psutil.Process(self.proc.pid)
            return [master] + master.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> list[int]:
        try:
            return sorted(p.pid for p in psutil.Process(self.proc.pid).children())
        except psutil.NoSuchProcess:
            return []

    def wait_workers(self, count: int, timeout: float = 60.0, exclude=()) -> list[int]:
        """Wait until `count` workers (none of `exclude`) are up and /readyz answers 200."""
        deadline = time.monotonic() + timeout
        pids = []
        while time.monotonic() < deadline:
            pids = [p for p in self.worker_pids() if p not in exclude]
            if len(pids) >= count and _get(self.url + "/readyz") == 200:
                return pids
            time.sleep(0.2)
        raise TimeoutError(f"expected {count} workers, have {pids}:\n{self.log_tail()}")

    def rss_bytes(self) -> int:
        """Resident memory of the master and all workers, summed (shared pages counted twice)."""
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def pss_bytes(self) -> int:
        """Proportional set size summed: shared (preloaded) pages counted once in all."""
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_full_info().pss
            except (psutil.Error, AttributeError):
                pass
        return total

    def group_pids(self) -> list[int]:
        """Every live process in the server's process group (workers outlive a killed master)."""
        pids = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == self.proc.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    pids.append(proc.pid)
            except (ProcessLookupError, psutil.Error):
                pass
        return pids

    def serves_connection_from(self, client: socket.socket) -> bool:
        """A worker has accepted this client socket's connection (its request is in flight)."""
        port = client.getsockname()[1]
        for pid in self.worker_pids():
            try:
                if any(c.raddr and c.raddr.port == port
                       for c in psutil.Process(pid).net_connections(kind="tcp")):
                    return True
            except psutil.Error:
                pass
        return False

    def requests_by_worker(self, endpoint: str) -> dict[int, float]:
        """pid -> requests to `endpoint` that worker answered, read from its own file in
        PROMETHEUS_MULTIPROC_DIR (so the server must have been given that folder)."""
        counts: dict[int, float] = {}
        for path in Path(self.env["PROMETHEUS_MULTIPROC_DIR"]).glob("counter_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
                counts[pid] = counts.get(pid, 0) + sum(
                    sample.value for sample in metric.samples
                    if sample.name == "classifier_http_requests_total"
                    and sample.labels.get("endpoint") == endpoint)
        return counts

    def until_every_worker_answered(self, send, endpoint: str, timeout: float = 60.0) -> int:
        """Call send() from 4 threads at a time (each on a fresh connection, so the kernel
        spreads them over the workers) until every worker has answered `endpoint`; returns
        the number of calls made."""
        calls = 0
        deadline = time.monotonic() + timeout
        while True:
            for outcome in run_in_threads(lambda _: send(), 4, timeout):
                if isinstance(outcome, Exception):
                    raise outcome
            calls += 4
            workers = set(self.worker_pids())
            served = {pid for pid, n in self.requests_by_worker(endpoint).items() if n > 0}
            if workers <= served:
                return calls
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {calls} calls only {served} of the workers "
                                   f"{workers} answered {endpoint}")

    def ready(self) -> bool:
        return _get(self.url + "/readyz") == 200

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def run_to_exit(model_path, env: dict | None = None, timeout: float = 120.0):
    """Start the service where it is expected to refuse to start: (exit code, output).

    The exit code is None if it was still running after `timeout` (then killed).
    """
    server = GunicornServer(model_path, env=env)
    server.start(wait=False)
    try:
        code = server.wait_exit(timeout)
    finally:
        server.stop()
    return code, server.log_text()
