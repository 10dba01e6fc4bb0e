"""Score a trained classifier on labelled images: accuracy, per-class table, confusion matrix.

    python -m training.evaluate MODEL.pkl DATA_DIR

DATA_DIR is laid out like training data, DATA_DIR/<label>/<image>; for a
train/valid/test folder it scores test/ (or valid/ when there is no test/).
Unreadable files are skipped and listed, as in training. Images go through the
serving code path (classifier.loader, classifier.predict.predict_files), so the
numbers are what the web app will do.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from training import OneLineParser, UsageError


def probabilities(predictor, paths: list[Path]) -> np.ndarray:
    """(n, classes) probabilities for verified image files, decoded as serving does (within
    the pixel limit training's check used); UsageError if one can no longer be read."""
    from classifier.images import DEFAULT_MAX_DECLARED_PIXELS
    from classifier.predict import predict_files

    rows = []
    for row in predict_files(predictor, paths, None, DEFAULT_MAX_DECLARED_PIXELS):
        if row["error"]:
            raise UsageError(f"{row['path']} cannot be read any more: {row['error']}")
        rows.append(list(row["probabilities"].values()))
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(predictor.vocab))


def metrics(probs: np.ndarray, targets: np.ndarray, vocab: list[str]) -> dict:
    """The metrics export.json and the report carry, as plain JSON types."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(vocab)))
    preds = probs.argmax(axis=1)
    picked = probs[np.arange(len(targets)), targets].clip(1e-12, 1.0)
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, preds, labels=labels, zero_division=0)
    accuracy = float((preds == targets).mean()) if len(targets) else 0.0
    return {
        "n": len(targets),
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "loss": float(-np.log(picked).mean()) if len(targets) else 0.0,
        "per_class": {vocab[i]: {"precision": float(precision[i]), "recall": float(recall[i]),
                                 "f1": float(f1[i]), "support": int(support[i])} for i in labels},
        "confusion_matrix": confusion_matrix(targets, preds, labels=labels).tolist(),
    }


def score(predictor, paths: list[Path], vocab: list[str]) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics for labelled files (label = parent folder), plus probabilities and targets."""
    from training.data import label_of

    index = {label: i for i, label in enumerate(vocab)}
    targets = np.array([index[label_of(p)] for p in paths], dtype=int)
    probs = probabilities(predictor, paths)
    return metrics(probs, targets, vocab), probs, targets


def format_metrics(m: dict, title: str, probs: np.ndarray, targets: np.ndarray) -> str:
    """scikit-learn's classification_report and the confusion matrix, for the console."""
    from sklearn.metrics import classification_report

    vocab = list(m["per_class"])
    table = classification_report(targets, probs.argmax(axis=1), labels=range(len(vocab)),
                                  target_names=vocab, digits=3, zero_division=0)
    lines = [(f"{title}: accuracy {m['accuracy']:.4f}  error_rate {m['error_rate']:.4f}  "
              f"loss {m['loss']:.4f}  ({m['n']} images)"), table.rstrip("\n")]
    width = max(9, *(len(v) for v in vocab))
    cell = max(4, *(len(str(v)) for r in m["confusion_matrix"] for v in r), *(len(v) for v in vocab))
    lines.append("confusion matrix (rows: actual, columns: predicted)")
    lines.append(" " * width + "  " + " ".join(f"{v[:cell]:>{cell}}" for v in vocab))
    for label, row in zip(vocab, m["confusion_matrix"]):
        lines.append(f"{label:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


FEATURE_BATCH = 32  # validation images per forward pass for the embedding


def field_reference(predictor, paths: list[Path], probs: np.ndarray, vocab: list[str]) -> dict:
    """export.json's `field_reference` (classifier/drift.py): what serving compares its live
    answers with. The embedding comes from a second pass over the validation images, decoded
    as serving decodes them; a model whose pooled features cannot be found has none."""
    from classifier.drift import build_reference
    from classifier.images import load_rgb

    side = predictor.decode_side()
    chunks = []
    for start in range(0, len(paths), FEATURE_BATCH):
        images = [load_rgb(path, side) for path in paths[start:start + FEATURE_BATCH]]
        chunk = predictor.features(images)
        if chunk is None:
            chunks = None
            break
        chunks.append(chunk)
    features = np.concatenate(chunks) if chunks else None
    return build_reference(probs, vocab, features)


UNSURE_ALPHA = 0.05  # at most this fraction of correct answers may be flagged "unsure"


def choose_threshold(probs: np.ndarray, targets: np.ndarray, alpha: float = UNSURE_ALPHA) -> dict:
    """The confidence below which an answer is "unsure", chosen on the validation predictions.

    Split-conformal: with n correct validation answers, the threshold is the k-th lowest of
    their top-class confidences, k = floor(alpha * (n + 1)). A new image the model gets right
    is then flagged with probability at most alpha (for images like the validation ones), while
    anything the model is less sure about than nearly all its correct answers (an unfamiliar
    photo, an ambiguous one) is flagged. With fewer than 1/alpha - 1 correct answers no
    threshold keeps that promise, and there is none (null). Serving flags an answer when
    its top-class confidence < threshold.
    """
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == targets
    n = int(correct.sum())
    k = int(np.floor(alpha * (n + 1)))
    threshold = float(np.sort(confidence[correct])[k - 1]) if k >= 1 else None
    accepted = confidence >= threshold if threshold is not None else np.ones(len(targets), bool)
    return {"threshold": threshold, "method": "conformal", "alpha": alpha, "n_correct": n,
            "coverage": float(accepted.mean()) if len(targets) else None,
            "accuracy_accepted": float(correct[accepted].mean()) if accepted.any() else None,
            "correct_flagged": float((correct & ~accepted).sum() / n) if n else None}


def accuracy_coverage(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each validation confidence taken as the threshold: (coverage, accuracy of accepted)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets)[np.argsort(-confidence, kind="stable")]
    accepted = np.arange(1, len(correct) + 1)
    return accepted / len(correct), np.cumsum(correct) / accepted


def format_threshold(unsure: dict) -> str:
    if unsure["threshold"] is None:
        return (f"unsure threshold: none ({unsure['n_correct']} correct validation answers; "
                f"at least {int(np.ceil(1 / unsure['alpha'])) - 1} are needed)")
    return (f"unsure threshold: {unsure['threshold']:.4f} (conformal: at most "
            f"{unsure['alpha']:.0%} of correct answers flagged; on validation it accepts "
            f"{unsure['coverage']:.1%}, {unsure['accuracy_accepted']:.1%} of them correct)")


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="an exported learner (export.pkl)")
    parser.add_argument("data_dir", type=Path, help="labelled images: DATA_DIR/<label>/<image>")
    args = parser.parse_args(argv)
    try:
        from classifier.loader import load_model
        from classifier.model_files import ModelLoadError
        from training.data import find_labelled

        paths, skipped = find_labelled(args.data_dir)
        try:
            predictor, card = load_model(args.model, runtime="torch")
        except ModelLoadError as exc:
            raise UsageError(str(exc)) from None
        vocab = list(card.vocab)
        unknown = sorted({p.parent.name for p in paths} - set(vocab))
        if unknown:
            raise UsageError(f"{args.data_dir} has classes the model does not know: "
                             f"{', '.join(unknown)} (it knows {', '.join(vocab)}).")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for item in skipped:
        print(f"skipped {item['path']}: {item['reason']}")
    result, probs, targets = score(predictor, paths, vocab)
    print(format_metrics(result, f"{args.model} on {args.data_dir}", probs, targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
