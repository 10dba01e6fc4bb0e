"""Exports whose DataBlock used functions defined in the notebook (its __main__) still load.

The fastai book's lesson 2 labels with `def is_cat(x): ...` written in the notebook;
pickle stores that as "__main__.is_cat", which no other process has.
"""
from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

import pytest

from app import ModelLoadError, create_app
from classifier.model_files import load_learner_checked
from harness.images import encode, photo
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # three exports, each made in its own subprocess

# Exported the notebook way: `python -c`, so these functions live in __main__. The model
# is an untrained tiny CNN: only what the pickle refers to matters here.
NOTEBOOK = textwrap.dedent("""
    import sys
    from fastai.vision.all import *

    def label_of(path):  # like the book's is_cat: a get_y defined in the notebook
        return parent_label(path)

    def keep(img):  # an item transform defined in the notebook: inference calls it
        return img

    path, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    calls = mode == "calls"
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      get_y=label_of, splitter=RandomSplitter(0.25, seed=0),
                      item_tfms=[Resize(32)] + ([keep] if calls else []))
    dls = block.dataloaders(path, bs=8, num_workers=0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), Flatten(),
                          nn.Linear(4, dls.c))
    # fastai 2.8's default (cloudpickle) stores __main__ functions by value; plain pickle,
    # fastai's default before 2.8 and still an export() option, stores them by name.
    import pickle, cloudpickle
    Learner(dls, model).export(out, pickle_module=cloudpickle if mode == "cloudpickle"
                               else pickle)
""")


def _export(folder, out, mode):
    subprocess.run([sys.executable, "-c", NOTEBOOK, str(folder), str(out), mode],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def labels_only(image_folder, tmp_path_factory):
    return _export(image_folder, tmp_path_factory.mktemp("nb") / "export.pkl", "labels")


@pytest.fixture(scope="module")
def cloudpickled(image_folder, tmp_path_factory):
    return _export(image_folder, tmp_path_factory.mktemp("nb") / "export.pkl", "cloudpickle")


@pytest.fixture(scope="module")
def calls_notebook(image_folder, tmp_path_factory):
    return _export(image_folder, tmp_path_factory.mktemp("nb") / "export.pkl", "calls")


def test_notebook_function_loads_as_placeholder_and_serves(labels_only, caplog):
    with caplog.at_level(logging.WARNING, logger="classifier.model_files"):
        app = create_app({"MODEL_PATH": str(labels_only), "TESTING": True})
    lines = [r.getMessage() for r in caplog.records if "label_of" in r.getMessage()]
    assert len(lines) == 1 and "placeholder" in lines[0]
    r = app.test_client().post("/predict", data={"file": (io.BytesIO(encode(photo())), "a.png")})
    assert r.status_code == 200, r.get_json()
    assert sorted(r.get_json()["probabilities"]) == ["blue", "green", "red"]


def test_calling_a_placeholder_names_the_function_and_the_fix(labels_only):
    learner, _ = load_learner_checked(labels_only)
    get_y = learner.dls.tfms[1].fs[0]  # the CategoryBlock pipeline starts with label_of
    assert get_y.name == "label_of"
    with pytest.raises(ModelLoadError, match=r"label_of\(\).*define label_of in __main__"):
        get_y("some/path.png")


def test_export_whose_inference_calls_a_notebook_function_is_refused_at_start(calls_notebook):
    with pytest.raises(ModelLoadError) as info:
        create_app({"MODEL_PATH": str(calls_notebook), "TESTING": True})
    message = str(info.value)
    assert "keep()" in message and "\n" not in message
    assert "define keep in __main__" in message


def test_defining_the_function_in_main_provides_it(calls_notebook):
    """What the error advises works: with `keep` in __main__ the real function is used."""
    script = textwrap.dedent(f"""
        import sys
        from classifier.model_files import load_learner_checked
        from classifier.inference import Predictor
        def keep(img):
            return img
        learner, _ = load_learner_checked({str(calls_notebook)!r})
        fs = learner.dls.valid.after_item.fs
        assert any(getattr(f, "name", "") == "keep" for f in fs), fs
        Predictor(learner, runtime="torch")
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_default_cloudpickle_export_carries_its_notebook_functions(cloudpickled, caplog):
    """fastai 2.8's own default: nothing to stand in for, the real label_of comes along."""
    with caplog.at_level(logging.WARNING, logger="classifier.model_files"):
        learner, _ = load_learner_checked(cloudpickled)
    assert not [r for r in caplog.records if "placeholder" in r.getMessage()]
    assert learner.dls.tfms[1].fs[0](ROOT / "red" / "x.png") == "red"
