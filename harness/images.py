"""Images made in-process with Pillow: photos, every format and mode an upload can bring, and
the labelled folders the training tests learn from. Nothing is downloaded."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

import classifier.image_files
import classifier.images  # registers pillow-heif, which writes and reads HEIF

# Every format the server reads, by Pillow's name: its MIME type and the suffix we write.
FORMATS = list(classifier.image_files.ALLOWED_FORMATS)
MIME = {f.pillow: f.mime for f in classifier.image_files.FORMATS}
EXT = {f.pillow: f.suffixes[0].lstrip(".") for f in classifier.image_files.FORMATS}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
TEXT = b"hello, this is not an image\n" * 10


def photo(size=(64, 48), seed=0, colour=(220, 30, 30)) -> Image.Image:
    """Noise with a coloured square, like the training folders."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 90, (size[1], size[0], 3)).astype(np.uint8)
    pixels[4:28, 4:28] = colour
    return Image.fromarray(pixels)


def encode(im: Image.Image, fmt: str = "PNG", orientation: int | None = None, **kwargs) -> bytes:
    """`im` saved as `fmt`; with `orientation`, an EXIF orientation tag (6, 8: a phone held
    sideways) that viewers apply on top of the stored pixels."""
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def image_bytes(fmt: str, size=(48, 40), mode: str = "RGB", seed: int = 0, **save) -> bytes:
    """Random pixels of `size` in `mode`, encoded as `fmt` (Pillow's save options in `save`)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(pixels, "RGB")
    return encode(im if mode == "RGB" else im.convert(mode), fmt, **save)


def truncated(data: bytes, fraction: float = 0.5) -> bytes:
    return data[:max(0, int(len(data) * fraction))]


def make_image_folder(root: Path, per_class: int = 16, size=(48, 40), seed: int = 0) -> Path:
    """DATA_DIR/<label>/<n>.png: a coloured square on noise, easy to learn in one epoch."""
    rng = np.random.default_rng(seed)
    for label, colour in COLOURS.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (size[1], size[0], 3)).astype(np.uint8)
            x, y = rng.integers(0, 12, 2)
            pixels[y:y + 24, x:x + 24] = colour
            Image.fromarray(pixels).save(folder / f"{label}_{i:03d}.png")
    return root


def shuffled_image_folder(root: Path, per_class: int, seed: int) -> list[Path]:
    """make_image_folder's images (fresh ones for another seed), in a shuffled order: a stream
    of traffic like the training images."""
    make_image_folder(root, per_class=per_class, seed=seed)
    paths = sorted(root.glob("*/*.png"))
    np.random.default_rng(seed).shuffle(paths)
    return paths


def exif_rotated(fmt: str = "JPEG") -> tuple[bytes, Image.Image]:
    """An image stored sideways with EXIF orientation 6, and the upright image it shows."""
    upright = photo((64, 48))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 undoes this
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, fmt, exif=exif.tobytes(), quality=95), upright


def mode_variants() -> dict[str, bytes]:
    base = photo()
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    sixteen = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    return {
        "RGBA-png": encode(rgba, "PNG"),
        "P-png": encode(base.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "L-png": encode(base.convert("L"), "PNG"),
        "LA-png": encode(base.convert("LA"), "PNG"),
        "CMYK-jpeg": encode(base.convert("CMYK"), "JPEG"),
        "CMYK-tiff": encode(base.convert("CMYK"), "TIFF"),
        "I16-png": encode(sixteen, "PNG"),
        "1-bmp": encode(base.convert("1"), "BMP"),
    }


def animated_gif() -> bytes:
    frames = [photo(seed=i, colour=c) for i, c in enumerate([(220, 30, 30), (30, 40, 220)])]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                  loop=0)
