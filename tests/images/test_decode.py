"""Decoding at the size the model needs: sizes kept, orientation, formats and limits."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from classifier.images import (
    RESIZE_ONLY_MARGIN,
    ImageTooLarge,
    InvalidImage,
    RGBLoader,
    decode_side,
    load_rgb,
    open_checked,
)
from harness.hostile_images import heif_avif_declaring, jpeg_declaring, png_declaring
from tests.images.conftest import big_photo, encode, flat_gray_jpeg

MODEL_SIZE = 224
SIDE = decode_side(MODEL_SIZE)


def exact(data: bytes) -> Image.Image:
    return open_checked(data, max_pixels=10**9)


def close_to(reduced: Image.Image, full: Image.Image) -> float:
    """Mean absolute difference (0-255) between `reduced` and `full` resized to its size."""
    ref = full.resize(reduced.size, Image.Resampling.BOX)
    return float(np.abs(np.asarray(reduced, np.float32) - np.asarray(ref, np.float32)).mean())


def test_decode_side_is_the_margin_times_the_larger_model_side(monkeypatch):
    assert decode_side(224) == 448
    assert decode_side((48, 40)) == 96
    assert decode_side(224, margin=RESIZE_ONLY_MARGIN) == 224
    assert decode_side(None) is None
    assert decode_side(224, exact=True) is None
    # The decoder reads no environment: EXACT_DECODE reaches it only through its caller
    # (the server's Settings, the batch CLI's --exact-decode).
    monkeypatch.setenv("EXACT_DECODE", "true")
    assert decode_side(224) == 448


def test_jpeg_is_decoded_at_reduced_scale_keeping_twice_the_model_size(jpeg_12mp, photo_12mp):
    im = open_checked(jpeg_12mp, min_side=SIDE)
    assert im.size == (1008, 756)  # libjpeg's 1/4 scale: the smallest keeping 448 px
    assert min(im.size) >= 2 * MODEL_SIZE
    assert close_to(im, photo_12mp) < 4
    assert load_rgb(jpeg_12mp, SIDE).tobytes() == im.tobytes()  # training decodes the same
    assert exact(jpeg_12mp).size == photo_12mp.size


def test_a_model_trained_without_augmentation_decodes_a_12mp_jpeg_at_one_eighth(jpeg_12mp, photo_12mp,
                                                                               tmp_path):
    loader = RGBLoader(MODEL_SIZE, margin=RESIZE_ONLY_MARGIN)  # training/data.py's, no augmentation
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_12mp)
    im = loader(path)
    assert im.size == (504, 378)  # libjpeg's 1/8 scale keeps the 224 px the Resize takes
    assert close_to(im, photo_12mp) < 4
    assert pickle.loads(pickle.dumps(loader)).margin == RESIZE_ONLY_MARGIN
    assert repr(loader) == "RGBLoader(224, margin=1)"


@pytest.mark.parametrize("orientation, transpose", [(6, Image.Transpose.ROTATE_270),
                                                    (8, Image.Transpose.ROTATE_90)])
def test_reduced_decode_keeps_exif_orientation(orientation, transpose, photo_12mp):
    data = encode(photo_12mp, "JPEG", orientation, quality=90)
    upright = photo_12mp.transpose(transpose)  # what a phone shows
    im = open_checked(data, min_side=SIDE)
    assert im.size == (756, 1008)  # portrait, as shown
    assert min(im.size) >= SIDE
    assert close_to(im, upright) < 4
    # the red corner is where the viewer sees it (top-right for 6, bottom-left for 8)
    corner = (im.width - 20, 20) if orientation == 6 else (20, im.height - 20)
    red, green, blue = im.getpixel(corner)
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "HEIF", "AVIF"])
def test_other_formats_are_reduced_by_a_whole_factor(fmt):
    source = big_photo((800, 600), seed=1)  # small: the HEIF and AVIF encoders are slow
    data = encode(source, fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    im = open_checked(data, min_side=decode_side(64))
    assert im.size == (200, 150)  # 600 // 128 = 4
    assert close_to(im, exact(data)) < 1  # the same picture, only smaller
    assert exact(data).size == (800, 600)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_honour_exif_orientation(fmt):
    source = big_photo((800, 600), seed=2)
    im = open_checked(encode(source, fmt, 6), min_side=decode_side(64))
    assert im.size == (150, 200)  # reduced by 4 (600 // 128), shown portrait
    red, green, blue = im.getpixel((im.width - 10, 10))
    assert red > 200 and green < 60 and blue < 60


def test_reduction_is_idempotent_so_learn_predict_on_a_decoded_image_matches(jpeg_12mp):
    once = load_rgb(jpeg_12mp, SIDE)
    assert load_rgb(once, SIDE).tobytes() == once.tobytes()


def test_rgb_loader_pickles_by_reference_and_decodes_like_serving(jpeg_12mp, tmp_path):
    blob = pickle.dumps(RGBLoader(MODEL_SIZE))
    assert b"classifier.images" in blob and b"RGBLoader" in blob
    loader = pickle.loads(blob)
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_12mp)
    assert loader(path).tobytes() == open_checked(jpeg_12mp, min_side=SIDE).tobytes()
    assert load_rgb(path).size == (4032, 3024)  # exports made before RGBLoader: a full decode


def test_exact_decode_turns_reduction_off(jpeg_12mp, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_12mp)
    assert RGBLoader(MODEL_SIZE, exact=True)(path).size == (4032, 3024)
    old = RGBLoader.__new__(RGBLoader)  # as an export pickled before `exact` and `margin` loads
    old.__dict__.update(image_size=MODEL_SIZE)
    assert old(path).size == RGBLoader(MODEL_SIZE)(path).size == (1008, 756)  # as it trained


# ---------------------------------------------------------------- limits
def test_max_declared_pixels_above_250_mp_lets_a_larger_photo_through(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    data = flat_gray_jpeg(20480, 15360)  # 314.6 MP declared: a 1.2 MB baseline JPEG
    with pytest.raises(ImageTooLarge):
        open_checked(data, min_side=decode_side(64))  # the default ceiling, 250 MP
    im = open_checked(data, min_side=decode_side(64), max_declared=400_000_000)
    assert min(im.size) >= decode_side(64) and im.getpixel((0, 0)) == (128, 128, 128)


def test_pixel_limit_counts_the_pixels_decoded(jpeg_12mp):
    """A 12 MP baseline JPEG under a 4 MP limit: accepted at 1/4 scale, refused in full."""
    assert open_checked(jpeg_12mp, max_pixels=4_000_000, min_side=SIDE).size == (1008, 756)
    with pytest.raises(ImageTooLarge, match="decodes at most 4.0 MP"):
        open_checked(jpeg_12mp, max_pixels=4_000_000)


def test_progressive_jpeg_counts_in_full(photo_12mp):
    """libjpeg holds a progressive JPEG's every coefficient whatever the scale."""
    data = encode(photo_12mp, "JPEG", quality=80, progressive=True)
    with pytest.raises(ImageTooLarge):
        open_checked(data, max_pixels=4_000_000, min_side=SIDE)
    assert open_checked(data, min_side=SIDE).size == (1008, 756)


def test_header_ceiling_refuses_bombs_whatever_the_decode_scale():
    with pytest.raises(ImageTooLarge):
        open_checked(png_declaring(50_000, 50_000), min_side=SIDE)
    # 400 MP declared: at 1/8 scale it would decode only 6.25 MP, still refused from the header
    with pytest.raises(ImageTooLarge):
        open_checked(jpeg_declaring(20_000, 20_000), min_side=SIDE)
    # a 144 MP header is under the ceiling: decoded at 1/8 scale (2.25 MP), then reduced by 3
    assert open_checked(jpeg_declaring(12_000, 12_000), min_side=SIDE).size == (500, 500)
    with pytest.raises(ImageTooLarge):
        open_checked(jpeg_declaring(12_000, 12_000), min_side=SIDE, max_declared=100_000_000)
    with pytest.raises(ImageTooLarge, match="accepts at most 100 MP"):
        open_checked(png_declaring(12_000, 12_000), max_declared=100_000_000)


@pytest.mark.parametrize("name, data", sorted(heif_avif_declaring(50_000, 50_000).items()))
def test_heic_and_avif_declaring_huge_sizes_are_refused(name, data):
    with pytest.raises((InvalidImage, ImageTooLarge)):
        open_checked(data, min_side=SIDE)


def test_damaged_heic_and_avif_are_invalid_images_never_other_errors():
    import random

    from harness.hostile_images import bitflipped
    from harness.images import image_bytes, truncated

    rng = random.Random(3)
    for fmt in ("HEIF", "AVIF"):
        good = image_bytes(fmt, (64, 48))
        assert open_checked(good).size == (64, 48)
        refused = 0
        for i in range(60):
            bad = truncated(good, rng.random()) if i % 2 else bitflipped(good, rng, rng.choice((1, 8)))
            try:
                open_checked(bad)
            except InvalidImage:
                refused += 1
        assert refused > 20, fmt  # most damage is noticed; none raises anything else


def test_heic_decoder_is_allow_listed_and_others_stay_out():
    from harness.images import image_bytes

    with pytest.raises(InvalidImage, match="HEIC or AVIF"):
        open_checked(image_bytes("PPM", (16, 16)))
    assert open_checked(image_bytes("HEIF", (16, 16))).size == (16, 16)


def test_training_check_decodes_large_jpegs_reduced_yet_finds_truncation(jpeg_12mp, tmp_path,
                                                                         monkeypatch):
    from classifier import images

    decoded = []
    real = images._normalise
    monkeypatch.setattr(images, "_normalise",
                        lambda im, side=None: decoded.append(real(im, side).size) or im)
    good, cut = tmp_path / "good.jpg", tmp_path / "cut.jpg"
    good.write_bytes(jpeg_12mp)
    cut.write_bytes(jpeg_12mp[:len(jpeg_12mp) * 9 // 10])
    assert images.verify_image_file(good) is None
    assert decoded == [(1008, 756)]  # 1/4 scale, not 12 MP
    assert "truncated" in images.verify_image_file(cut)


def test_multi_picture_jpeg_from_a_phone_is_reduced_too():
    """Phones store MPO (a JPEG followed by more JPEGs); its first picture is the photo."""
    first, second = big_photo((2000, 1500), seed=4), big_photo((2000, 1500), seed=5)
    data = encode(first, "MPO", save_all=True, append_images=[second])
    im = open_checked(data, max_pixels=1_000_000, min_side=decode_side(64))
    assert im.size == (250, 188)  # 1/8 scale
    assert close_to(im, first) < close_to(im, second) / 3
