#!/usr/bin/env bash
# Build the Dockerfile with docker (when its daemon answers) or buildah (no daemon needed).
#
#   scripts/build_image.sh [TARGET [TAG [CONTEXT]]]   # TARGET: default | lean
#
# Where python:3.11-slim cannot be pulled, the build uses a stand-in made from Debian
# packages (scripts/stand_in_base.sh). Torch comes from PyTorch's CPU index; where that
# index cannot be reached, from pip's configured index (PyPI's CUDA wheels: larger, and
# they run on CPU). Set TORCH_INDEX_URL to choose yourself (empty: pip's default index).
# buildah runs with chroot isolation and keeps a layer cache (--layers), so a rebuild
# after a code change reuses the pip install.
set -euo pipefail
TARGET=${1:-default}
TAG=${2:-image-classifier:$TARGET}
CONTEXT=${3:-.}
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=${PYTHON_IMAGE:-python:3.11-slim}
STAND_IN=localhost/python-stand-in:3.11-slim

if docker info >/dev/null 2>&1; then
  ENGINE=docker
elif command -v buildah >/dev/null 2>&1; then
  ENGINE=buildah
else
  echo "error: neither a docker daemon nor buildah found; install one (apt-get install buildah)" >&2
  exit 3
fi

if [ "$BASE" = python:3.11-slim ] && ! timeout 120 $ENGINE pull -q "$BASE" >/dev/null 2>&1; then
  echo "note: cannot pull $BASE; building on a stand-in made from Debian packages" >&2
  ENGINE=$ENGINE "$HERE/stand_in_base.sh" "$STAND_IN" >&2
  BASE=$STAND_IN
fi

if [ -z "${TORCH_INDEX_URL+set}" ]; then
  TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
  if ! curl -fsS --max-time 15 -o /dev/null "$TORCH_INDEX_URL/torch/"; then
    TORCH_INDEX_URL=$(pip config get global.index-url 2>/dev/null || echo https://pypi.org/simple)
    echo "note: PyTorch's CPU index is unreachable; torch comes from $TORCH_INDEX_URL (CUDA wheels)" >&2
  fi
fi

args=(--target "$TARGET" --build-arg "PYTHON_IMAGE=$BASE" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
      -t "$TAG" -f "$CONTEXT/Dockerfile")
if [ "$ENGINE" = docker ]; then
  DOCKER_BUILDKIT=1 docker build "${args[@]}" "$CONTEXT"
else
  buildah bud --isolation chroot --format docker --layers --force-rm "${args[@]}" "$CONTEXT"
fi
echo "built $TAG with $ENGINE"
