"""Turning untrusted bytes or files into the RGB images the model sees.

One function, `load_rgb`, is used by training (it is the DataBlock's `get_x`,
so it is pickled by reference into export.pkl) and by serving, so a photo is
normalised the same way in both: EXIF orientation applied, first frame of an
animation, palette/alpha/CMYK/16-bit/grayscale converted to 8-bit RGB.
`open_checked` adds the guards serving needs for untrusted uploads.
"""
from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Our own pixel limit is checked from the header before decoding (see
# open_checked); Pillow's global bomb guard stays on as a second fence.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

# Formats a browser or phone produces, plus the ones the seeds' datasets use.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
# The only Pillow decoders untrusted bytes may reach (Pillow opens a phone's multi-picture
# MPO JPEG through its JPEG reader). Pillow has ~40 readers; some (EPS) hand the data to external programs.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


class ImageError(ValueError):
    """Base for input problems that are the sender's fault (a 4xx, not a 500)."""

    code = "invalid_image"


class InvalidImage(ImageError):
    code = "invalid_image"


class ImageTooLarge(ImageError):
    code = "image_too_large"


def _source_to_pil(source) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(source)))
    return Image.open(Path(source))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float32)
        peak = float(arr.max()) if arr.size else 0.0
        if im.mode == "F" and peak <= 1.0:
            arr = arr * 255.0
        elif peak > 255.0:
            arr = arr / 257.0  # 16-bit range onto 8-bit
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def _normalise(im: Image.Image) -> Image.Image:
    try:
        im.seek(0)
    except (EOFError, AttributeError, ValueError):
        pass
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block must not lose an otherwise good image
        pass
    im.load()
    return _to_rgb(im)


def load_rgb(source) -> Image.Image:
    """Open a path, bytes or PIL image as an oriented 8-bit RGB image.

    This is the DataBlock `get_x` of every model we train, so `learn.predict`
    on a path and our serving path see identical pixels.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _normalise(_source_to_pil(source))


def open_checked(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode untrusted bytes, refusing bombs from the header before any pixel is decoded."""
    if not data:
        raise InvalidImage("The file is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = im.size
            if width <= 0 or height <= 0:
                raise InvalidImage("The image declares no pixels.")
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"The image is {width}x{height} pixels ({width * height / 1e6:.1f} MP); "
                    f"this server accepts at most {max_pixels / 1e6:.1f} MP."
                )
            return _normalise(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"The image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImage("The file is not an image format we can read "
                           "(JPEG, PNG, GIF, WebP, BMP or TIFF).") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError,
            EOFError, struct.error, ZeroDivisionError, MemoryError, RuntimeError) as exc:
        raise InvalidImage(f"The image could not be decoded: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def verify_image_file(path: Path) -> str | None:
    """Return why `path` cannot be used for training, or None when it can.

    Stricter than fastai's verify_images: it fully decodes the pixels (catching
    truncated files) without ever touching the file on disk.
    """
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with path.open("rb") as fh:
            data = fh.read()
        open_checked(data, max_pixels=Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_IMAGE_PIXELS * 4)
        return None
    except ImageError as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable: {_short(exc)}"
