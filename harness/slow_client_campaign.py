"""A slow-client campaign: normal load alone, then the same load beside hundreds of slow,
stalled and idle connections (harness/slow_clients.py), in alternating rounds, with each
attacker's close held to the deadline the server's settings promise.

Shared by the CI slice (tests/proof/test_proof_slow_clients.py) and the long run
(`python -m benchmarks.slow_clients`).
"""
from __future__ import annotations

import threading

from harness import load
from harness.machine import load_average, machine_line
from harness.memory import MemoryWatch
from harness.raw_http import multipart
from harness.slow_clients import Attack, slow_upload


def deadlines(env: dict | None = None) -> dict:
    """Seconds within which the server must close each kind of attacker, from the settings the
    server runs with (`env` on top of the defaults): the head deadline for slow heads and idle
    keep-alive connections; the minimum-rate deadline of a body trickled one byte at a time."""
    from app.config import load_settings
    from app.upload_deadline import CHUNK

    s = load_settings(environ=env or {})
    return {"slow_header": s.header_timeout, "idle": s.header_timeout,
            "slow_body": s.read_timeout + CHUNK / (s.min_upload_kbps * 1024)}


def tolerance(deadline: float) -> float:
    """How long past its deadline a close may be seen on a loaded 2-core machine: the server's
    clock starts after it has parsed what arrived, and both sides wait their turn for a CPU."""
    return max(3.0, deadline / 2)


def measure(server, count: int, clients: int, seconds: float, rounds: int,
            upload: bytes, upload_rate: float, env: dict | None = None) -> dict:
    """Alternate `rounds` of (normal load alone, normal load with `count` attackers of each kind)
    of `seconds` each; send `upload` at `upload_rate` bytes/s during the last attack. Returns the
    figures (printed by `python -m benchmarks.slow_clients`). An attack phase lasts at least the
    longest deadline plus its tolerance, so every kind of attacker gets closed at least once."""
    limits = deadlines(env)
    longest = max(limits.values()) + tolerance(max(limits.values()))
    attack_seconds = max(seconds, longest)
    ctype, body = multipart([("file", "slow.png", "image/png", upload)])
    figures = {"load_before": machine_line(), "count": count, "clients": clients,
               "deadlines_s": {k: round(v, 2) for k, v in limits.items()},
               "tolerance_s": {k: round(tolerance(v), 2) for k, v in limits.items()},
               "base": [], "attack": [], "closed": {}, "late": {}, "answers": {},
               "still_open_too_long": 0, "open_reached": None}
    watch = MemoryWatch(server)
    for rnd in range(rounds):
        figures["base"].append(load.drive(server.url, clients, seconds).summary())
        attack = Attack(server.port, count=count).start()
        figures["open_reached"] = attack.wait_open(timeout=30)
        holder: dict = {}
        uploader = None
        if rnd == rounds - 1:
            uploader = threading.Thread(target=lambda holder=holder: holder.update(result=slow_upload(
                server.port, body, ctype, upload_rate, timeout=limits["slow_body"] + 60)))
            uploader.start()
        figures["attack"].append(load.drive(server.url, clients, attack_seconds,
                                            timeout=30).summary())
        if uploader is not None:
            uploader.join(timeout=len(body) / upload_rate + 120)
            status, took, answer = holder.get("result", (None, 0.0, b""))
            figures["upload"] = {"bytes": len(body), "rate_kbps": upload_rate / 1024,
                                 "status": status, "seconds": round(took, 1),
                                 "answer": answer[:120].decode("latin-1")}
        still = attack.stop()
        figures["still_open_too_long"] += sum(
            1 for age in still if age > longest)
        for c in attack.closed:
            figures["closed"][c.kind] = figures["closed"].get(c.kind, 0) + 1
            if c.held > limits[c.kind] + tolerance(limits[c.kind]):
                figures["late"][c.kind] = figures["late"].get(c.kind, 0) + 1
            key = f"{c.kind} {c.answer[:12] or 'closed'}"
            figures["answers"][key] = figures["answers"].get(key, 0) + 1
            worst = figures.setdefault("max_held_s", {})
            worst[c.kind] = round(max(worst.get(c.kind, 0.0), c.held), 2)
        figures["connect_errors"] = figures.get("connect_errors", 0) + attack.connect_errors
    watch.stop()
    figures["memory_mb"] = {"rss_baseline": watch.baseline_rss >> 20,
                            "rss_peak": watch.peak_rss >> 20,
                            "pss_baseline": watch.baseline_pss >> 20,
                            "pss_peak": watch.peak_pss >> 20}
    base_p50 = sorted(r["p50_ms"] for r in figures["base"] if r["p50_ms"] is not None)
    attack_p50 = sorted(r["p50_ms"] for r in figures["attack"] if r["p50_ms"] is not None)
    figures["p50_base_ms"] = base_p50[len(base_p50) // 2] if base_p50 else None
    figures["p50_attack_ms"] = attack_p50[len(attack_p50) // 2] if attack_p50 else None
    figures["failed_base"] = sum(r["failed"] for r in figures["base"])
    figures["failed_attack"] = sum(r["failed"] for r in figures["attack"])
    figures["load_after"] = load_average()
    return figures
