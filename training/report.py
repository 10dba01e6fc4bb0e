"""The training report: confusion matrix, top losses, curves, a training batch, report.html.

Everything is drawn with matplotlib's Agg backend (no display needed) from the
metrics that also go into export.json, so the report and the metadata agree.
"""
from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TOP_LOSSES = 9


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], vocab: list[str], path: Path) -> None:
    cm = np.array(matrix)
    n = len(vocab)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2), max(4, 0.6 * n + 2)))
    ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=vocab, yticklabels=vocab,
           xlabel="Predicted", ylabel="Actual", title="Confusion matrix (validation)")
    plt.setp(ax.get_xticklabels(), rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > threshold else "black")
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


def _table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_html(title: str, m: dict) -> str:
    per_class = _table(["class", "precision", "recall", "f1", "support"],
                       [[label, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                         r["support"]] for label, r in m["per_class"].items()])
    return (f"<h2>{html.escape(title)}</h2><p>accuracy <b>{m['accuracy']:.4f}</b>, error rate "
            f"{m['error_rate']:.4f}, loss {m['loss']:.4f} on {m['n']} images</p>{per_class}")


def write_html(folder: Path, metadata: dict) -> None:
    t = metadata["training"]
    parts = [f"<h1>Training report: {html.escape(metadata['arch'])}</h1>",
             f"<p>{html.escape(metadata['command'])}</p>",
             _table(["classes", "image size", "pretrained", "method", "epochs run", "lr", "bs",
                     "augment"],
                    [[", ".join(metadata["vocab"]), "x".join(map(str, metadata["image_size"])),
                      metadata["pretrained"], t["method"], t["epochs_run"], f"{t['lr']:.2e}",
                      t["bs"], t["augment"]]]),
             _metrics_html("Validation", metadata["metrics"]["validation"])]
    if "test" in metadata["metrics"]:
        parts.append(_metrics_html("Test (scored once, after training)", metadata["metrics"]["test"]))
    counts = metadata["dataset"]["counts"]
    parts.append("<h2>Data</h2>" + _table(["class", *counts], [[label, *(counts[s][label] for s in counts)]
                                                               for label in metadata["vocab"]]))
    skipped = metadata["dataset"]["skipped"]
    if skipped:
        parts.append(f"<h3>Skipped files ({len(skipped)})</h3>"
                     + _table(["file", "reason"], [[s["path"], s["reason"]] for s in skipped]))
    parts.append("<h2>History</h2>" + _table(
        ["epoch", "train_loss", "valid_loss", "accuracy", "time"],
        [[h["epoch"], f"{h['train_loss']:.4f}", f"{h['valid_loss']:.4f}", f"{h['accuracy']:.4f}",
          h["time"]] for h in metadata["history"]]))
    for name, caption in (("history.png", "Training curves"), ("confusion_matrix.png", "Confusion matrix"),
                          ("top_losses.png", "Top losses"), ("augmentations.png", "Training batch")):
        parts.append(f"<h2>{caption}</h2><img src='{name}' alt='{caption}'>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
             "img{max-width:100%}")
    (folder / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Training report</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(folder: Path, dls, metadata: dict, valid_paths: list[Path],
                 probs: np.ndarray, targets: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = metadata["vocab"]
    plot_confusion(metadata["metrics"]["validation"]["confusion_matrix"], vocab,
                   folder / "confusion_matrix.png")
    plot_top_losses(top_losses(valid_paths, probs, targets), vocab, folder / "top_losses.png")
    plot_history(metadata["history"], folder / "history.png")
    plot_batch(dls, folder / "augmentations.png")
    write_html(folder, metadata)
