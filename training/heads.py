"""The head method: a linear classifier on the frozen base's served sentence embeddings.

The texts are embedded once (training/embed.py: the graph and tokenizer the service serves),
then a linear head is fitted on the vectors in well under a second. The head starts at the
zero-shot classifier, one row per label: the label's embedding through the zero-shot template,
times the similarity scale, so that before any training it predicts exactly what the base
predicts zero-shot. Training pulls it from there with a penalty on the distance travelled
(class-balanced cross-entropy + l2 * (|W - W0|^2 + |b|^2)): with a few rows a class it stays
near the prior, with many it goes where the data says. The strength is chosen by stratified
cross-validation with the one-standard-error rule: the strongest pull whose out-of-fold
log-loss is within one standard error of the best (the paired error over the rows), since
on a few rows the best of five noisy scores is mostly luck. Log-loss, not accuracy: a row
that flips by a hair moves it by a hair. The zero-shot head itself is a candidate: a trained
head is kept only when it also classifies more than MARGIN_ROWS more rows right out of fold,
and, on few rows, when the whole choice does so too, scored by nested cross-validation
(nested_scores). Measured over 100 draws of 8 rows a label (bench/learning_curve.py,
README): without the nested check SST-2 ended 0.60 points below zero-shot, with it 0.06.

Why by hand: a logistic regression shrunk toward a prior weight matrix (not toward zero) is
not something scikit-learn's solvers offer; on precomputed vectors it is a few lines of
L-BFGS in torch, which the project already has. Light: numpy only until `fit` (the service
serves a head with `Head`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.artifacts import SIMILARITY_SCALE

# |W - W0|^2 penalties tried by cross-validation; the last is strong enough that the head is
# the zero-shot classifier plus a bias (bench/learning_curve.py shows the range that wins)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MAX_FOLDS = 5
MARGIN_ROWS = 1
# the rarest label's rows under which the choice itself is cross-validated (nested_scores):
# where selection flatters most and nesting costs little. From 32 rows a label up the plain
# comparison was as safe over 50 draws and nesting cost 0.6-0.8 points at 128 (README)
NESTED_BELOW_ROWS = 32


@dataclass
class Head:
    """logits = embeddings @ weight.T + bias."""

    weight: np.ndarray  # [labels, hidden]
    bias: np.ndarray  # [labels]

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        return embeddings @ self.weight.T + self.bias

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        return self.logits(embeddings).argmax(1)

    def save(self, path: Path) -> None:
        np.savez(path, weight=self.weight.astype(np.float32), bias=self.bias.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> Head:
        with np.load(path, allow_pickle=False) as f:
            return cls(f["weight"], f["bias"])


def prototype_head(label_embeddings: np.ndarray) -> Head:
    """The zero-shot classifier as a head: scaled cosine similarity to each label sentence."""
    weight = SIMILARITY_SCALE * label_embeddings.astype(np.float32)
    return Head(weight, np.zeros(len(weight), dtype=np.float32))


def fit(x: np.ndarray, y: np.ndarray, start: Head, l2: float, max_iter: int = 200) -> Head:
    """The head minimizing class-balanced cross-entropy + l2 * (|W - W0|^2 + |b|^2), from
    `start` (whose bias is zero)."""
    import torch

    n_labels = len(start.bias)
    counts = np.bincount(y, minlength=n_labels).astype(np.float64)
    present = counts > 0
    class_weight = np.where(present, len(y) / (present.sum() * np.maximum(counts, 1)), 0.0)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    w0 = torch.from_numpy(start.weight.astype(np.float32))
    delta = torch.zeros_like(w0, requires_grad=True)
    bias = torch.zeros(n_labels, requires_grad=True)
    weights = torch.tensor(class_weight, dtype=torch.float32)
    opt = torch.optim.LBFGS([delta, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = xt @ (w0 + delta).T + bias
        loss = torch.nn.functional.cross_entropy(logits, yt, weight=weights)
        loss = loss + l2 * ((delta**2).sum() + (bias**2).sum())
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return Head((w0 + delta).detach().numpy(), bias.detach().numpy())


def macro_f1(pred: np.ndarray, gold: np.ndarray, n_labels: int) -> float:
    scores = []
    for c in range(n_labels):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def scored(pred: np.ndarray, gold: np.ndarray, n_labels: int) -> dict[str, float]:
    return {"accuracy": float((pred == gold).mean()), "macro_f1": macro_f1(pred, gold, n_labels)}


def scores(head: Head, x: np.ndarray, y: np.ndarray, n_labels: int) -> dict[str, float]:
    return scored(head.predict(x), y, n_labels)


def rarest_label_rows(y: np.ndarray) -> int:
    """Rows of the rarest label present in y."""
    return int(np.bincount(y)[np.unique(y)].min())


def folds(y: np.ndarray, seed: int) -> list[np.ndarray]:
    """Stratified folds (each label spread over them); as many as the rarest label allows,
    at most MAX_FOLDS; none when a label has a single row."""
    k = min(MAX_FOLDS, rarest_label_rows(y))
    if k < 2:
        return []
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        fold_of[rows] = np.arange(len(rows)) % k
    return [np.flatnonzero(fold_of == f) for f in range(k)]


def one_standard_error(losses: dict[float, np.ndarray]) -> float:
    """The largest l2 (the strongest pull) whose mean loss is within one standard error of the
    lowest mean, the error taken over the rows' paired differences; `losses` holds each l2's
    per-row out-of-fold losses."""
    lowest = min(losses, key=lambda l2: losses[l2].mean())

    def close(l2: float) -> bool:
        diff = losses[l2] - losses[lowest]
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        return bool(diff.mean() <= se)

    return max(l2 for l2 in losses if close(l2))


def cross_validate(
    x: np.ndarray, y: np.ndarray, start: Head, grid: tuple[float, ...], seed: int
) -> tuple[float | None, dict[float | None, dict[str, float]]]:
    """(the chosen l2, or None to keep `start`; the out-of-fold scores of each candidate, None
    being `start`). The l2 of `grid` is chosen by one_standard_error on the out-of-fold
    log-loss, and is kept only if it gets more than MARGIN_ROWS rows more right than `start`.
    Without folds (a label with one row) `start` is kept."""
    import torch
    import torch.nn.functional as F

    parts = folds(y, seed)
    if not parts:
        return None, {}
    n_labels = len(start.bias)
    table: dict[float | None, dict[str, float]] = {None: scores(start, x, y, n_labels)}
    losses: dict[float, np.ndarray] = {}
    for l2 in grid:
        logits = np.empty((len(y), n_labels), dtype=np.float64)
        for held in parts:
            train = np.setdiff1d(np.arange(len(y)), held)
            logits[held] = fit(x[train], y[train], start, l2).logits(x[held])
        losses[l2] = F.cross_entropy(
            torch.from_numpy(logits), torch.from_numpy(y.astype(np.int64)), reduction="none"
        ).numpy()
        table[l2] = scored(logits.argmax(1), y, n_labels)
    best = one_standard_error(losses)
    gained_rows = (table[best]["accuracy"] - table[None]["accuracy"]) * len(y)
    return (best if gained_rows > MARGIN_ROWS + 1e-9 else None), table


def nested_scores(
    x: np.ndarray, y: np.ndarray, start: Head, grid: tuple[float, ...], seed: int
) -> tuple[dict[str, float], int] | None:
    """The whole choice (strength and keep-the-start) scored out of fold: in each outer fold,
    cross_validate on the other rows, fit what it chose, predict the fold. Returns its
    scores and how many more rows than `start` it got right; None without folds.

    Why: the out-of-fold scores cross_validate compares are the best of several candidates,
    so on a few rows they flatter the winner (the optimism of selection). Scoring the choice
    itself, as nested cross-validation does, removes that: measured over 100 draws of 8 rows
    a label (README), the trained heads that won the plain comparison lost on the test set in
    all 15 SST-2 draws where they were kept. A label with 2 rows leaves the inner folds none,
    so a head trains only from 3 rows in every label."""
    parts = folds(y, seed + 1)
    if not parts:
        return None
    pred = np.empty(len(y), dtype=np.int64)
    for held in parts:
        train = np.setdiff1d(np.arange(len(y)), held)
        l2, _ = cross_validate(x[train], y[train], start, grid, seed)
        chosen = start if l2 is None else fit(x[train], y[train], start, l2)
        pred[held] = chosen.predict(x[held])
    gained = int((pred == y).sum() - (start.predict(x) == y).sum())
    return scored(pred, y, len(start.bias)), gained


@dataclass
class Chosen:
    head: Head
    l2: float | None  # None: the zero-shot start kept
    table: dict[float | None, dict[str, float]]  # each strength's out-of-fold scores (None: start)
    # the chosen head's out-of-fold scores: the nested ones where they were computed
    scores: dict[str, float] | None


def choose_and_fit(
    x: np.ndarray, y: np.ndarray, start: Head, grid: tuple[float, ...], seed: int
) -> Chosen:
    """Choose by cross_validate and fit on every row. Under NESTED_BELOW_ROWS rows in the
    rarest label, a trained head must also win by more than MARGIN_ROWS in nested_scores."""
    l2, table = cross_validate(x, y, start, grid, seed)
    estimate = table.get(l2)
    if l2 is not None and rarest_label_rows(y) < NESTED_BELOW_ROWS:
        nested = nested_scores(x, y, start, grid, seed)
        if nested is None or nested[1] <= MARGIN_ROWS:
            l2, estimate = None, table.get(None)
        else:
            estimate = nested[0]
    return Chosen(start if l2 is None else fit(x, y, start, l2), l2, table, estimate)
