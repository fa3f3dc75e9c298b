"""A head-method run, from its spec to a stored variant of a few kilobytes: the texts embedded
by the base's served graph, the head's strength chosen by cross-validation, the head fitted
on every training row, scored beside the base's zero-shot on the same rows, written as
`head.npz` and a manifest naming the base (and the digest of the graph it was trained on).
No Ray Train: the fit takes well under a second, the embedding a few seconds a thousand rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from training import artifacts, events
from training.artifacts import HEAD_FILE, ZERO_SHOT_TEMPLATE
from training.baseline import label_sentences
from training.config import FinetuneSpec
from training.data import ClassificationData, DataError, file_sha256, read_classification
from training.embed import Embedder
from training.heads import (
    L2_GRID,
    Head,
    choose_and_fit,
    cross_validate,
    fit,
    prototype_head,
    scores,
)


def _indices(data: ClassificationData, labels: list[str], path: Path) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(data.labels) - set(index))
    if unknown:
        raise DataError(path, [f"validation labels {unknown} are not in the training data"])
    return np.array([index[label] for label in data.labels], dtype=np.int64)


def _embed(embed: Embedder, texts: list[str], what: str) -> np.ndarray:
    started = time.monotonic()
    last = [started]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] >= 2 or done == total:
            last[0] = time.monotonic()
            events.emit(events.Message(message=f"embedded {done}/{total} {what}"))

    out = embed(texts, progress=progress)
    rate = len(texts) / max(time.monotonic() - started, 1e-9)
    events.emit(events.Message(message=f"embedded {len(texts)} {what} ({rate:.0f}/s)"))
    return out


def run_head(spec: FinetuneSpec, home: Path, *, replace_model: bool = False) -> dict:
    """Train a head variant of `spec.base_model`; returns the run's summary."""
    hp = spec.hyperparameters
    train = read_classification(spec.train_file)
    labels = train.label_names
    y = _indices(train, labels, spec.train_file)
    embed = Embedder(home, spec.base_model)
    start = prototype_head(embed(label_sentences(labels, hp.label_template)))
    x = _embed(embed, train.texts, "training texts")
    l2: float | None
    if hp.head_l2:  # as asked: cross-validated only to score it
        l2, table = hp.head_l2, cross_validate(x, y, start, (hp.head_l2,), hp.seed)[1]
        head, estimate = fit(x, y, start, l2), table.get(l2)
    else:
        chosen = choose_and_fit(x, y, start, L2_GRID, hp.seed)
        head, l2, table, estimate = chosen.head, chosen.l2, chosen.table, chosen.scores
    if spec.validation_file:
        # scored on the validation file: the head fitted on every training row, and zero-shot
        valid = read_classification(spec.validation_file)
        x_val = _embed(embed, valid.texts, "validation texts")
        y_val = _indices(valid, labels, spec.validation_file)
        metrics, baseline = (
            scores(head, x_val, y_val, len(labels)),
            scores(start, x_val, y_val, len(labels)),
        )
        evaluated_on = "validation file"
    else:
        # no validation file: every row is scored by a head that did not train on it
        metrics = estimate or scores(head, x, y, len(labels))
        baseline = scores(start, x, y, len(labels))
        evaluated_on = "cross-validation" if table else "training rows"
    if l2 is not None:
        metrics = {**metrics, "head_l2": l2}
    _report(spec, l2, evaluated_on, metrics, baseline)
    manifest = _manifest(spec, embed, labels, metrics=metrics, baseline=baseline)
    if spec.export:
        write_head(home, manifest, head, replace=replace_model)
    model = manifest.id if spec.export else None
    events.emit(
        events.Result(run_id=spec.run_id, step=1, metrics=metrics, baseline=baseline,
                      method="head", model=model, precision=manifest.precision)
    )  # fmt: skip
    return {
        "run_id": spec.run_id,
        "method": "head",
        "metrics": metrics,
        "baseline": baseline,
        "model": model,
        "cross_validation": {str(k or "zero-shot"): v for k, v in table.items()},
    }


def _report(spec: FinetuneSpec, l2: float | None, evaluated_on: str, metrics, baseline) -> None:
    if l2 is None:
        chosen = "the zero-shot head kept: no trained head beat it by more than a row out of fold"
    else:
        chosen = f"a head trained with l2={l2:g}"
    events.emit(events.Evaluation(step=1, epoch=1, metrics=metrics, workers=1))
    events.emit(
        events.Message(
            message=f"{chosen}; on the {evaluated_on}: accuracy {100 * metrics['accuracy']:.1f}%"
            f" against {100 * baseline['accuracy']:.1f}% for {spec.base_model} zero-shot"
        )
    )


def _manifest(spec: FinetuneSpec, embed: Embedder, labels: list[str], **scores):
    return artifacts.Manifest(
        id=spec.model_id,
        task="text-classification",
        method="head",
        base=spec.base_model,
        base_sha256=embed.sha256(),
        template=spec.hyperparameters.label_template or ZERO_SHOT_TEMPLATE,
        source=f"head on {spec.base_model}",
        labels=labels,
        files={"head": HEAD_FILE},
        precision=embed.manifest.precision,
        max_seq_length=embed.manifest.max_seq_length,
        hidden_size=embed.manifest.hidden_size,
        spec=json.loads(spec.model_dump_json()),
        dataset_sha256=file_sha256(spec.train_file),
        run_id=spec.run_id,
        **scores,
    )


def write_head(home: Path, manifest: artifacts.Manifest, head: Head, *, replace: bool) -> None:
    with artifacts.staged_model_dir(home, manifest.id, replace=replace) as out:
        head.save(out / HEAD_FILE)
        artifacts.write_manifest(out, manifest)
