"""A run from its spec to a served model: prepare (training/prepare.py), train on Ray Train
(training/loop.py), export the best checkpoint (training/export.py) into the model store. A
classification run by the head method takes its own short path (training/head_run.py)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig

from training import artifacts, cv, events
from training.checkpoints import HF_DIR, history
from training.config import FinetuneSpec, PretrainSpec, pick_method
from training.data import read_classification
from training.export import export_encoder, export_finetuned
from training.fill_mask_graph import export_fill_mask
from training.loop import fit
from training.prepare import prepare
from training.tasks import load_tokenizer, make_task, task_class

Spec = PretrainSpec | FinetuneSpec


def run(
    spec: Spec, home: str | Path, *, replace_model: bool = False, ray_address: str | None = None
) -> dict:
    """Prepare, train (resuming a run of the same id), export. Returns a summary."""
    home = Path(home).resolve()
    method = resolve_method(spec)
    if method == "head":
        assert isinstance(spec, FinetuneSpec)
        return _run_head(spec, home, replace_model)
    runs = home / "runs"
    inputs = runs / spec.run_id / "inputs"
    inputs.parent.mkdir(parents=True, exist_ok=True)
    info = prepare(spec, home, inputs)
    events.emit(events.Message(message=f"prepared {info['train_items']} training items"))
    if info.get("baseline"):
        events.emit(events.Baseline(model=spec.base_model, metrics=info["baseline"]))
    _connect(ray_address)
    cls = task_class(spec.task)
    folds = cv.folds_for(spec) if isinstance(spec, FinetuneSpec) else 0
    if folds:
        assert isinstance(spec, FinetuneSpec)
        choice = cv.cross_validate(spec, home, runs, folds, metric=cls.metric)
        if not choice.pays:
            return _run_head(spec.model_copy(update={"method": "head"}), home, replace_model)
    result = fit(spec, inputs, runs, metric=cls.metric, mode=cls.mode)
    if result.error:
        raise result.error
    best = _best(result, cls.metric, cls.mode)
    return _finish(spec, home, inputs, info, result, best, method, replace_model)


def _finish(spec, home, inputs, info, result, best, method, replace_model) -> dict:
    """Export the chosen checkpoint, emit the run's Result, return its summary."""
    checkpoint, best_metrics = best
    with result.checkpoint.as_directory() as d:
        evaluations = history(Path(d))
    summary = {
        "run_id": spec.run_id,
        "metrics": best_metrics,
        "final": result.metrics,
        "checkpoint": checkpoint.path,
        "history": evaluations,
    }
    if spec.export:
        with checkpoint.as_directory() as d:
            manifest = export_run(
                spec, home, inputs, Path(d), info, best_metrics, replace=replace_model
            )
        summary.update(model=manifest.id, precision=manifest.precision, parity=manifest.parity)
    events.emit(
        events.Result(
            run_id=spec.run_id,
            step=best_metrics["step"],
            metrics=_scores(best_metrics),
            model=summary.get("model"),
            precision=summary.get("precision"),
            baseline=info.get("baseline") or {},
            method=method,
        )
    )
    return {**summary, "method": method, "baseline": info.get("baseline") or {}}


def _run_head(spec: FinetuneSpec, home: Path, replace_model: bool) -> dict:
    from training.head_run import run_head

    return run_head(spec, home, replace_model=replace_model)


def resolve_method(spec: Spec) -> str | None:
    """A fine-tune's method: as the spec says, or for "auto" by its rows a label (the job
    service resolves it at submission; the CLI and `python -m training` here)."""
    if not isinstance(spec, FinetuneSpec):
        return None
    rows_per_class = 0
    if spec.method == "auto" and spec.task == "text-classification":
        train = read_classification(spec.train_file)
        rows_per_class = len(train.texts) // max(len(train.label_names), 1)
    return pick_method(spec.task, spec.method, rows_per_class)


def _connect(ray_address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        # the job service names its cluster; Ray Jobs also sets RAY_ADDRESS
        address = ray_address or os.environ.get("RAY_ADDRESS")
        # a Ray of its own needs no dashboard (nor the fixed port its agent would take)
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False)


def _best(result, metric: str, mode: str):
    """The best checkpoint by the task's metric; on a tie, the later one (it trained longer)."""
    sign = 1 if mode == "max" else -1
    ranked = sorted(
        result.best_checkpoints or [(result.checkpoint, result.metrics)],
        key=lambda cm: (sign * cm[1][metric], cm[1]["step"]),
    )
    return ranked[-1]


# what a run's metrics record besides the validation scores
RUN_FACTS = {"step", "epoch", "workers", "resumed_from_step", "train_samples_per_s", "loss"}


def _scores(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k not in RUN_FACTS and v is not None}


def export_run(
    spec: Spec,
    home: Path,
    inputs: Path,
    best_dir: Path,
    info: dict,
    metrics: dict,
    *,
    replace=False,
) -> artifacts.Manifest:
    """Export a checkpoint: a masked-lm run as an encoder, a fine-tune with its head."""
    hf = best_dir / HF_DIR
    hp = spec.hyperparameters
    tok = load_tokenizer(inputs / "tokenizer", hp.max_seq_length)
    task = make_task(spec, tok, info["labels"])
    model: Any = task.build_model(hf).eval()  # an HF model: save_pretrained, base_model_prefix
    extras = {
        "base": info["base"],
        "baseline": info.get("baseline") or {},
        "source": info["source"],
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        "spec": json.loads(spec.model_dump_json()),
        "dataset_sha256": info["dataset_sha256"],
        "run_id": spec.run_id,
    }
    if not task.output_names:
        # the product of pretraining is an encoder: exported as a base for later fine-tunes
        with tempfile.TemporaryDirectory() as tmp:
            getattr(model, model.base_model_prefix).save_pretrained(tmp)
            for f in (inputs / "tokenizer").iterdir():
                (Path(tmp) / f.name).write_bytes(f.read_bytes())
            return export_encoder(
                tmp,
                home,
                spec.model_id,
                max_seq_length=hp.max_seq_length,
                replace=replace,
                # its masked-LM head too, so that the encoder also fills masks
                extra=lambda out, tok_dir: export_fill_mask(model, out, tok_dir, hp.max_seq_length),
                **extras,
            )
    manifest = _finetuned_manifest(spec, hf, info["labels"], extras)
    prepared = torch.load(inputs / "prepared.pt", weights_only=False)
    return export_finetuned(
        model,
        task.output_names,
        inputs / "tokenizer",
        home,
        manifest,
        validate=task.onnx_metric(prepared["eval"]),
        gate=_gate(task, spec, prepared),
        replace=replace,
    )


# training rows a classifier's precision gate adds to its held-out rows: enough that one row
# is a small fraction of a point, few enough that the three graphs (fp16 slowly, on a CPU)
# score them in well under a minute
GATE_TRAIN_ROWS = 1000


def _gate(task, spec: Spec, prepared: dict) -> tuple[Any, int, int] | None:
    """A classifier's precision gate: every held-out row and up to GATE_TRAIN_ROWS training
    rows (a seeded sample). It compares graphs of one model, so rows it trained on serve as
    well as new ones: measured on four sets, int8 changed test accuracy by -0.6 to +0.6
    points where a gate of 16-144 held-out rows saw -2 to +0 (README, Precision and GPUs).
    The held-out rows still veto a graph that loses VETO_ROWS of them (ParityReport.verdict)."""
    if spec.task != "text-classification":
        return None  # QA's validation questions number in the hundreds: its F1 is the gate
    train = prepared["train"]
    pick = np.random.default_rng(0).permutation(len(train))[:GATE_TRAIN_ROWS]
    rows = list(prepared["eval"]) + [train[int(i)] for i in sorted(pick)]
    return task.onnx_metric(rows), len(rows), len(prepared["eval"])


def _finetuned_manifest(
    spec: Spec, hf: Path, labels: list[str], extras: dict
) -> artifacts.Manifest:
    hp = spec.hyperparameters
    qa = {
        "doc_stride": hp.doc_stride,
        "max_answer_length": hp.max_answer_length,
        "max_question_tokens": hp.max_question_tokens,
    }
    return artifacts.Manifest(
        id=spec.model_id,
        task=spec.task,
        labels=labels,
        max_seq_length=hp.max_seq_length,
        hidden_size=AutoConfig.from_pretrained(str(hf)).hidden_size,
        **extras,
        **(qa if spec.task == "extractive-qa" else {}),
    )
