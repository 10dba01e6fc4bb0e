"""Which files are images: the one table of the formats we read (uploads and training folders
alike) and the one walker that lists the images in a folder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageFormat:
    """One image format we read, in uploads and in training folders alike."""

    pillow: str  # Pillow's format name (Image.open's `formats=`, Image.format)
    name: str  # what people call it
    mime: str
    suffixes: tuple[str, ...]  # the first is the one we write


# Formats a browser or phone produces, plus the ones the seeds' datasets use. These are the
# only Pillow decoders untrusted bytes may reach: Pillow has ~40 readers, and some (EPS)
# hand the data to external programs.
FORMATS = (
    ImageFormat("JPEG", "JPEG", "image/jpeg", (".jpg", ".jpeg")),
    ImageFormat("PNG", "PNG", "image/png", (".png",)),
    ImageFormat("GIF", "GIF", "image/gif", (".gif",)),
    ImageFormat("WEBP", "WebP", "image/webp", (".webp",)),
    ImageFormat("BMP", "BMP", "image/bmp", (".bmp",)),
    ImageFormat("TIFF", "TIFF", "image/tiff", (".tif", ".tiff")),
    ImageFormat("HEIF", "HEIC", "image/heic", (".heic", ".heif")),
    ImageFormat("AVIF", "AVIF", "image/avif", (".avif",)),
)
ALLOWED_FORMATS = tuple(f.pillow for f in FORMATS)
IMAGE_EXTENSIONS = frozenset(suffix for f in FORMATS for suffix in f.suffixes)
FORMAT_NAMES = ", ".join(f.name for f in FORMATS[:-1]) + f" or {FORMATS[-1].name}"
# Pillow opens a phone's multi-picture JPEG (MPO) through its JPEG reader.
_BY_PILLOW = {**{f.pillow: f for f in FORMATS}, "MPO": FORMATS[0]}


def image_format(pillow_format: str | None) -> ImageFormat | None:
    """The table's row for a Pillow format name (`Image.format`), or None."""
    return _BY_PILLOW.get(pillow_format or "")


def find_image_files(folder: Path, every_file: bool = False) -> list[Path]:
    """The image files under `folder` (any depth, linked folders too), sorted; hidden files
    and folders (a leading dot: .DS_Store, .ipynb_checkpoints) are left out.

    `every_file`: whatever the suffix, for a caller that decodes each file and says why
    one is not an image (training) rather than passing over it in silence.
    """
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a folder reached again through a link (a loop, say): once is enough
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath, name) for name in filenames if not name.startswith(".")
                  and (every_file or Path(name).suffix.lower() in IMAGE_EXTENSIONS)]
    return sorted(found)
