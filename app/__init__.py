"""The web service: `create_app()` builds the Flask app around one loaded model.

    gunicorn -c gunicorn.conf.py "app:create_app()"

`config` overrides the environment variables of the same names (MODEL_PATH,
MAX_BATCH, API_KEY, ...; see app/config.py); other upper-case keys go to Flask.
A model that cannot be served raises ModelLoadError (a RuntimeError whose
message is one line), which gunicorn prints as "Error: ..." before exiting 1.
"""
from __future__ import annotations

import logging
import os

from flask import Flask

from app.config import ENV_NAMES, ROOT, load_settings
from classifier.model_files import ModelLoadError

__all__ = ["create_app", "ModelLoadError"]

# Non-file form fields (an example name): small. werkzeug applies this to its parse
# buffer too, which takes 64 KiB reads, so it must stay well above that.
FORM_MEMORY_BYTES = 512 * 1024
FORM_PARTS_SLACK = 8  # form parts beyond MAX_BATCH files (the example button, etc.)


def with_read_timeout(wsgi_app, seconds: float):
    """Bound how long a client may pause while the app reads its request (READ_TIMEOUT).

    gunicorn's gthread worker reads the body in a blocking socket call with no timeout,
    so a client that stalls mid-upload would hold a thread forever. With a timeout the
    read fails, the client gets a 400 and the thread is free again. (gthread resets the
    socket to blocking before each request, so keep-alive is not affected.)
    """
    def app(environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            sock.settimeout(seconds)
        return wsgi_app(environ, start_response)
    return app


def create_app(config: dict | None = None) -> Flask:
    from app.model_service import ModelService

    config = dict(config or {})
    settings = load_settings(overrides={k: v for k, v in config.items() if k in ENV_NAMES})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    service = ModelService(settings).load()
    # Under gunicorn each worker warms up after the fork (gunicorn.conf.py); anywhere
    # else (tests, flask run) the app is ready as soon as it is returned.
    if not os.environ.get("CLASSIFIER_WARM_UP_IN_WORKERS"):
        service.warm_up()

    app = Flask(__name__, template_folder=str(ROOT / "templates"),
                static_folder=str(ROOT / "static"))
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_content_length,
        MAX_FORM_MEMORY_SIZE=FORM_MEMORY_BYTES,
        MAX_FORM_PARTS=settings.max_batch + FORM_PARTS_SLACK,
    )
    app.config.update({k: v for k, v in config.items() if k not in ENV_NAMES})
    app.json.sort_keys = False  # probabilities stay in vocab order
    app.wsgi_app = with_read_timeout(app.wsgi_app, settings.read_timeout)
    app.extensions["classifier"] = service

    from app import api, feedback, health, web
    from app.errors import register_error_handlers
    from app.metrics import init_metrics
    from app.request_id import init_request_id

    init_request_id(app)
    init_metrics(app)
    register_error_handlers(app)
    app.register_blueprint(web.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(feedback.bp)
    return app
