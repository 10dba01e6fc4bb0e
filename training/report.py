"""The training report: report.html (a Jinja2 template, training/templates/report.html)
and its plots: confusion matrix, top losses, curves, accuracy against coverage, a training batch.

Everything is drawn with matplotlib's Agg backend (no display needed) from the metrics that
also go into export.json, so the report and the metadata agree.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402  (after matplotlib.use)

TOP_LOSSES = 9
PLOTS = [("history.png", "Training curves"), ("confusion_matrix.png", "Confusion matrix"),
         ("unsure.png", "Accuracy against coverage"), ("top_losses.png", "Top losses"),
         ("augmentations.png", "Training batch")]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], vocab: list[str], path: Path) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(vocab)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2), max(4, 0.6 * n + 2)))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=vocab).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45 if n > 6 else "horizontal")
    ax.set_title("Confusion matrix (validation)")
    _save(fig, path)


def plot_accuracy_coverage(probs: np.ndarray, targets: np.ndarray, unsure: dict, path: Path) -> None:
    """How accuracy rises as the least confident answers are set aside, and the chosen point."""
    from training.evaluate import accuracy_coverage

    coverage, accuracy = accuracy_coverage(probs, targets)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(coverage, accuracy, "-", label="accepted answers")
    if unsure["threshold"] is not None:
        ax.plot([unsure["coverage"]], [unsure["accuracy_accepted"]], "o", color="tab:red",
                label=f"threshold {unsure['threshold']:.3f}")
    ax.set(xlabel="coverage (fraction of validation answers accepted)",
           ylabel="accuracy of accepted answers", xlim=(0, 1.02),
           title="Validation: accuracy against coverage")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    _save(fig, path)


def top_losses(paths: list[Path], probs: np.ndarray, targets: np.ndarray, k: int = TOP_LOSSES):
    """The k validation images with the highest loss, as (path, actual, predicted, loss, prob)."""
    picked = probs[np.arange(len(targets)), targets].clip(1e-12, 1.0)
    losses = -np.log(picked)
    order = np.argsort(-losses)[:k]
    return [(paths[i], int(targets[i]), int(probs[i].argmax()), float(losses[i]),
             float(probs[i].max())) for i in order]


def plot_top_losses(rows, vocab: list[str], path: Path) -> None:
    from classifier.images import load_rgb

    cols = 3
    nrows = max(1, -(-len(rows) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 3, nrows * 3.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (file, actual, predicted, loss, prob) in zip(axes.flat, rows):
        ax.imshow(load_rgb(file), interpolation="nearest")
        ax.set_title(f"{vocab[actual]} / {vocab[predicted]}\nloss {loss:.2f} / p {prob:.2f}", fontsize=9)
    fig.suptitle("Top losses: actual / predicted, loss / probability of the prediction")
    _save(fig, path)


def plot_history(history: list[dict], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train_loss")
    left.plot(epochs, [h["valid_loss"] for h in history], "o-", label="valid_loss")
    left.set(xlabel="epoch", ylabel="loss", title="Loss")
    left.legend()
    right.plot(epochs, [h["accuracy"] for h in history], "o-", color="tab:green")
    right.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy", ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(alpha=0.3)
    _save(fig, path)


def plot_batch(dls, path: Path) -> None:
    """A training batch after augmentation, as the model sees it (fastai's show_batch)."""
    dls.train.show_batch(max_n=9, figsize=(7, 7), unique=False)
    fig = plt.gcf()
    fig.suptitle("A training batch as the model sees it")
    _save(fig, path)


def write_html(folder: Path, metadata: dict) -> None:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html").render(m=metadata, t=metadata["training"], plots=PLOTS)
    (folder / "report.html").write_text(html)


def write_report(folder: Path, dls, metadata: dict, valid_paths: list[Path],
                 probs: np.ndarray, targets: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = metadata["vocab"]
    plot_confusion(metadata["metrics"]["validation"]["confusion_matrix"], vocab,
                   folder / "confusion_matrix.png")
    plot_accuracy_coverage(probs, targets, metadata["unsure"], folder / "unsure.png")
    plot_top_losses(top_losses(valid_paths, probs, targets), vocab, folder / "top_losses.png")
    plot_history(metadata["history"], folder / "history.png")
    plot_batch(dls, folder / "augmentations.png")
    write_html(folder, metadata)
