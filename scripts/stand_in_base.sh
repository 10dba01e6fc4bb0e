#!/usr/bin/env bash
# Build a stand-in for python:3.11-slim from Debian packages and load it into buildah,
# for machines that cannot pull from Docker Hub. Debian bookworm's python3 is 3.11,
# the version the project is tested on; `python` is linked to python3 as in the
# official image. The host's CA bundle goes in so pip works behind a TLS-inspecting
# proxy. The root filesystem is cached as a tarball (CACHE_DIR) and reused when present.
#
#   scripts/stand_in_base.sh [IMAGE_NAME]      # default: localhost/python-stand-in:3.11-slim
#   ENGINE=docker scripts/stand_in_base.sh     # load it into docker instead of buildah
set -euo pipefail
NAME=${1:-localhost/python-stand-in:3.11-slim}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/image-classifier}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARBALL="$CACHE_DIR/stand-in-bookworm-python3.tar"
ENGINE=${ENGINE:-buildah}

if $ENGINE image inspect "$NAME" >/dev/null 2>&1 || $ENGINE inspect --type image "$NAME" >/dev/null 2>&1; then
  echo "stand-in base $NAME already present"; exit 0
fi
mkdir -p "$CACHE_DIR"
if [ ! -s "$TARBALL" ]; then
  root=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$root" "$MIRROR"
  ln -sf python3 "$root/usr/bin/python"
  [ -f /etc/ssl/certs/ca-certificates.crt ] \
    && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  # What the official slim image leaves out too: apt lists, docs, caches.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
         "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" --numeric-owner -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
fi
if [ "$ENGINE" = docker ]; then
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$TARBALL" "$NAME"
  exit 0
fi
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
tar -C "$mnt" --numeric-owner -xf "$TARBALL"
buildah umount "$ctr" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
               --env LANG=C.UTF-8 --cmd python3 "$ctr"
buildah commit --format docker "$ctr" "$NAME"
echo "stand-in base: $NAME"
