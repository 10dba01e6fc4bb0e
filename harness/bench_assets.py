"""Photo-like images and an untrained resnet18 export at 224 px: what the speed benchmarks
measure with. Generated here, so nothing is downloaded; untrained weights do not change speed."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from harness.notebook import export_like_a_notebook


def make_photo(rng, size=(640, 480)) -> Image.Image:
    """A photo-like JPEG source: gradient sky, shapes, blur and sensor noise."""
    w, h = size
    y = np.linspace(0, 1, h)[:, None, None]
    base = (np.array(rng.integers(40, 220, 3)) * (1 - y) + np.array(rng.integers(20, 200, 3)) * y)
    im = Image.fromarray(np.broadcast_to(base, (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(20, 300), y0 + rng.integers(20, 200)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(im, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def phone_photo(rng, orientation: int | None = 6) -> Image.Image:
    """A 12 MP photo as a phone stores it: 4032x3024, landscape, EXIF saying how to turn it."""
    im = make_photo(rng, (1008, 756)).resize((4032, 3024), Image.Resampling.BICUBIC)
    noisy = np.asarray(im, dtype=np.int16) + rng.normal(0, 3, (3024, 4032, 3)).astype(np.int16)
    im = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.info["exif"] = exif.tobytes()
    return im


# kind -> (filename, MIME type) of its uploads
INPUTS = {"small": ("photo.jpg", "image/jpeg"), "phone": ("IMG_0001.jpg", "image/jpeg"),
          "heic": ("IMG_0001.heic", "image/heic")}


def upload_images(kind: str, rng, n_images: int) -> list[tuple[str, bytes, str]]:
    """Uploads of one INPUTS kind as (filename, bytes, MIME type), for harness.load.drive."""
    import classifier.images  # noqa: F401 - registers the HEIF writer

    out = []
    for _ in range(n_images if kind == "small" else min(n_images, {"phone": 4, "heic": 2}[kind])):
        im = make_photo(rng) if kind == "small" else phone_photo(rng)
        buf = io.BytesIO()
        if kind == "heic":  # x265's fastest preset: encoding a 12 MP HEIC otherwise takes minutes
            im.save(buf, "HEIF", quality=80, exif=im.info["exif"],
                    enc_params={"preset": "ultrafast"})
        else:
            im.save(buf, "JPEG", quality=90, exif=im.info.get("exif", b""))
        out.append((*INPUTS[kind][:1], buf.getvalue(), INPUTS[kind][1]))
    return out


def build_assets(workdir: Path, size: int, n_images: int, kinds) -> tuple[Path, dict]:
    """An untrained resnet18 export at `size` px in `workdir` (made once: reused when there),
    and `n_images` uploads of each of `kinds` (INPUTS)."""
    rng = np.random.default_rng(0)
    data = workdir / "data"
    for label in ("cat", "dog", "bird"):
        (data / label).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            make_photo(rng).save(data / label / f"{i}.jpg", quality=90)
    model = workdir / "export.pkl"
    if not model.exists():
        export_like_a_notebook(data, model, size=size, epochs=0, bs=4)
    return model, {kind: upload_images(kind, rng, n_images) for kind in kinds}


def compile_with_examples(model: Path) -> None:
    """build_assets' export compiled as the image build does, with its training photos as the
    model's examples (examples/<label>/), so the compile step also makes the int8 copy."""
    import shutil

    from classifier.onnx_compile import compile_model

    for label_dir in sorted((model.parent / "data").iterdir()):
        shutil.copytree(label_dir, model.parent / "examples" / label_dir.name, dirs_exist_ok=True)
    compile_model(model)


def smooth_photo(size, seed=0, colour=None) -> Image.Image:
    """Smooth colour noise with a block: a photo's cost to encode and decode, not its looks."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 255, (max(1, h // 16), max(1, w // 16), 3), dtype=np.uint8)
    im = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)
    if colour:
        im.paste(colour, (w // 4, h // 4, w // 2, h // 2))
    noise = rng.normal(0, 4, (h, w, 3)) if w * h <= 13_000_000 else 0
    return Image.fromarray(np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8))


PHONE_CLASSES = ("disc", "box")  # what labelled_photos' classes hold: a large ellipse or rectangle
EASY_COLOURS = ((230, 40, 30), (30, 60, 230))  # `colours` for an easy set: a red disc, a blue box


def labelled_photo(rng, label: str, size=(4032, 3024), colours=None) -> Image.Image:
    """make_photo's scene (a dozen random shapes) plus one large shape that is the class: an
    ellipse ("disc") or a rectangle ("box") of random colour, place and size. Learnable, but
    not at a glance: the distractors are ellipses and rectangles too. `colours`, one per
    class, makes it easy: the class's shape always has its colour."""
    w, h = size
    im = make_photo(rng, (max(16, w // 4), max(12, h // 4)))
    draw = ImageDraw.Draw(im)
    side = int(rng.integers(im.height // 3, im.height // 2))
    x0, y0 = rng.integers(0, im.width - side), rng.integers(0, im.height - side)
    colour = tuple(int(c) for c in rng.integers(0, 255, 3))
    if colours:
        colour = colours[PHONE_CLASSES.index(label)]
    shape = draw.ellipse if label == PHONE_CLASSES[0] else draw.rectangle
    shape([x0, y0, x0 + side, y0 + side], fill=colour, outline=(0, 0, 0), width=max(1, side // 20))
    return im.resize(size, Image.Resampling.BICUBIC) if im.size != size else im


def write_labelled_photos(root: Path, per_class: int, size=(4032, 3024), seed: int = 0,
                          colours=None) -> Path:
    """root/<disc|box>/IMG_<n>.jpg: phone photos (JPEG q90) stored sideways with EXIF
    orientation 6, as a phone held upright stores them. Written once: kept when complete."""
    rng = np.random.default_rng(seed)
    for label in PHONE_CLASSES:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = labelled_photo(rng, label, size, colours)
            path = folder / f"IMG_{i:04d}.jpg"
            if not path.exists():
                exif = Image.Exif()
                exif[0x0112] = 6
                im.transpose(Image.Transpose.ROTATE_90).save(
                    path.with_suffix(".tmp"), "JPEG", quality=90, exif=exif.tobytes())
                path.with_suffix(".tmp").rename(path)
    return root
