"""Where one /predict request's time goes, in the app's own process: decode, preparing the
model's input, the network, and the rest of the request (multipart parsing, Flask, JSON).

    .venv/bin/python -m benchmarks.request_breakdown [--inputs small phone] [--runs 30] [--rounds 3]

The model is serve_bench's resnet18 at 224 px with its graph compiled and checked as at image
build, served on the engine the app chooses by measurement on this machine (it waits for the
choice) with the default inference threads (the CPU count), as a lone request runs. Each stage is
timed on its own, one request at a time, on the same uploads:

- decode: `classifier.images.open_checked` at the app's reduced scale (the model's decode side);
- prepare: the learner's preprocessing into the network's input (`predictor.prepare`);
- network: `predictor.predict_prepared` on that input (forward pass, softmax, the answer);
- whole request: `POST /predict` through Flask's test client, so "the rest" is the request
  less the three stages: multipart parsing, routing, the field signals, the JSON answer.

What an HTTP server adds (gevent, sockets, the client) is serve_bench's 1-client p50 less the
whole request here. Medians of the per-round medians, with the spread; the CPU, its flags and
the load before and after.
"""
from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from harness.bench_assets import build_assets
from harness.machine import load_average, machine_line
from harness.servers import UNLIMITED_RATES


def timed(fn, runs: int) -> float:
    """Median milliseconds of `fn()` over `runs` calls."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def served_app(model: Path):
    """create_app on `model` as a worker serves it, once its engine is chosen."""
    from app import create_app
    from app.model_service import model_service

    # One client sends every request: the per-client rate limit would stop it.
    app = create_app({"MODEL_PATH": str(model), "TESTING": True, **UNLIMITED_RATES})
    service = model_service(app)
    service.warm_up()  # starts the engine measurement on a cache miss, as a worker's start does
    deadline = time.monotonic() + 300
    while service.info["engine"].get("measured") == "measuring" and time.monotonic() < deadline:
        time.sleep(0.2)
    return app, service


def stages(app, service, upload: tuple[str, bytes, str], runs: int) -> dict[str, float]:
    from classifier.images import open_checked

    name, data, mime = upload
    model = service.model
    side = service.decode_min_side
    settings = service.settings

    def decode():
        return open_checked(data, settings.max_image_pixels, min_side=side,
                            max_declared=settings.max_declared_pixels)

    image = decode()
    item = model.predictor.prepare(image)
    client = app.test_client()

    # The body is encoded once, as a client would send it: the test client's own encoding
    # is not the server's time.
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(data), name, content_type=mime)})

    def request():
        reply = client.post("/predict", data=body,
                            content_type=f"multipart/form-data; boundary={boundary}")
        assert reply.status_code == 200, reply.get_data(as_text=True)

    return {"decode": timed(decode, runs),
            "prepare": timed(lambda: model.predictor.prepare(image), runs),
            "network": timed(lambda: model.predictor.predict_prepared([item]), runs),
            "whole request": timed(request, runs)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", default=["small", "phone"])
    parser.add_argument("--runs", type=int, default=30, help="requests timed per stage and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="breakdown-"))
    model, uploads = build_assets(workdir, 224, 4, args.inputs)
    from classifier.onnx_compile import compile_model

    compile_model(model)  # the graph and its check, as the image build makes them
    print("before:", machine_line(), flush=True)
    app, service = served_app(model)
    engine = service.info["engine"]
    print(f"engine: {engine['engine']} ({engine.get('reason', '')})", flush=True)
    rounds = {kind: [] for kind in args.inputs}
    for _ in range(args.rounds):
        for kind in args.inputs:  # alternate the inputs round by round
            rounds[kind].append(stages(app, service, uploads[kind][0], args.runs))
    print("after: ", load_average())
    print("\n| input | decode | prepare | network | the rest | whole request, in-process |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, rows in rounds.items():
        med = {stage: statistics.median(r[stage] for r in rows) for stage in rows[0]}
        rest = [r["whole request"] - r["decode"] - r["prepare"] - r["network"] for r in rows]
        cells = [f"{med[s]:.1f} ({min(r[s] for r in rows):.1f}-{max(r[s] for r in rows):.1f}) ms"
                 for s in ("decode", "prepare", "network")]
        print(f"| {kind} | {' | '.join(cells)} | {statistics.median(rest):.1f} "
              f"({min(rest):.1f}-{max(rest):.1f}) ms | {med['whole request']:.1f} ms |")


if __name__ == "__main__":
    main()
