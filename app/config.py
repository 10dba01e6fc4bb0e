"""Settings: one table, the fields of `Settings`, of every environment variable the server reads.

Each field is written once, with its variable, default, parser and the line the docs show;
`load_settings`, `ENV_NAMES` and docs/serving.md's table of settings (app/settings_docs.py,
written by `make settings-docs`) all come from it; the parsers are in app/setting_parsers.py. A default computed from the machine (workers,
threads, runtime) is a function from app/machine.py. The app keeps its Settings in
`app.extensions` (`app_settings()`); gunicorn.conf.py reads the same ones.

Our own table rather than pydantic-settings: the parsers here are what the table needs
anyway (a one-line ConfigError naming the variable, on/off switches, blank meaning the
default, paths resolved from the working directory, comma-separated origins, defaults
computed from the machine), and pydantic would add validators for each of those, a
translation of its multi-line ValidationError, and two packages to the lean image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from flask import current_app

from app import machine
from app.machine import MB
from app.setting_parsers import (
    ConfigError,
    fraction,
    header_name,
    origins,
    path,
    ports,
    positive_number,
    precision_name,
    rates,
    runtime_name,
    store_location,
    switch,
    text,
    version_name,
    whole_number,
)
from classifier.images import DEFAULT_MAX_DECLARED_PIXELS, DEFAULT_MAX_IMAGE_PIXELS
from classifier.versions import MODEL_FILE, pointer_root, version_dir

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_KEY = "settings"  # the app's Settings in app.extensions


def setting(env: str, default, parse, doc: str, shown: str | None = None):
    """One row: a Settings field read from `env` by `parse`, and the docs' line for it.
    `default` is a value, or a function of the machine (the docs then show `shown`)."""
    meta = {"env": env, "parse": parse, "doc": doc, "shown": shown}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    model_path: Path = setting(
        "MODEL_PATH", ROOT / "models" / "export.pkl", path,
        "The fastai export to serve (relative to the working directory). `export.json` beside"
        " it, when present, gives `/model`'s metadata, the \"not sure\" threshold and the "
        "sha256 the file must match. `examples/<label>/<image>` beside it become one-click "
        "examples on the form; `report/` beside it is served at `/report`.")
    model_poll_seconds: float = setting(
        "MODEL_POLL_SECONDS", 2.0, positive_number,
        "How often each worker looks at `models/live.json` (the pointer that `python -m "
        "training.promote` and `rollback` move); when it names another version, the worker "
        "loads and checks that version beside the one it serves and switches between "
        "requests. `kill -HUP` on the master makes every worker look at once "
        "([versions](#model-versions-hot-swap)).")
    port: int = setting("PORT", 8000, whole_number,
                        "gunicorn binds `0.0.0.0:$PORT` (the container sets 8080).")
    workers: int = setting(
        "WEB_CONCURRENCY", machine.default_worker_count, whole_number, shown="one per CPU (1 to 4), "
        "capped by the memory limit", doc="gunicorn worker processes ([workers and "
        "threads](#workers-and-threads)).")
    threads: int = setting(
        "THREADS", 8, whole_number, "Real threads per worker that decode uploads and run the model. "
        "Connections are not limited by it (see `MAX_CONNECTIONS`).")
    inference_threads: int = setting(
        "INFERENCE_THREADS", machine.default_inference_threads, whole_number, shown="the CPU count",
        doc="torch and onnxruntime threads per worker: a lone request's network uses every core.")
    runtime: str = setting(
        "INFERENCE_RUNTIME", machine.runtime_for_this_machine, runtime_name,
        shown="`auto`, or `torch` where one worker with onnxruntime does not fit the memory limit",
        doc="`auto`: onnxruntime when the export converts and matches PyTorch (logits within "
        "1e-3) at start-up, else PyTorch. `onnx` (fail start-up if it cannot) or `torch`. "
        "Unset, the default image picks `torch` where one worker with onnxruntime would not "
        "fit 85 % of the container's memory limit (a 1 GB machine; `default_runtime` in "
        "`app/machine.py`, [deploy.md](deploy.md#how-it-scales)); the lean image has no torch "
        "and refuses `torch`.")
    inference_precision: str = setting(
        "INFERENCE_PRECISION", "auto", precision_name,
        "With `INFERENCE_RUNTIME=auto` and the compiled graph serving, which engine runs it is "
        "measured at the first start on each machine (cached): onnxruntime f32, OpenVINO f32 "
        "and, where the CPU has bf16, OpenVINO bf16 (the default image; the lean image has "
        "onnxruntime only). `auto`: the fastest with 100 % top-1 agreement and probabilities "
        "within 0.01 of learn.predict on the model's examples. `exact`: f32 only, within 1e-4. "
        "`int8`: the graph's int8 copy on onnxruntime or OpenVINO is admitted too, with 100 % "
        "top-1 agreement and probabilities within 0.1 (a shown confidence may move by up to 10 "
        "points; [engines](#which-engine-runs-the-graph-inference_precision)).")
    max_upload_mb: float | None = setting(
        "MAX_UPLOAD_MB", None, positive_number, "Largest request body, all files together (413 "
        "`payload_too_large`); for JSON, the decoded images together. Phone photos are 2–8 MB "
        "(the form shrinks them), 108 MP ones 24–36 MB, 200 MP ones 45–65 MB "
        "([reliability.md](reliability.md#a-memory-budget-for-bodies)).",
        shown="half of `BODY_BUDGET_MB`, at most 40")
    body_budget_mb: float | None = setting(
        "BODY_BUDGET_MB", None, positive_number, "Most MB of request bodies a worker holds at once "
        "(arriving, waiting or decoding; JSON counts 2.1 times): past it 503 `busy` with "
        "`Retry-After`, before the body is read; over all of it, 413. Unset: the memory limit "
        "less the idle server, the model's file, the other workers and one decode at "
        "`MAX_IMAGE_PIXELS` per worker, shared among them (512 with no limit; "
        "[reliability.md](reliability.md#a-memory-budget-for-bodies)).",
        shown="what the memory limit leaves each worker")
    max_image_pixels: int = setting(
        "MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, whole_number,
        "Most pixels actually decoded, width × height (413 `image_too_large`). A baseline "
        "JPEG counts at its reduced decoding scale (a 200 MP JPEG decodes 3.1 MP at 1/8); a "
        "progressive JPEG counts in full. Formats whose decoder holds several copies get a "
        "share: WebP a quarter (10 MP), AVIF a third, HEIC 1/1.6 (25 MP) "
        "([reliability.md](reliability.md#decoding-in-bounded-memory-and-time)).")
    max_declared_pixels: int = setting(
        "MAX_DECLARED_PIXELS", DEFAULT_MAX_DECLARED_PIXELS, whole_number,
        "Most pixels a file's header may claim, checked before any pixel is decoded (413 "
        "`image_too_large`; decompression bombs). A 200 MP photo is 16320 × 12240 = 199.8 MP."
        " Pillow's own bomb guard is raised to match.")
    exact_decode: bool = setting(
        "EXACT_DECODE", False, switch,
        "`true`: decode every image at full size, as fastai does, instead of at the size the "
        "model needs ([images](#images-formats-decoding-limits)).")
    max_batch: int = setting(
        "MAX_BATCH", 32, whole_number, "Most images in one `/predict` request (`file` fields, or "
        "`images` in JSON; 413 `payload_too_large`).")
    api_key: str | None = setting(
        "API_KEY", None, text,
        "When set, `/predict` and `/feedback` require `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>` (401 `unauthorized`; compared in constant time). The form, "
        "`/model`, `/docs`, health and metrics stay public. `/review` (`REVIEW_DIR`) always "
        "needs it: a sign-in form, or the same headers.")
    cors_origins: tuple[str, ...] = setting(
        "CORS_ORIGINS", (), origins,
        "Comma-separated origins allowed to call the JSON API from a browser (`*` for any): "
        "`Access-Control-Allow-Origin` on responses and preflight (`OPTIONS /predict`) "
        "answers.")
    read_timeout: float = setting(
        "READ_TIMEOUT", 10.0, positive_number,
        "Seconds a client may pause while sending its request body (and while a response is "
        "written); also the grace period before `MIN_UPLOAD_KBPS` applies. A stalled upload "
        "gets 400 `bad_request`.")
    header_timeout: int = setting(
        "HEADER_TIMEOUT", 10, whole_number,
        "Seconds for the whole request head, from the connection's start or from the previous"
        " response on a keep-alive connection (gunicorn's `keepalive`). Past it the "
        "connection is closed without an answer.")
    min_upload_kbps: float = setting(
        "MIN_UPLOAD_KBPS", 20.0, positive_number,
        "After `READ_TIMEOUT` seconds, the body must keep up this average (KB/s), checked "
        "every 64 KB (`app/upload_deadline.py`); a trickle gets 400 `bad_request` and the "
        "connection closes. A 10 MB body may take at most 10 s + 10 MB ÷ 20 KB/s ≈ 522 s.")
    max_connections: int = setting(
        "MAX_CONNECTIONS", 1000, whole_number,
        "Open connections per worker. Past it a new connection gets, at once, 503 "
        "`too_many_connections` with `Retry-After: 1` and `Connection: close`; 256 more per "
        "worker are accepted only to be told so, and beyond that the kernel queues them "
        "(`backlog` 1024). gunicorn.conf.py raises the open-files soft limit to fit (up to "
        "the hard limit).")
    unsure_threshold: float | None = setting(
        "UNSURE_THRESHOLD", None, fraction,
        "A number from 0 to 1 that overrides the model's own \"not sure\" threshold "
        "(export.json) for the whole server; `0` means never unsure.")
    explanations: bool = setting(
        "EXPLANATIONS", True, switch,
        "`off`: `?explain=1` answers 409 `explanation_unavailable`, and with onnxruntime "
        "serving the PyTorch weights are freed after the start-up parity check (saving their "
        "memory); where the checked compiled graph serves, PyTorch is not loaded at all. `on` "
        "keeps them: Grad-CAM needs the PyTorch model even when onnxruntime serves "
        "predictions; behind a compiled graph each worker loads it after start-up (503 "
        "`explanations_loading` until then). The lean image has no PyTorch model, so it "
        "never explains.")
    allow_url_fetch: bool = setting(
        "ALLOW_URL_FETCH", False, switch,
        "`on`: `/predict` fetches `{\"url\": ...}` itself "
        "([URL input](#url-input-off-by-default)).")
    allow_url_fetch_loopback: bool = setting(
        "ALLOW_URL_FETCH_LOOPBACK", False, switch,
        "Lets URL fetching reach 127.0.0.0/8 and ::1 only. Exists for the tests' local "
        "server; never set it in production.")
    url_fetch_ports: tuple[int, ...] = setting(
        "URL_FETCH_PORTS", (80, 443), ports, shown="`80,443`",
        doc="Comma-separated ports URL fetching may connect to; any other is refused "
        "(`url_not_allowed`) before DNS.")
    models_url: str | None = setting(
        "MODELS_URL", None, store_location,
        "Model versions shared by several machines: `s3://BUCKET/PREFIX` holding the layout of "
        "`models/` (`versions/<name>/`, `live.json`). At start-up and every "
        "`MODEL_POLL_SECONDS` the server copies the version the bucket's `live.json` names into "
        "MODEL_PATH's folder and serves it from there; a bucket that does not answer leaves the "
        "current version serving ([several machines](deploy.md#several-machines-on-fly)). "
        "Unset: MODEL_PATH's folder alone.")
    feedback_dir: str | None = setting(
        "FEEDBACK_DIR", None, store_location,
        "Where `POST /feedback` keeps corrected images (`<label>/<sha256>.jpg` and "
        "`feedback.jsonl`): a folder, or `s3://BUCKET/PREFIX` shared by several machines "
        "(credentials and endpoint from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, "
        "`AWS_REGION`, `AWS_ENDPOINT_URL_S3`; gunicorn refuses to start when it cannot write to "
        "the bucket; [shared](#in-a-bucket-shared-by-several-machines)); "
        "unset: corrections are off "
        "([corrections](#corrections-that-become-training-data-feedback_dir)).")
    feedback_max_mb: float = setting(
        "FEEDBACK_MAX_MB", 500.0, positive_number,
        "Most megabytes `FEEDBACK_DIR` may hold (images and `feedback.jsonl`); past it a "
        "correction gets 507 `feedback_full`. A stored correction is about 50–150 KB (a "
        "JPEG at the size the model decodes), so 500 MB holds the default file count and "
        "leaves half of fly's smallest (1 GB) volume free.")
    feedback_max_files: int = setting(
        "FEEDBACK_MAX_FILES", 10000, whole_number,
        "Most images `FEEDBACK_DIR` may hold (507 `feedback_full` past it): far more than "
        "people correct by hand before someone retrains, few enough that counting them on "
        "each correction takes milliseconds.")
    review_dir: Path | None = setting(
        "REVIEW_DIR", None, path,
        "Where the server keeps images for people to label on `/review`: those it was not "
        "sure of and a `REVIEW_SAMPLE` of the others, at the model's input size without "
        "metadata (`<sha256>.jpg` and `.json`); unset: off. A local folder (a volume), not "
        "a bucket: an item is claimed by renaming its file. Needs `FEEDBACK_DIR` (where "
        "labelled ones go) and `API_KEY` (the page shows users' photos) "
        "([review queue](#a-review-queue-review_dir)).")
    review_sample: float = setting(
        "REVIEW_SAMPLE", 0.01, fraction,
        "The share of sure answers also kept for review (0 to 1): a check on the answers the "
        "model is confident of, which the \"not sure\" ones never show.")
    review_max_mb: float = setting(
        "REVIEW_MAX_MB", 100.0, positive_number,
        "Most megabytes `REVIEW_DIR` may hold; past it new images are dropped (counted in "
        "`classifier_review_dropped_total`), never failing a request. A queued image is "
        "15–40 KB at 224 px.")
    review_max_files: int = setting(
        "REVIEW_MAX_FILES", 2000, whole_number,
        "Most images `REVIEW_DIR` may hold (new ones dropped past it): a few hours of a "
        "person's labelling, few enough that counting them takes milliseconds.")
    predict_rate: str = setting(
        "PREDICT_RATE", "120/minute", rates,
        "Requests to `/predict` (and the form's `POST /`) per client per worker (429 "
        "`rate_limited` with `Retry-After`). A person sends one every few seconds at most; "
        "a script batches up to `MAX_BATCH` images per request, so 120 a minute is more "
        "than one CPU classifies.")
    explain_rate: str = setting(
        "EXPLAIN_RATE", "30/minute", rates,
        "Images explained (`?explain=1`, one Grad-CAM each) per client per worker (429 "
        "`rate_limited`). A Grad-CAM costs several predictions; a person ticking the box "
        "explains one photo every few seconds at most.")
    max_explanations: int = setting(
        "MAX_EXPLANATIONS", 4, whole_number,
        "Most images one `?explain=1` request may carry (400 `too_many_explanations`); the "
        "form sends one. Keep it within `EXPLAIN_RATE`'s count, or such a request never fits.")
    feedback_rate: str = setting(
        "FEEDBACK_RATE", "10/minute;200/day", rates,
        "Corrections per client per worker (429 `rate_limited`). A person corrects a "
        "wrong answer now and then, far below either; 200 a day keeps one client from "
        "filling `FEEDBACK_MAX_FILES` in a day.")
    client_ip_header: str | None = setting(
        "CLIENT_IP_HEADER", None, header_name,
        "The header that names the client's address, set by the proxy in front "
        "(`Fly-Client-IP` on fly.io; fly.toml sets it). Unset: the connection's address. "
        "Set it only behind a proxy that overwrites it, or clients choose their own budget.")
    shadow_model: str | None = setting(
        "SHADOW_MODEL", None, version_name,
        "A version under `models/versions/` that answers a share of live requests as a "
        "shadow, off the request path: its answers are never sent, only compared with the "
        "served model's in `/metrics`, `/shadow` and `/model` "
        "([shadow candidate](#a-shadow-candidate-shadow_model)). Start-up is refused when it "
        "does not fit the memory limit beside the served model; a shadow that fails to load "
        "leaves the server serving without it and `/model` says why.")
    shadow_share: float = setting(
        "SHADOW_SHARE", 0.1, fraction,
        "The share of requests (0 to 1) that `SHADOW_MODEL` also answers, chosen at random. "
        "Requests that arrive while the shadow is behind are not shadowed (counted as "
        "dropped).")
    drift_window: int = setting(
        "DRIFT_WINDOW", 200, whole_number,
        "Answers per model version each worker scores for drift against the training "
        "reference ([field signals](#field-signals-and-drift-metrics-and-monitor)). The score "
        "appears once a worker's window is full; a larger window is steadier on unchanged "
        "traffic and slower to see a shift.")
    drift_threshold: float = setting(
        "DRIFT_THRESHOLD", 0.25, positive_number,
        "The drift score (population-stability index scale) above which the traffic has "
        "shifted significantly: `/monitor` marks it and deploy/alerts.yml alerts on it. "
        "0.25 is PSI's usual reading of a significant shift.")

    def __post_init__(self):
        """Defaults that follow other settings (the body budget, then MAX_UPLOAD_MB from it);
        settings that need others (REVIEW_DIR)."""
        if self.body_budget_mb is None:
            object.__setattr__(self, "body_budget_mb", machine.default_body_budget(
                self.workers, self.model_path, self.max_image_pixels, self.shadow_path) / MB)
        if self.max_upload_mb is None:
            object.__setattr__(self, "max_upload_mb", machine.default_max_upload(self.body_budget))
        if self.review_dir is not None and (self.feedback_dir is None or not self.api_key):
            raise ConfigError("REVIEW_DIR needs FEEDBACK_DIR (where labelled images go) and "
                              "API_KEY (the /review page shows users' photos).")

    @property
    def shadow_path(self) -> Path | None:
        """SHADOW_MODEL's export.pkl (models/versions/<name>/ beside MODEL_PATH), or None."""
        if self.shadow_model is None:
            return None
        return version_dir(pointer_root(self.model_path), self.shadow_model) / MODEL_FILE

    @property
    def body_budget(self) -> int:
        return int(self.body_budget_mb * MB)

    @property
    def max_content_length(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def feedback_max_bytes(self) -> int:
        return int(self.feedback_max_mb * MB)

    @property
    def review_max_bytes(self) -> int:
        return int(self.review_max_mb * MB)


# The environment variables read (create_app's config accepts the same names).
ENV_NAMES = tuple(f.metadata["env"] for f in fields(Settings))


def load_settings(environ=None, overrides=None) -> Settings:
    """Settings from `environ` (default os.environ), then `overrides` (same names) on top.
    A blank value means the default; a bad one raises ConfigError naming the variable."""
    source = dict(os.environ if environ is None else environ)
    source.update({k: v for k, v in (overrides or {}).items() if v is not None})
    given = {}
    for f in fields(Settings):
        name, raw = f.metadata["env"], source.get(f.metadata["env"])
        if raw is not None and str(raw).strip() != "":
            given[f.name] = f.metadata["parse"](name, raw)
    return Settings(**given)


def app_settings(app=None) -> Settings:
    """The Settings of `app` (default: the app handling this request)."""
    return (app or current_app).extensions[SETTINGS_KEY]
