"""`python -m classifier.predict MODEL PATH... --out results.csv|jsonl`: folders in, one row per
file out, unreadable files listed and skipped, bad input exit 2 with one line."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

from classifier import predict as cli
from classifier.images import load_rgb, open_checked
from classifier.inference import Predictor
from classifier.model_files import load_learner_checked, sha256_file
from harness.images import encode, photo
from tests.conftest import ROOT

VOCAB = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Images in nested folders, plus files that cannot be read, plus ones to ignore."""
    root = tmp_path_factory.mktemp("photos")
    (root / "trip" / "day2").mkdir(parents=True)
    (root / "a.png").write_bytes(encode(photo(seed=1)))
    (root / "trip" / "b.JPG").write_bytes(encode(photo(seed=2, colour=(30, 40, 220)), "JPEG"))
    (root / "trip" / "day2" / "c.webp").write_bytes(encode(photo(seed=3), "WEBP"))
    (root / "trip" / "broken.jpg").write_bytes(encode(photo(), "JPEG")[:300])
    (root / "trip" / "notes.png").write_text("not an image")
    (root / "readme.txt").write_text("skipped: not an image extension")
    (root / ".cache").mkdir()
    (root / ".cache" / "thumb.png").write_bytes(encode(photo()))  # hidden: skipped
    return root


@pytest.fixture(scope="module")
def model_with_threshold(notebook_export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    shutil.copy(notebook_export, folder / "export.pkl")
    (folder / "export.json").write_text(json.dumps({"unsure": {"threshold": 0.5}}))
    return folder / "export.pkl"


@pytest.mark.slow  # a fresh interpreter loads torch and fastai
def test_folder_to_csv_in_a_subprocess(notebook_export, photos, tmp_path):
    out = tmp_path / "results.csv"
    result = subprocess.run([sys.executable, "-m", "classifier.predict", str(notebook_export),
                             str(photos), "--out", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    header = out.read_text().splitlines()[0].split(",")
    assert header == ["path", "label", "confidence", "version", *VOCAB, "error"]  # no threshold
    # A bare export.pkl's version: the start of its sha256, as the server's answers say.
    assert rows[0]["version"] == sha256_file(notebook_export)[:12]
    names = [row["path"].removeprefix(str(photos) + "/") for row in rows]
    assert names == ["a.png", "trip/b.JPG", "trip/broken.jpg", "trip/day2/c.webp",
                     "trip/notes.png"]
    by_name = dict(zip(names, rows))
    assert by_name["trip/broken.jpg"]["label"] == "" and by_name["trip/broken.jpg"]["error"]
    assert "not an image format" in by_name["trip/notes.png"]["error"]
    # Same answer as the server's predictor on the same file.
    learner, _ = load_learner_checked(notebook_export)
    expected = Predictor(learner, runtime="torch").predict(load_rgb(photos / "a.png"))
    assert by_name["a.png"]["label"] == expected.label
    assert float(by_name["a.png"]["confidence"]) == pytest.approx(expected.confidence, abs=1e-4)
    assert sum(float(by_name["a.png"][c]) for c in VOCAB) == pytest.approx(1, abs=1e-6)
    # Not a terminal: plain progress lines, the unreadable files with reasons, a summary.
    assert "5/5 images" in result.stderr and "\r" not in result.stderr
    assert f"unreadable {photos / 'trip' / 'broken.jpg'}: " in result.stderr
    assert "3 of 5 images classified" in result.stderr


def test_jsonl_with_unsure_from_the_threshold(model_with_threshold, photos, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    assert cli.main([str(model_with_threshold), str(photos / "a.png"),
                     str(photos / "trip" / "b.JPG"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(photos / "a.png"), str(photos / "trip" / "b.JPG")]
    for row in rows:
        assert row["unsure"] == (row["confidence"] < 0.5)
        assert list(row["probabilities"]) == VOCAB and row["error"] is None


def test_csv_on_stdout_has_the_unsure_column(model_with_threshold, photos, capsys):
    assert cli.main([str(model_with_threshold), str(photos / "a.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "path,label,confidence,unsure,version,blue,green,red,error"
    assert lines[1].split(",")[3] in ("True", "False") and len(lines) == 2


@pytest.mark.parametrize("args, says", [
    (["{model}", "{tmp}/nowhere"], "does not exist"),
    (["{model}", "{empty}"], "No images found"),
    (["{model}", "{photos}", "--out", "{tmp}/r.txt"], ".csv or .jsonl"),
    (["{tmp}/missing.pkl", "{photos}"], "Model file not found"),
    (["{photos}/a.png", "{photos}"], "not a loadable fastai export"),
    (["{model}"], "required: PATH"),
    (["{model}", "{photos}", "--runtime", "gpu"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(notebook_export, photos, tmp_path, capsys, args, says):
    (tmp_path / "empty").mkdir()
    argv = [a.format(model=notebook_export, tmp=tmp_path, photos=photos,
                     empty=tmp_path / "empty") for a in args]
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert says in err and err.count("\n") == 1 and err.startswith("error: ")


def test_failed_run_leaves_the_old_results(notebook_export, photos, tmp_path, monkeypatch):
    out = tmp_path / "results.csv"
    out.write_text("old results\n")

    def explode(*args, **kwargs):
        yield {"path": "x", "error": "unreadable: boom"}
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "predict_files", explode)
    with pytest.raises(KeyboardInterrupt):
        cli.main([str(notebook_export), str(photos), "--out", str(out)])
    assert out.read_text() == "old results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temp file left


def test_progress_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    progress = cli.Progress(4, stream)
    progress.update(2)
    progress.update(4)
    text = stream.getvalue()
    assert text.startswith("\r[###############...............] 2/4")
    assert "\r[##############################] 4/4" in text and text.endswith("\n")


def test_exact_decode_flag_decodes_in_full(notebook_export, tmp_path, monkeypatch):
    (tmp_path / "big.jpg").write_bytes(encode(photo(seed=4).resize((1600, 1200)), "JPEG"))
    sizes = []

    def recording(data, *args, **kwargs):
        image = open_checked(data, *args, **kwargs)
        sizes.append(image.size)
        return image

    monkeypatch.setattr(cli, "open_checked", recording)
    for flags in ([], ["--exact-decode"]):
        assert cli.main([str(notebook_export), str(tmp_path / "big.jpg"),
                         "--out", str(tmp_path / "r.csv"), *flags]) == 0
    reduced, full = sizes
    assert full == (1600, 1200) and max(reduced) < 1600
