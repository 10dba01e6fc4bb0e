"""Served probabilities against learn.predict on the same file, with reduced and exact decoding.

Our exports decode through RGBLoader (their get_x), so serving and learn.predict see the
same pixels by default. A notebook export decodes in full (fastai's PILImage.create), so
parity with it holds with an exact decode (EXACT_DECODE=on, RGBLoader(size, exact=True)); the
default's gap is measured in
benchmarks/decode_bench.py, not asserted here.
"""
from __future__ import annotations

import numpy as np
import pytest

from classifier.images import DECODE_MARGIN, RESIZE_ONLY_MARGIN, RGBLoader, open_checked
from classifier.inference import Predictor
from classifier.model_files import load_learner_checked
from tests.images.conftest import big_photo, encode

pytestmark = pytest.mark.slow  # trains a model once per session (tests/conftest.py)


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    """640x480 JPEGs (one stored sideways with EXIF orientation 6) and a PNG."""
    folder = tmp_path_factory.mktemp("photos")
    files = []
    for i, colour in enumerate([(220, 30, 30), (30, 200, 40), (30, 40, 220)]):
        im = big_photo((640, 480), seed=10 + i)
        im.paste(colour, (200, 150, 440, 330))
        path = folder / f"{i}.jpg"
        path.write_bytes(encode(im, "JPEG", 6 if i == 0 else None, quality=90))
        files.append(path)
    png = folder / "3.png"
    png.write_bytes(encode(big_photo((600, 400), seed=20), "PNG"))
    return files + [png]


def served(predictor: Predictor, path, exact: bool):
    side = predictor.decode_side(exact)
    return predictor.predict(open_checked(path.read_bytes(), min_side=side))


def assert_same(learn, predictor, files, exact: bool):
    for path in files:
        with learn.no_bar():
            label, index, probs = learn.predict(path)
        ours = served(predictor, path, exact)
        assert (ours.label, ours.index) == (str(label), int(index)), path.name
        np.testing.assert_allclose(list(ours.probabilities.values()), probs.numpy(),
                                   atol=1e-4, rtol=0, err_msg=path.name)


def decode_in_full(learn, image_size) -> None:
    """Make `learn` what an export made with RGBLoader(size, exact=True) is."""
    from fasttransform import Transform

    pipeline = learn.dls.valid_ds.tls[0].tfms  # learn.predict's get_x, then PILImage.create
    assert "RGBLoader" in repr(pipeline.fs[0])
    pipeline.fs[0] = Transform(RGBLoader(image_size, exact=True))


@pytest.mark.parametrize("exact", [False, True], ids=["reduced", "exact"])
def test_our_export_matches_learn_predict_on_the_same_file(trained_model, photo_files, exact):
    assert b"RGBLoader" in trained_model.read_bytes()  # its get_x decodes as serving does
    learn, _ = load_learner_checked(trained_model)
    predictor = Predictor(learn)
    if exact:
        decode_in_full(learn, predictor.image_size)
    else:  # the photos really are decoded smaller than stored: as small as the Resize
        assert predictor.decode_margin == RESIZE_ONLY_MARGIN  # trained without augmentation
        assert predictor.decode_side() == max(predictor.image_size)
        side = predictor.decode_side()
        assert open_checked(photo_files[1].read_bytes(), min_side=side).size == (80, 60)
    assert_same(learn, predictor, photo_files, exact)


def test_notebook_export_matches_learn_predict_with_exact_decode(notebook_export, photo_files):
    """fastai's own get_x ignores EXIF orientation, so only the upright files are compared."""
    learn, _ = load_learner_checked(notebook_export)
    predictor = Predictor(learn)
    assert predictor.decode_margin == DECODE_MARGIN  # trained on full decodes: served twice as large
    assert_same(learn, predictor, photo_files[1:], exact=True)
