"""The "not sure" threshold training stores in export.json (serving flags an answer when its
top-class confidence < threshold): a split-conformal quantile of the correct answers' confidences."""
from __future__ import annotations

import json

import numpy as np

from training.evaluate import accuracy_coverage, choose_threshold


def probs_from(confidence, correct, classes=3):
    """Probabilities whose top class has `confidence`, right (class 0) where `correct`."""
    rows = np.zeros((len(confidence), classes))
    for i, (c, ok) in enumerate(zip(confidence, correct)):
        rows[i] = (1 - c) / (classes - 1)
        rows[i, 0 if ok else 1] = c
    return rows, np.zeros(len(confidence), int)


def test_the_threshold_is_the_conformal_quantile_of_correct_answers():
    rng = np.random.default_rng(0)
    right = rng.uniform(0.5, 1.0, 39)
    wrong = rng.uniform(0.34, 0.6, 10)
    probs, targets = probs_from(np.r_[right, wrong], [True] * 39 + [False] * 10)
    unsure = choose_threshold(probs, targets, alpha=0.05)
    assert unsure["threshold"] == np.sort(right)[1]  # k = floor(0.05 * 40) = 2nd lowest
    assert unsure["n_correct"] == 39 and unsure["correct_flagged"] == 1 / 39
    accepted = probs.max(axis=1) >= unsure["threshold"]
    assert unsure["coverage"] == accepted.mean()
    assert unsure["accuracy_accepted"] == (probs.argmax(1) == targets)[accepted].mean()


def test_no_threshold_when_too_few_answers_are_correct():
    probs, targets = probs_from(np.linspace(0.5, 0.99, 30), [True] * 18 + [False] * 12)
    unsure = choose_threshold(probs, targets, alpha=0.05)
    assert unsure["threshold"] is None and unsure["coverage"] == 1.0
    probs, targets = probs_from(np.linspace(0.5, 0.99, 30), [True] * 19 + [False] * 11)
    assert choose_threshold(probs, targets, alpha=0.05)["threshold"] is not None


def test_new_correct_answers_are_flagged_at_most_alpha_of_the_time():
    """The promise itself: over many validation sets, the share of new correct answers below
    the threshold averages k / (n + 1) <= alpha (here 6/61), within sampling noise."""
    rng = np.random.default_rng(1)
    rates = []
    for _ in range(2000):
        conf = rng.beta(8, 2, 60)
        probs, targets = probs_from(conf, np.ones(60, bool))
        threshold = choose_threshold(probs, targets, alpha=0.1)["threshold"]
        rates.append((rng.beta(8, 2, 500) < threshold).mean())
    assert abs(np.mean(rates) - 6 / 61) < 0.004


def test_accuracy_rises_as_coverage_falls_when_confidence_means_something():
    probs, targets = probs_from([0.99, 0.9, 0.8, 0.6, 0.5], [True, True, True, False, False])
    coverage, accuracy = accuracy_coverage(probs, targets)
    assert list(coverage) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert list(accuracy) == [1.0, 1.0, 1.0, 0.75, 0.6]


def test_export_json_and_the_report_carry_the_threshold(trained_model):
    meta = json.loads(trained_model.with_suffix(".json").read_text())
    unsure = meta["unsure"]
    assert unsure["method"] == "conformal" and "threshold" in unsure
    assert unsure["n_correct"] == round(meta["metrics"]["validation"]["accuracy"]
                                        * meta["metrics"]["validation"]["n"])
    report = trained_model.parent / "report"
    assert (report / "unsure.png").stat().st_size > 0
    assert "Not sure" in (report / "report.html").read_text()
