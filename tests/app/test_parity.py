"""Predictor against learn.predict: same top-1, probabilities within 1e-4, both runtimes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from classifier.images import open_checked
from classifier.inference import Predictor
from classifier.model_files import load_learner_checked
from harness.images import FORMATS, encode, photo
from harness.notebook import export_like_a_notebook


@pytest.fixture(scope="module")
def squish_export(image_folder, tmp_path_factory):
    """A second input size and resize method: 48x40, squished, ImageNet-normalised, untrained."""
    return export_like_a_notebook(image_folder, tmp_path_factory.mktemp("squish") / "export.pkl",
                                  size=(48, 40), method="squish", normalize=True, epochs=0)


def decoded_samples():
    """Four photos of different sizes and colours, each through another format, decoded."""
    images = [photo((64, 48), seed=1), photo((300, 200), seed=2, colour=(30, 200, 40)),
              photo((41, 97), seed=3, colour=(30, 40, 220)), photo((32, 32), seed=4)]
    return [open_checked(encode(im, fmt)) for im, fmt in zip(images, FORMATS)]


@pytest.mark.parametrize("which", ["notebook", "squish"])
@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_predictor_matches_learn_predict(which, runtime, request):
    path = request.getfixturevalue("notebook_export" if which == "notebook" else "squish_export")
    learn, _ = load_learner_checked(path)
    predictor = Predictor(learn, runtime=runtime)
    assert predictor.runtime == runtime
    assert predictor.image_size == ((32, 32) if which == "notebook" else (48, 40))
    images = decoded_samples()
    batch = predictor.predict_batch(images)
    for image, from_batch in zip(images, batch):
        with learn.no_bar():
            label, index, probs = learn.predict(image)
        single = predictor.predict(image)
        for ours in (single, from_batch):
            assert ours.label == str(label) and ours.index == int(index)
            np.testing.assert_allclose(list(ours.probabilities.values()), probs.numpy(),
                                       atol=1e-4, rtol=0)
            assert list(ours.probabilities) == [str(v) for v in learn.dls.vocab]


def test_loading_process_keeps_no_session_and_stays_fork_safe(notebook_export):
    torch.set_num_threads(1)
    learn, _ = load_learner_checked(notebook_export)
    predictor = Predictor(learn, runtime="onnx")
    assert predictor._sessions == {}  # made lazily in the process that predicts
    predictor.predict(decoded_samples()[0])
    assert len(predictor._sessions) == 1
