"""The web service: `create_app()` builds the Flask app around one loaded model.

    gunicorn -c gunicorn.conf.py "app:create_app()"

`config` overrides the environment variables of the same names (MODEL_PATH,
MAX_BATCH, API_KEY, ...; see app/config.py); other upper-case keys go to Flask. The
app keeps its Settings in app.extensions: `app.config.app_settings()` returns them.
Under gunicorn, gunicorn.conf.py hands over the settings it loaded
(`serve_preloaded`), and the workers warm up after the fork.
A model that cannot be served raises ModelLoadError (a RuntimeError whose
message is one line), which gunicorn prints as "Error: ..." before exiting 1.
"""
from __future__ import annotations

import logging

from flask import Flask

from app.body_budget import BodyBudget, with_body_budget
from app.config import ENV_NAMES, ROOT, SETTINGS_KEY, Settings, load_settings
from app.upload_deadline import with_upload_deadline
from app.uploads import UploadRequest
from classifier.model_files import ModelLoadError

__all__ = ["create_app", "serve_preloaded", "ModelLoadError"]

# Non-file form fields (an example name): small. werkzeug applies this to its parse
# buffer too, which takes 64 KiB reads, so it must stay well above that.
FORM_MEMORY_BYTES = 512 * 1024
FORM_PARTS_SLACK = 8  # form parts beyond MAX_BATCH files (the example button, etc.)


_preloaded_settings: Settings | None = None


def serve_preloaded(settings: Settings | None) -> None:
    """gunicorn.conf.py, in the master: the next create_app() uses `settings` and does not warm
    up (None takes that back).

    gunicorn calls create_app() in its master (preload_app) and forks the workers from
    it; each worker warms up after the fork (post_worker_init), since a child forked
    from a process that ever ran torch on several threads hangs (app/model_service.py).
    """
    global _preloaded_settings
    _preloaded_settings = settings


def create_app(config: dict | None = None) -> Flask:
    from app.model_service import ModelService

    global _preloaded_settings
    config = dict(config or {})
    preloaded, _preloaded_settings = _preloaded_settings, None
    settings = preloaded or load_settings(
        overrides={k: v for k, v in config.items() if k in ENV_NAMES})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    service = ModelService(settings).load()
    if not preloaded:  # tests, flask run: ready, and explaining, as soon as it is returned
        service.warm_up()
        service.load_explanations(background=False)

    app = Flask(__name__, template_folder=str(ROOT / "templates"),
                static_folder=str(ROOT / "static"))
    app.request_class = UploadRequest
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_content_length,
        MAX_FORM_MEMORY_SIZE=FORM_MEMORY_BYTES,
        MAX_FORM_PARTS=settings.max_batch + FORM_PARTS_SLACK,
    )
    app.config.update({k: v for k, v in config.items() if k not in ENV_NAMES})
    app.extensions[SETTINGS_KEY] = settings  # app_settings() reads them
    app.json.sort_keys = False  # probabilities stay in vocab order
    app.wsgi_app = with_upload_deadline(app.wsgi_app, settings.read_timeout,
                                        settings.min_upload_kbps * 1024)
    # Outside the deadline: its bodies are reserved before a byte is read. Made in the
    # gunicorn master, so each forked worker has a budget of its own.
    app.wsgi_app = with_body_budget(app.wsgi_app, BodyBudget(settings.body_budget))
    service.install(app)

    from app import api, feedback, field_signals, health, limits, monitor, pages, web
    from app.errors import register_error_handlers
    from app.metrics import init_metrics
    from app.request_id import init_request_id

    limits.install(app, settings)
    init_request_id(app)
    init_metrics(app)
    field_signals.install(app, service.signals)
    register_error_handlers(app)
    app.register_blueprint(web.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(feedback.bp)
    app.register_blueprint(monitor.bp)
    if settings.review_dir is not None:
        from app import review
        from app.review_queue import ReviewQueue

        service.review = ReviewQueue(settings)
        app.register_blueprint(review.bp)
    return app
