"""Turning untrusted bytes or files into the RGB images the model sees.

One function, `load_rgb`, is used by training (through `RGBLoader`, the DataBlock's
`get_x`, pickled by reference into export.pkl) and by serving, so a photo is
normalised the same way in both: decoded no larger than the model needs, EXIF
orientation applied, first frame of an animation, palette/alpha/CMYK/16-bit/grayscale
converted to 8-bit RGB. `open_checked` adds the guards serving needs for untrusted uploads.

Decoding at the size the model needs: a 12 MP phone photo costs about 100 ms to decode
in full and as much again for fastai's Resize, against 30-60 ms for a 224 px network.
So a JPEG is decoded at 1/2, 1/4 or 1/8 scale inside libjpeg (Pillow's draft mode), and
any other format is shrunk by a whole factor (`Image.reduce`) right after decoding, both
keeping the shorter side at least twice the model's larger input side (once for a model
trained without augmentation: RGBLoader's `margin`); the learner's own Resize then does
the rest. `exact=True` (the server's EXACT_DECODE setting, the batch
CLI's --exact-decode) turns this off. The form (static/shrink.js) repeats this arithmetic
in the browser to send a photo already reduced; tests/app/test_form_shrink_browser.py
checks that the two agree.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from classifier.decode_guard import PIXEL_COST, check_opened, check_structure
from classifier.image_files import ALLOWED_FORMATS, FORMAT_NAMES

# HEIC/HEIF (iPhones) through libheif; Pillow reads AVIF itself.
pillow_heif.register_heif_opener()

# The most pixels a server decodes for one upload (after any reduced-scale JPEG decode).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# The most pixels a file may declare in its header, whatever is then decoded: above a
# 200 MP phone photo (16320 x 12240), far below a decompression bomb's billions.
DEFAULT_MAX_DECLARED_PIXELS = 250_000_000


def keep_pillow_fence_above(max_declared: int) -> None:
    """Pillow's Image.open refuses files declaring over twice Image.MAX_IMAGE_PIXELS: keep
    that second fence just above our own header ceiling, so the ceiling is the one that acts."""
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_declared // 2 + 1)


keep_pillow_fence_above(DEFAULT_MAX_DECLARED_PIXELS)


# Modes `Image.reduce` averages correctly; others are converted to RGB band by band.
_REDUCIBLE_MODES = ("RGB", "RGBA", "L", "LA", "I", "F", "CMYK")
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_BAND_PIXELS = 1 << 20  # pixels converted at a time (RGBA + its composite: about 12 MB)

# Checking a training file decodes it no smaller than this (see verify_image_file).
VERIFY_SIDE = 512
# Every decode keeps its shorter side at least this many times the model's larger side:
# twice by default, as every model trained with augmentation needs (RandomResizedCrop keeps
# as little as half the area, then resizes it to the input) and as exports older than
# RGBLoader's `margin`, and notebook exports trained on full decodes, expect (served twice as
# large, a 12 MP photo's probabilities stay within 0.008 of its full decode's; once, 0.046);
DECODE_MARGIN = 2
# once for a model trained without augmentation, whose Resize takes the whole decoded image:
# a 12 MP JPEG then decodes at 1/8 scale, not 1/4 (13 against 16 ms, and its Resize 1 against
# 3 ms), with the same accuracy (docs/training.md#why-the-defaults-are-what-they-are).
RESIZE_ONLY_MARGIN = 1


class ImageError(ValueError):
    """Base for input problems that are the sender's fault (a 4xx, not a 500)."""

    code = "invalid_image"


class InvalidImage(ImageError):
    code = "invalid_image"


class ImageTooLarge(ImageError):
    code = "image_too_large"


def decode_side(image_size, exact: bool = False, margin: int = DECODE_MARGIN) -> int | None:
    """The shorter side a decode must keep for a model of input `image_size` (int or (h, w)),
    `margin` times its larger side, or None (decode in full) when the size is unknown or
    `exact` is asked for."""
    if not image_size or exact:
        return None
    sides = (image_size, image_size) if isinstance(image_size, int) else image_size
    return margin * max(int(s) for s in sides)


class RGBLoader:
    """`load_rgb` for a model of a given input size: the DataBlock's `get_x`.

    An instance pickles as this class (by reference) plus its size and switch, so an export
    loads wherever classifier.images imports, and `learn.predict(path)` decodes exactly
    as serving does. Exports made before it carry `load_rgb` itself, which decodes in full.
    `exact=True` (training's way to ask for EXACT_DECODE) decodes in full too. `margin`:
    see DECODE_MARGIN and RESIZE_ONLY_MARGIN.
    """

    exact = False  # exports pickled before `exact` existed
    margin = DECODE_MARGIN  # exports pickled before `margin` existed
    cache = None  # training's DecodeCache (training/data.py) while a run lasts; never pickled

    def __init__(self, image_size, exact: bool = False, margin: int = DECODE_MARGIN):
        self.image_size, self.exact, self.margin = image_size, exact, margin

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "cache"}

    def __call__(self, source) -> Image.Image:
        if self.cache is not None and isinstance(source, (str, os.PathLike)):
            return self.cache.image(Path(source), self.decode)
        return self.decode(source)

    @property
    def min_side(self) -> int | None:
        """The shorter side its decodes keep (None: in full)."""
        return decode_side(self.image_size, self.exact, self.margin)

    def decode(self, source) -> Image.Image:
        return load_rgb(source, self.min_side)

    def __repr__(self) -> str:
        margin = f", margin={self.margin}" if self.margin != DECODE_MARGIN else ""
        return f"RGBLoader({self.image_size!r}{', exact=True' if self.exact else ''}{margin})"


def _source_to_pil(source) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(source)))
    return Image.open(Path(source))


def _to_rgb(im: Image.Image, peak: float | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on white.

    A 16-bit or float image is scaled by its brightest value, `peak` (found here unless
    given: a band of a larger image needs the whole image's)."""
    if im.mode == "RGB":
        return im
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im, dtype=np.float32)
        if peak is None:
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


def _draft(im: Image.Image, min_side: int | None) -> None:
    """Ask a JPEG's decoder for the smallest 1/2, 1/4 or 1/8 scale keeping `min_side`."""
    if min_side and im.format in ("JPEG", "MPO") and min(im.size) >= 2 * min_side:
        im.draft(im.mode, (min_side, min_side))


def _reduce(im: Image.Image, min_side: int | None) -> Image.Image:
    """Shrink a decoded image by the largest whole factor that keeps `min_side`.

    `Image.reduce` averages pixel values, so a palette, 1-bit or 16-bit image is turned
    into RGB first: a band of rows at a time, each reduced before the next is converted,
    never the whole image at full size (a 40 MP palette PNG took 600 MB that way).
    """
    factor = max(1, min(im.size) // min_side if min_side else 1)
    if im.mode in _REDUCIBLE_MODES:
        return im.reduce(factor) if factor > 1 else im  # keeps im.info (EXIF orientation)
    peak = float(im.getextrema()[1]) if im.mode in _WIDE_MODES else None
    rows = max(1, _BAND_PIXELS // max(1, im.width * factor)) * factor
    out = Image.new("RGB", (-(-im.width // factor), -(-im.height // factor)))
    for top in range(0, im.height, rows):
        band = _to_rgb(im.crop((0, top, im.width, min(top + rows, im.height))), peak)
        out.paste(band.reduce(factor) if factor > 1 else band, (0, top // factor))
    out.info.update(im.info)
    return out


def _normalise(im: Image.Image, min_side: int | None = None) -> Image.Image:
    try:
        im.seek(0)
    except (EOFError, AttributeError, ValueError):
        pass
    _draft(im, min_side)
    im.load()
    im = _reduce(im, min_side)
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block must not lose an otherwise good image
        pass
    return _to_rgb(im)


def load_rgb(source, min_side: int | None = None) -> Image.Image:
    """Open a path, bytes or PIL image as an oriented 8-bit RGB image.

    With `min_side`, decode no larger than needed to keep the shorter side at least that
    long (see the module doc). Training calls this through `RGBLoader`, so
    `learn.predict` on a path and our serving path see identical pixels.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _normalise(_source_to_pil(source), min_side)


def open_checked(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 min_side: int | None = None,
                 max_declared: int = DEFAULT_MAX_DECLARED_PIXELS) -> Image.Image:
    """Decode untrusted bytes, refusing bombs from the header before any pixel is decoded.

    `max_declared` bounds the size a header may claim; `max_pixels` bounds the pixels
    actually decoded (a JPEG decoded at 1/8 scale counts 1/64 of its declared pixels).
    """
    if not data:
        raise InvalidImage("The file is empty (0 bytes).")
    keep_pillow_fence_above(max_declared)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            check_structure(data, max_pixels)
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            check_opened(im.info)
            width, height = im.size
            if width <= 0 or height <= 0:
                raise InvalidImage("The image declares no pixels.")
            if width * height > max_declared:
                raise ImageTooLarge(
                    f"The image is {width}x{height} pixels ({width * height / 1e6:.1f} MP); "
                    f"this server accepts at most {max_declared / 1e6:.0f} MP.")
            _draft(im, min_side)
            # A progressive JPEG keeps every DCT coefficient of the full image (as many
            # values as pixels) in memory, whatever scale it is decoded at.
            decoded = width * height if im.info.get("progressive") else im.size[0] * im.size[1]
            # WebP, HEIC and AVIF decoders hold several copies of the picture.
            limit = int(max_pixels / PIXEL_COST.get(im.format, 1))
            if decoded > limit:
                raise ImageTooLarge(
                    f"The image is {width}x{height} pixels ({width * height / 1e6:.1f} MP); "
                    f"this server decodes at most {limit / 1e6:.1f} MP of {im.format}"
                    + (" (a baseline JPEG may be larger: it is decoded at reduced scale)."
                       if min_side and im.format in ("JPEG", "MPO") else "."))
            image = _normalise(im, min_side)
            # What the upload was, for the field signals (app/field_signals.py).
            image.info.update(upload_format=im.format, upload_size=(width, height))
            return image
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"The image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"The file is not an image format we can read ({FORMAT_NAMES}).") \
            from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError,
            EOFError, struct.error, ZeroDivisionError, MemoryError, RuntimeError) as exc:
        raise InvalidImage(f"The image could not be decoded: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def verify_image_file(path: Path, min_side: int | None = VERIFY_SIDE, keep=None) -> str | None:
    """Return why `path` cannot be used for training, or None when it can.

    Stricter than fastai's verify_images: it decodes every pixel's data (catching
    truncated files) without ever touching the file on disk. A large JPEG is decoded at
    reduced scale, which still reads its whole stream but holds 1/64 of the pixels, so
    checking a folder of 200 MP photos on several threads stays within memory. `keep`:
    called with the file's os.stat_result (taken before it was read) and the image decoded
    to keep `min_side`, which is what training's RGBLoader decodes: the training command
    keeps it rather than decode the file again.
    """
    try:
        stat = path.stat()
        if stat.st_size == 0:
            return "empty file (0 bytes)"
        with path.open("rb") as fh:
            data = fh.read()
        image = open_checked(data, max_pixels=DEFAULT_MAX_DECLARED_PIXELS, min_side=min_side)
        if keep is not None:
            keep(stat, image)
        return None
    except ImageError as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable: {_short(exc)}"
