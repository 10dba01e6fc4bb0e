"""Compare two versions on the frozen test set: is B better than A, or worse, or can we not tell?

    python -m training.compare A B [--models models] [--html PAGE] [--field SOURCE]

A and B are version names (python -m training.versions lists them) or `live`. Both are
scored on the same frozen test images (models/test_set.json), decoded the same way (the
serving loader): accuracy, per-class recall, log-loss, expected calibration error, the
"not sure" rate at each one's own threshold, and McNemar's exact test on the paired answers
(the images exactly one of them gets right). Prints a verdict on B against A and writes a
side-by-side page (default models/compare-A-B.html). With --field (a server's /shadow or
/metrics URL, or a saved copy of either) it also prints how B did as the server's shadow beside
A on live requests (SHADOW_MODEL: top-1 agreement, "not sure" rate per class). Exit codes:
0 compared, 2 bad input.
"""
from __future__ import annotations

import base64
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.shadow_field import FieldSourceError, field_line, read_field
from training import UsageError

ALPHA = 0.05        # McNemar's p below this is a measurable difference
ECE_BINS = 15       # equal-width confidence bins, as in Guo et al. 2017
SHOWN = 60          # disagreements pictured on the page
THUMB = 128         # their size in pixels


@dataclass
class Scored:
    """One version's answers on the frozen test images."""
    name: str
    probs: np.ndarray       # (n, classes)
    metrics: dict           # training/evaluate.metrics, plus ece and unsure_rate
    threshold: float | None


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over confidence bins of |accuracy - mean confidence|, weighted by the bin's share."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == targets
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(correct[which == b].mean() - confidence[which == b].mean())
                     * (which == b).mean() for b in range(bins) if (which == b).any()))


def mcnemar(a_right: np.ndarray, b_right: np.ndarray) -> dict:
    """McNemar's exact test: of the images exactly one version gets right, is the split
    further from even than chance allows? A two-sided binomial test on the discordant pairs."""
    from scipy.stats import binomtest

    only_a, only_b = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    p = binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": float(p)}


def verdict(test: dict, alpha: float = ALPHA) -> str:
    """"better", "worse" (B against A) or "no measurable difference"."""
    if test["p_value"] >= alpha:
        return "no measurable difference"
    return "better" if test["only_b_right"] > test["only_a_right"] else "worse"


def load_version(root: Path, name: str):
    """(predictor, classes, "not sure" threshold) of a version, loaded as the server loads it
    (on PyTorch, so both versions run the same way whatever graphs they carry)."""
    from classifier import versions
    from classifier.loader import load_model
    from classifier.model_files import ModelLoadError

    try:
        predictor, card = load_model(versions.version_dir(root, name) / versions.MODEL_FILE,
                                     runtime="torch")
    except ModelLoadError as exc:
        raise UsageError(f"version {name} cannot be loaded: {exc}") from None
    return predictor, list(card.vocab), card.threshold


def score(name: str, loaded, paths: list[Path]) -> Scored:
    from training import evaluate

    predictor, vocab, threshold = loaded
    m, probs, targets = evaluate.score(predictor, paths, vocab)
    m["ece"] = expected_calibration_error(probs, targets)
    m["unsure_rate"] = float((probs.max(axis=1) < threshold).mean()) if threshold is not None else None
    return Scored(name, probs, m, threshold)


def compare(root: Path, a: str, b: str) -> tuple[Scored, Scored, dict, list[Path], np.ndarray]:
    """Both versions scored on the frozen test set, and McNemar's test on their answers."""
    from training import test_set
    from training.data import label_of

    frozen = test_set.read(root)
    if frozen is None or not frozen["images"]:
        raise UsageError(f"{root} has no frozen test set ({test_set.FILE}); the first version "
                         "trained into it makes one.")
    loaded_a, loaded_b = load_version(root, a), load_version(root, b)
    vocab = loaded_a[1]
    if loaded_b[1] != vocab:
        raise UsageError(f"{b} has other classes ({', '.join(loaded_b[1])}) than {a} "
                         f"({', '.join(vocab)}); only versions of one classifier compare.")
    paths = test_set.frozen_images(root, frozen, vocab)
    scored_a, scored_b = score(a, loaded_a, paths), score(b, loaded_b, paths)
    targets = np.array([vocab.index(label_of(p)) for p in paths])
    test = mcnemar(scored_a.probs.argmax(axis=1) == targets, scored_b.probs.argmax(axis=1) == targets)
    return scored_a, scored_b, test, paths, targets


def summary(a: Scored, b: Scored, test: dict) -> str:
    """The console table and the verdict line."""
    def pct(v):
        return "-" if v is None else f"{v:.4f}"
    rows = [("accuracy", "accuracy"), ("log-loss", "loss"), ("calibration error (ECE)", "ece"),
            ("not sure rate", "unsure_rate")]
    lines = [f"{'':<26}{'A ' + a.name:>26}{'B ' + b.name:>26}"]
    lines += [f"{title:<26}{pct(a.metrics[k]):>26}{pct(b.metrics[k]):>26}" for title, k in rows]
    for label in a.metrics["per_class"]:
        lines.append(f"{'recall ' + label:<26}{a.metrics['per_class'][label]['recall']:>26.4f}"
                     f"{b.metrics['per_class'][label]['recall']:>26.4f}")
    lines.append(f"on {a.metrics['n']} frozen test images; only A right on {test['only_a_right']}, "
                 f"only B right on {test['only_b_right']}")
    lines.append(f"verdict: B is {verdict(test)} than A" if verdict(test) != "no measurable difference"
                 else "verdict: no measurable difference between B and A")
    lines[-1] += f" (McNemar's exact test, p = {test['p_value']:.3g})"
    return "\n".join(lines)


def thumbnail(path: Path) -> str:
    """A small PNG of the image as a data: URI, so the page stands alone."""
    from classifier.images import load_rgb

    image = load_rgb(path)
    image.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_page(page: Path, a: Scored, b: Scored, test: dict, paths: list[Path], targets) -> None:
    """The side-by-side page: both confusion matrices and the images they disagree on."""
    import jinja2

    from classifier.model_files import atomic_path

    vocab = list(a.metrics["per_class"])
    pa, pb = a.probs.argmax(axis=1), b.probs.argmax(axis=1)
    differ = [i for i in range(len(paths)) if pa[i] != pb[i]]
    shown = [{"src": thumbnail(paths[i]), "path": paths[i].name, "actual": vocab[targets[i]],
              "a": vocab[pa[i]], "b": vocab[pb[i]]} for i in differ[:SHOWN]]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("compare.html").render(
        a=a, b=b, test=test, verdict=verdict(test), vocab=vocab, shown=shown,
        differ=len(differ), alpha=ALPHA)
    with atomic_path(page) as tmp:
        tmp.write_text(html)


def main(argv=None) -> int:
    from training.versions import models_parser, resolve

    parser = models_parser("python -m training.compare", __doc__)
    parser.add_argument("a", metavar="A", help="the version compared against (e.g. live)")
    parser.add_argument("b", metavar="B", help="the candidate version")
    parser.add_argument("--html", type=Path, help="the page to write (default "
                        "MODELS/compare-A-B.html)")
    parser.add_argument("--field", metavar="SOURCE", help="also print B's figures as the "
                        "shadow beside A on live requests: a server's /shadow or /metrics URL, "
                        "or a saved copy of either")
    args = parser.parse_args(argv)
    try:
        a, b = resolve(args.models, args.a), resolve(args.models, args.b)
        field = read_field(args.field) if args.field else None
        scored_a, scored_b, test, paths, targets = compare(args.models, a, b)
    except (UsageError, FieldSourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(scored_a, scored_b, test))
    if field is not None:
        print(field_line(field, a, b, args.field))
    page = args.html or args.models / f"compare-{a}-{b}.html"
    write_page(page, scored_a, scored_b, test, paths, targets)
    print(f"side by side: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
