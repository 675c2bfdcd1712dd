"""Multi-label classification metrics: mean average precision and F1 (numpy, no sklearn)."""

from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "classification_metrics", "f1_scores", "mean_average_precision"]


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be [N, C]")
    return scores, labels


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class: mean precision at the rank of each positive (ties share one step).

    Equal to scikit-learn's ``average_precision_score``; NaN when the class has no positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    n_pos = int(positives.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positives[order]
    # Only the last index of each run of tied scores is a valid threshold.
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(p)[last_of_tie]
    seen = (np.arange(len(s)) + 1)[last_of_tie]
    precision = tp / seen
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(precision * recall_step))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean AP over the classes that have at least one positive."""
    scores, labels = _check(scores, labels)
    aps = [average_precision(scores[:, c], labels[:, c]) for c in range(labels.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def f1_scores(probabilities: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Micro and macro F1 of ``probabilities >= threshold`` (macro over classes with support)."""
    probabilities, labels = _check(probabilities, labels)
    pred = probabilities >= threshold
    tp = (pred & labels).sum(0).astype(np.float64)
    fp = (pred & ~labels).sum(0).astype(np.float64)
    fn = (~pred & labels).sum(0).astype(np.float64)
    micro_den = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = 2 * tp.sum() / micro_den if micro_den else 0.0
    support = labels.sum(0) > 0
    per_class = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    macro = float(per_class[support].mean()) if support.any() else float("nan")
    return {"f1_micro": float(micro), "f1_macro": macro}


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """mAP (on logits, rank-based), F1 and exact match (on sigmoid probabilities) of one pass.

    ``exact_match`` is the share of images whose predicted label set is exactly the true one.
    """
    logits, labels = _check(logits, labels)
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    exact = float(np.mean(np.all((probabilities >= threshold) == labels, axis=1)))
    return {"mAP": mean_average_precision(logits, labels), **f1_scores(probabilities, labels, threshold),
            "exact_match": exact}
