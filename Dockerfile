# syntax=docker/dockerfile:1
# The image fly.io runs: the Flask app under gunicorn with the model baked in (docs/deploy.md).
#   make image                      # the default target: CPU-only torch + fastai, loads export.pkl
#   make image TARGET=lean          # no torch, no fastai: the ONNX graph compiled at build time
# Build after training (make train), or with a notebook's export.pkl copied into models/.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
RUN useradd --create-home --uid 10001 app
WORKDIR /srv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080 \
    MODEL_PATH=models/export.pkl
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]

# Layers: with buildah's vfs storage (machines without overlayfs, such as CI here) every
# build step copies the whole filesystem below it, twice (its working container and the
# layer it commits), 6.7 GB each above the torch venv with the CUDA wheels. So the stages
# on top of it add two layers: the app's files and the model in one COPY from the small
# stages below, and the build-time work in one RUN.

# The app's own files, with their bytecode (the app's user cannot write /srv, so it would
# otherwise be recompiled at every start).
FROM base AS app-files
COPY classifier/ classifier/
COPY app/ app/
COPY templates/ templates/
COPY static/ static/
COPY gunicorn.conf.py gunicorn.conf.py
# training/: `python -m training.promote` and `training.rollback` through `fly ssh console`
# (docs/deploy.md#updating-the-model); the model itself never imports it.
COPY training/ training/
RUN python -m compileall -q app classifier training

# ... and the model the default target serves.
FROM app-files AS app-and-model
COPY models/ models/

# The venv stages hold nothing but /opt/venv (pip's cache is a cache mount) and, for torch,
# matplotlib's font cache: fastai imports matplotlib, whose cache is built here rather
# than at every container start.
# torch, fastai and the rest of requirements.txt. TORCH_INDEX_URL is PyTorch's CPU wheel index:
# CUDA wheels would add about 5 GB for nothing on a CPU machine. Set it empty to take
# torch from pip's configured index where the CPU index cannot be reached.
FROM base AS torch-venv
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ENV MPLCONFIGDIR=/opt/matplotlib
# Two steps, torch first: committing a step holds its files several times over (the
# working container, the layer's blob, the new layer), so two smaller steps lower a first
# build's peak disk use (with the CUDA wheels: 27.6 GB in one step, measured in docs/deploy.md).
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
 && pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /tmp/requirements.txt \
 && python -c "import matplotlib.font_manager" && chown -R app /opt/matplotlib

# The lean target's packages: serving only (gevent for the worker, pillow-heif for HEIC, s3fs
# for a FEEDBACK_DIR in a bucket), at requirements.txt's pins (-c), no torch or fastai.
FROM base AS lean-venv
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
 && pip install -c /tmp/requirements.txt flask werkzeug gunicorn gevent pillow pillow-heif \
        prometheus-client limits onnxruntime s3fs

# The app with the model: the ONNX graph and the learner's preprocessing compiled once,
# here, checked against learn.predict (the build fails beyond 1e-4; a graph already there is
# reused only if its sidecar records that check). The default target serves from this stage
# as it is; the lean target takes the compiled model without the .pkl from /opt/lean-models.
FROM torch-venv AS compiled
COPY --from=app-and-model /srv/ ./
# The model served is models/export.pkl, or the live version models/live.json names
# (docs/training.md#outputs): a version's graph was compiled and checked when it was trained.
RUN served=$(python -c "from classifier.versions import served_model_path; print(served_model_path('models/export.pkl'))") \
 && { test -f "$served" || { \
      echo "ERROR: $served is missing. Train one first (make train, or python -m training.train DATA_DIR) or copy your notebook's export.pkl into models/." >&2; \
      exit 1; }; } \
 && { python -c "import sys; from classifier.onnx_model import read_checked; sys.exit(read_checked(sys.argv[1]) is None)" "$served" \
      || python -m classifier.onnx_compile "$served"; } \
 && cp -a models /opt/lean-models && find /opt/lean-models -name export.pkl -delete

# --target lean: onnxruntime, numpy, Pillow, Flask and gevent: 428 MB measured (docs/deploy.md).
FROM lean-venv AS lean
COPY --from=app-files /srv/ ./
COPY --from=compiled /opt/lean-models/ models/
USER app

# The default target (last stage): torch and fastai. It serves the ONNX graph compiled and
# checked above from start-up, without importing torch, and loads export.pkl in each worker
# behind it, for explanations (app/explainer.py).
FROM compiled AS default
USER app
