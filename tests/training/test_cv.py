"""The full method on small data: cross-validation decides whether training beats the
zero-shot start out of fold; where it does not, the run gives way to the head method."""

import json
from collections import Counter

import numpy as np
from testdata import classification_file

from training import cv
from training.config import FinetuneSpec
from training.run import run

FAST = {"batch_size": 8, "learning_rate": 2e-3, "warmup_ratio": 0.0, "log_every_steps": 5}
CPU = {"cpus_per_worker": 0.5}


def _spec(tmp_path, run_id: str, rows: int = 96, **hp) -> FinetuneSpec:
    return FinetuneSpec(
        run_id=run_id,
        task="text-classification",
        method="full",
        train_file=classification_file(tmp_path / f"{run_id}.jsonl", rows=rows),
        hyperparameters={**FAST, **hp},
        scaling=CPU,
    )


def test_the_start_is_kept_unless_training_wins_by_more_than_a_row():
    assert cv.decide([10, 11, 9]) == 0  # one row more: a luckier draw, not a better model
    assert cv.decide([10, 12, 12, 11]) == 1  # the fewest epochs at the most rows right
    assert cv.decide([10, 9, 13]) == 2
    assert cv.decide([10, 10, 10]) == 0


def test_folds_are_stratified_and_cover_every_row_once():
    labels = ["a"] * 13 + ["b"] * 7 + ["c"] * 4
    fold_of = cv.assign_folds(labels, 4, seed=3)
    assert sorted(Counter(fold_of.tolist())) == [0, 1, 2, 3]
    for label in "abc":
        counts = Counter(int(f) for f, y in zip(fold_of, labels, strict=True) if y == label)
        assert max(counts.values()) - min(counts.values()) <= 1  # dealt round the folds
    assert np.array_equal(fold_of, cv.assign_folds(labels, 4, seed=3))  # seeded


def test_cross_validation_applies_to_small_data_without_a_validation_file(tmp_path):
    small = _spec(tmp_path, "small")
    assert cv.folds_for(small) == cv.DEFAULT_FOLDS
    assert cv.folds_for(small.model_copy(update={"validation_file": small.train_file})) == 0
    off = small.hyperparameters.model_copy(update={"cv_folds": 0})
    assert cv.folds_for(small.model_copy(update={"hyperparameters": off})) == 0
    assert cv.folds_for(_spec(tmp_path, "large", rows=2 * 128)) == 0  # "auto"'s crossover
    assert cv.folds_for(_spec(tmp_path, "six", rows=6)) == 3  # no more folds than a label's rows


def test_a_full_run_on_small_data_trains_when_training_pays_out_of_fold(
    ray_session, store, tmp_path
):
    summary = run(_spec(tmp_path, "t-cv", epochs=3, early_stopping_patience=None), store)
    choice = json.loads((store / "runs" / "t-cv" / "cv" / "choice.json").read_text())
    assert choice["rows"] == 96 and choice["folds"] == 4 and len(choice["right"]) == 4
    # on data its words separate, training beats the random tiny base's zero-shot start
    assert choice["best_epoch"] >= 1 and max(choice["right"]) > choice["right"][0] + 1
    assert summary["method"] == "full" and summary["model"] == "t-cv"
    # then the run trains as asked: every epoch, on the rows it did not hold out
    assert [h["step"] for h in summary["history"]] == [0, 9, 18, 27]  # 72 rows, batch 8
    # the folds' data and checkpoints are gone; the decision is kept for a rerun
    assert [p.name for p in (store / "runs" / "t-cv" / "cv").iterdir()] == ["choice.json"]


def test_training_that_never_beats_the_start_gives_way_to_the_head_method(
    ray_session, store, tmp_path
):
    """A learning rate too small to change a prediction: out of fold every epoch is the
    start, so the run makes a head variant (itself kept at zero-shot unless a head wins)."""
    summary = run(_spec(tmp_path, "t-cv-start", epochs=2, learning_rate=1e-12), store)
    choice = json.loads((store / "runs" / "t-cv-start" / "cv" / "choice.json").read_text())
    assert choice["best_epoch"] == 0 and len(set(choice["right"])) == 1
    assert summary["method"] == "head" and summary["model"] == "t-cv-start"
    assert set(summary["baseline"]) == {"accuracy", "macro_f1"}
