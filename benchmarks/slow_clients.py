"""The long slow-client run: hundreds of slow, stalled and idle connections against the service.

    .venv/bin/python -m benchmarks.slow_clients [--count 200] [--seconds 30] [--rounds 3]
        [--upload-mb 10] [--model models/export.pkl] [--json out.json]
        [--gunicorn-args "--worker-class gthread"]   # the same run against another worker
        [--nginx]   # the rejected candidate: Debian's nginx (buffering) in front of gthread

Alternates `--rounds` phases of normal load alone (4 clients) and the same load with `--count`
slow-header, `--count` slow-body and `--count` idle keep-alive connections held open
(harness/slow_clients.py), and sends a `--upload-mb` photo at 100 KB/s during the last
attack. Prints one table: requests, failures and p50 per phase, how each kind of attacker was
closed against its deadline, the upload, the memory, and the load average before and after.
Exits 1 if a goal is missed: a failure, p50 under attack over 2x, an attacker held past its
deadline, or the upload refused. Traffic goes to 127.0.0.1 only.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.cli import benchmark_args
from harness import slow_clients
from harness.servers import GunicornServer, free_port
from harness.slow_client_campaign import measure

# The nginx candidate, as measured in docs/decisions.md: request buffering on, the same
# head deadline and per-pause body timeout as the service. nginx has no total body deadline.
NGINX_CONF = """worker_processes 1;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  client_header_timeout 10s;
  client_body_timeout 10s;
  keepalive_timeout 10s;
  send_timeout 10s;
  client_max_body_size 10m;
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port} backlog=1024;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering on;
    }}
  }}
}}
"""


class NginxFront:
    """nginx on its own port in front of `server`; looks like a server to measure()."""

    def __init__(self, server: GunicornServer):
        self.server, self.port = server, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.mkdtemp(prefix="nginx-front-")
        os.chmod(self.tmp, 0o777)  # nginx's workers drop root for www-data and spool bodies here
        conf = Path(self.tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=self.tmp, upstream=server.port, port=self.port))
        self.proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                                      str(conf), "-g", "daemon off;"])
        time.sleep(1.0)

    def processes(self):
        front = psutil.Process(self.proc.pid)
        return self.server.processes() + [front] + front.children()

    def rss_bytes(self) -> int:
        return sum(p.memory_info().rss for p in self.processes())

    def pss_bytes(self) -> int:
        return sum(p.memory_full_info().pss for p in self.processes())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv=None) -> int:
    args, model = benchmark_args(
        __doc__, ("--count", {"type": int, "default": 200, "help": "connections of each kind"}),
        ("--clients", {"type": int, "default": 4}),
        ("--seconds", {"type": float, "default": 30.0, "help": "per phase (at least the "
                                                               "longest deadline + 3 s)"}),
        ("--rounds", {"type": int, "default": 3}),
        ("--upload-mb", {"type": float, "default": 10.0}),
        ("--upload-kbps", {"type": float, "default": 100.0}),
        ("--gunicorn-args", {"default": "", "help": "GUNICORN_CMD_ARGS for the server"}),
        ("--nginx", {"action": "store_true", "help": "measure nginx in front of gthread"}),
        argv=argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    if args.nginx:
        args.gunicorn_args = args.gunicorn_args or "--worker-class gthread"
    env = {"GUNICORN_CMD_ARGS": args.gunicorn_args} if args.gunicorn_args else {}
    upload = slow_clients.noise_png(int(args.upload_mb * 1_000_000))
    with GunicornServer(model, env=env) as server:
        target = NginxFront(server) if args.nginx else server
        try:
            f = measure(target, count=args.count, clients=args.clients, seconds=args.seconds,
                        rounds=args.rounds, upload=upload, upload_rate=args.upload_kbps * 1024,
                        env=env)
        finally:
            if args.nginx:
                target.stop()
    print(f"before: {f['load_before']}\nafter: {f['load_after']}")
    print(f"attackers of each kind: {args.count} (open reached: {f['open_reached']}); "
          f"normal clients: {args.clients}")
    print("| phase | requests | failed | p50 ms | p95 ms |\n|---|---|---|---|---|")
    for i, (base, attack) in enumerate(zip(f["base"], f["attack"])):
        for name, run in ((f"{i + 1} alone", base), (f"{i + 1} under attack", attack)):
            print(f"| {name} | {run['requests']} | {run['failed']} | {run['p50_ms']} | "
                  f"{run['p95_ms']} |")
    ratio = (f["p50_attack_ms"] / f["p50_base_ms"]) \
        if f["p50_base_ms"] and f["p50_attack_ms"] else None
    print(f"median p50: alone {f['p50_base_ms']} ms, under attack {f['p50_attack_ms']} ms "
          f"(x{ratio:.2f})" if ratio else f"median p50: alone {f['p50_base_ms']} ms, under "
          f"attack {f['p50_attack_ms']} ms (no request answered)")
    print("| attacker | deadline s | + tolerance s | closed | longest held s | past both |\n"
          "|---|---|---|---|---|---|")
    for kind in slow_clients.KINDS:
        print(f"| {kind} | {f['deadlines_s'][kind]} | {f['tolerance_s'][kind]} | "
              f"{f['closed'].get(kind, 0)} | "
              f"{f.get('max_held_s', {}).get(kind, '-')} | {f['late'].get(kind, 0)} |")
    print(f"still open past every deadline at the end: {f['still_open_too_long']}")
    print(f"answers: {f['answers']}")
    up = f.get("upload", {})
    print(f"upload: {up.get('bytes')} bytes at {up.get('rate_kbps')} KB/s -> {up.get('status')} "
          f"in {up.get('seconds')} s")
    print(f"memory MB: {f['memory_mb']}")
    if args.json:
        Path(args.json).write_text(json.dumps(f, indent=2) + "\n")
    ok = (f["failed_base"] == 0 and f["failed_attack"] == 0 and ratio is not None
          and ratio <= 2 and not f["late"] and f["still_open_too_long"] == 0
          and up.get("status") == 200)
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
