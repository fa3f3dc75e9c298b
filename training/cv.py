"""Whether the full method pays on small data, decided by cross-validation.

With a few rows a label the held-out split is a handful of rows, and a handful cannot tell a
better model from a luckier one: on SST-2 with 8 rows a label, the checkpoint chosen on 4
held-out rows scored 71.1% on the test set where zero-shot scores 75.8%
(bench/learning_curve.py). Here every training row is held out once instead: K runs of the
run's own schedule, each trained on the other folds, score the zero-shot start and every
epoch on their fold, and the rows right are pooled over the folds. Training that gets no
more than one more row right than the start, at any epoch, is not worth a whole encoder: the
run falls back to the head method, which keeps the zero-shot start unless a trained head
wins out of fold (training/head_run.py). Otherwise the run trains as asked (early stopping
on its held-out split, its best checkpoint exported): choosing its epochs out of fold as
well was tried and measured no better (README, "Fine-tuning that pays on small data").

The fold runs are ordinary runs of the training loop, on Ray Train, with their events kept
out of the job's (`quiet`); a rerun of the job reuses a decision already made.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training import events
from training.checkpoints import history
from training.config import HEAD_BELOW_ROWS_PER_CLASS, FinetuneSpec
from training.data import ClassificationData, read_classification

DEFAULT_FOLDS = 4
MARGIN_ROWS = 1  # the start is kept unless training gets more than this many more rows right


@dataclass
class Choice:
    best_epoch: int  # the epoch that got the most rows right out of fold; 0: training never paid
    right: list[int]  # rows right out of fold at the start and after each epoch
    rows: int
    folds: int

    @property
    def pays(self) -> bool:
        return self.best_epoch > 0

    def summary(self) -> str:
        start, best = self.right[0], max(self.right)
        verdict = (
            "training pays: the run trains as asked"
            if self.pays
            else "training did not beat the zero-shot start: the head method is used"
        )
        return (
            f"{self.folds}-fold cross-validation over {self.rows} rows: {start} right at the "
            f"zero-shot start, {best} at best (rows right after each epoch: "
            f"{', '.join(map(str, self.right[1:]))}); {verdict}"
        )


def folds_for(spec: FinetuneSpec) -> int:
    """The folds a full classification run cross-validates with: only on small data (under
    the crossover "auto" uses) with no validation file of its own, else 0."""
    requested = spec.hyperparameters.cv_folds
    if spec.task != "text-classification" or spec.validation_file or requested == 0:
        return 0
    train = read_classification(spec.train_file)
    per_class = len(train.texts) // max(len(train.label_names), 1)
    if per_class >= HEAD_BELOW_ROWS_PER_CLASS:
        return 0
    smallest = min(train.labels.count(label) for label in train.label_names)
    return min(requested or DEFAULT_FOLDS, smallest) if smallest >= 2 else 0


def assign_folds(labels: list[str], k: int, seed: int) -> np.ndarray:
    """Each row's fold: every label dealt round the folds in a seeded order (stratified)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    arr = np.array(labels)
    for label in sorted(set(labels)):
        mine = rng.permutation(np.flatnonzero(arr == label))
        out[mine] = (np.arange(len(mine)) + rng.integers(k)) % k
    return out


def decide(right: list[int]) -> int:
    """The epoch with the most rows right (the fewest epochs on a tie), or 0 when it beats the
    start by no more than MARGIN_ROWS."""
    best = max(range(len(right)), key=lambda i: (right[i], -i))
    return best if right[best] > right[0] + MARGIN_ROWS else 0


def cross_validate(spec: FinetuneSpec, home: Path, runs: Path, k: int, *, metric: str) -> Choice:
    """Run the K fold runs (or read the decision a previous attempt made) and decide whether
    training pays."""
    cv_dir = runs / spec.run_id / "cv"
    saved = cv_dir / "choice.json"
    if saved.is_file():
        kept = json.loads(saved.read_text())
        kept.setdefault("best_epoch", kept.pop("epochs", 0))  # as written before 2026-12-03
        return Choice(**kept)
    rows = read_classification(spec.train_file)
    fold_of = assign_folds(rows.labels, k, spec.hyperparameters.seed)
    pooled: list[int] | None = None
    for fold in range(k):
        right = _fold(spec, home, cv_dir, rows, fold_of == fold, fold, metric)
        pooled = right if pooled is None else [a + b for a, b in zip(pooled, right, strict=False)]
        events.emit(events.Message(message=f"cross-validation: fold {fold + 1}/{k} done"))
    assert pooled is not None
    choice = Choice(decide(pooled), pooled, len(rows.texts), k)
    saved.write_text(json.dumps(asdict(choice)))
    for folder in cv_dir.iterdir():  # the fold runs' data and checkpoints: the choice is kept
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    events.emit(events.Message(message=choice.summary()))
    return choice


def _fold(spec, home, cv_dir: Path, rows: ClassificationData, held, fold: int, metric: str):
    """One fold's run: the run's schedule on the other folds, scored on this one at the start
    and after every epoch, no early stopping; returns the rows right at each evaluation."""
    from training.loop import fit
    from training.prepare import prepare

    folder = cv_dir / f"fold{fold}"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, mask in (("train", ~held), ("validation", held)):
        files[name] = folder / f"{name}.jsonl"
        picked = [(t, y) for t, y, m in zip(rows.texts, rows.labels, mask, strict=True) if m]
        files[name].write_text(
            "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in picked)
        )
    hp = spec.hyperparameters.model_copy(
        update={"early_stopping_patience": None, "eval_before_training": True, "cv_folds": 0}
    )
    fold_spec = spec.model_copy(
        update={
            "run_id": f"{spec.run_id}-cv{fold}",
            "train_file": files["train"],
            "validation_file": files["validation"],
            "export": False,
            "hyperparameters": hp,
        }
    )
    inputs = folder / "inputs"
    prepare(fold_spec, home, inputs, baseline=False)
    result = fit(fold_spec, inputs, folder, metric=metric, mode="max", quiet=True)
    if result.error:
        raise result.error
    with result.checkpoint.as_directory() as d:
        evaluations = history(Path(d))
    n = int(held.sum())
    return [round(e[metric] * n) for e in evaluations]
