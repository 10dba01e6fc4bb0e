# syntax=docker/dockerfile:1
# The image fly.io runs: CPU-only torch, the Flask app under gunicorn, the model baked in.
# Build after training:  make train && docker build -t image-classifier .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# PyTorch's CPU wheel index (override for a mirror). CUDA wheels would push the
# image past fly.io's 8 GB unpacked limit for no gain on a CPU machine.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 app
WORKDIR /srv
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080 \
    MODEL_PATH=models/export.pkl
COPY classifier/ classifier/
COPY app/ app/
COPY templates/ templates/
COPY static/ static/
COPY gunicorn.conf.py gunicorn.conf.py
COPY models/ models/
RUN test -f models/export.pkl || { \
      echo "ERROR: models/export.pkl is missing. Train one first (make train, or python -m training.train DATA_DIR) or copy your notebook's export.pkl into models/." >&2; \
      exit 1; }
USER app
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
