"""The job entry point: `python -m training SPEC.json [--home DIR]`.

Validate the spec and the data (before any compute), prepare the run once in the driver (the
tokenizer, the initial weights, tokenized datasets, under <home>/runs/<run_id>/inputs), run the
loop on Ray Train, then export the best checkpoint into the model store. Rerunning the same
spec resumes the same run from its last checkpoint. Progress and metrics are JSON lines on
stdout (`{"tuneserve_event": {...}}`), read by the job service.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from transformers import AutoConfig, BertConfig, BertForPreTraining

from training import artifacts, data
from training.config import SCRATCH, SCRATCH_SIZES, FinetuneSpec, PretrainSpec, load_spec
from training.loop import STATE_FILE, TASKS, _emit, fit, make_task
from training.tasks import QATask, load_tokenizer

EXIT_BAD_INPUT = 2


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _split(items: list, share: float, seed: int) -> tuple[list, list]:
    order = np.random.default_rng(seed).permutation(len(items))
    n_eval = max(1, int(len(items) * share)) if share else 0
    return [items[i] for i in order[n_eval:]], [items[i] for i in order[:n_eval]]


def read_data(spec: PretrainSpec | FinetuneSpec):
    """(train, validation) in the task's reader format; a DataError names file and line."""
    hp = spec.hyperparameters
    reader = {
        "text-classification": data.read_classification,
        "extractive-qa": data.read_squad,
        "masked-lm": data.read_corpus,
    }[spec.task]
    train = reader(spec.train_file)
    if spec.validation_file:
        return train, reader(spec.validation_file)
    if spec.task == "text-classification":
        rows = list(zip(train.texts, train.labels, strict=True))
        tr, ev = _split(rows, spec.validation_split, hp.seed)
        return (
            data.ClassificationData([t for t, _ in tr], [lab for _, lab in tr]),
            data.ClassificationData([t for t, _ in ev], [lab for _, lab in ev]),
        )
    return _split(train, spec.validation_split, hp.seed)


# fields that may differ when a run is started again (they do not change what is trained)
RERUN_FREE = {"export", "output_model_id", "max_failures"}


def _trained_part(spec: PretrainSpec | FinetuneSpec) -> dict:
    return json.loads(spec.model_dump_json(exclude=RERUN_FREE))


def prepare(spec: PretrainSpec | FinetuneSpec, home: Path, inputs: Path) -> dict:
    """Write tokenizer/, init/ and prepared.pt under `inputs`; reuse them when the same run is
    started again, and refuse a different spec under the same run id."""
    if (inputs / "prepared.pt").is_file():
        info = json.loads((inputs / "prepared.json").read_text())
        if "spec" in info and info["spec"] != _trained_part(spec):
            old, new = info.get("spec") or {}, _trained_part(spec)
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise ValueError(
                f"run {spec.run_id!r} already exists with a different spec (changed: "
                f"{', '.join(changed)}); rerunning a run id resumes it, so give a new run id"
            )
        return info
    train, val = read_data(spec)
    staging = Path(tempfile.mkdtemp(prefix=".prep-", dir=inputs.parent))
    try:
        return _prepare_into(spec, home, inputs, staging, train, val)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_weights(folder: Path, model_id: str) -> None:
    """Read the headers of a model's safetensors files here, before any worker starts: an
    unreadable file would otherwise fail every worker, and every Ray Train retry, the same way."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as exc:
            raise RuntimeError(
                f"the weights of base model {model_id!r} cannot be read ({path.name}: {exc}); "
                "re-export or re-import that model"
            ) from exc


def _prepare_into(spec, home: Path, inputs: Path, staging: Path, train, val) -> dict:
    hp = spec.hyperparameters
    if spec.base_model == SCRATCH:
        from training.tokenizer import train_wordpiece

        train_wordpiece(train, staging / "tokenizer", spec.vocab_size)
        layers, hidden, heads, inter = SCRATCH_SIZES[spec.scratch_size]
        tok = load_tokenizer(staging / "tokenizer", hp.max_seq_length)
        config = BertConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=max(512, hp.max_seq_length),
            pad_token_id=tok.pad_token_id,
        )
        # random weights saved once, so every worker and every retry starts from the same ones
        # (BertForPreTraining holds the MLM and NSP heads; an MLM-only run ignores NSP's)
        torch.manual_seed(hp.seed)
        BertForPreTraining(config).save_pretrained(staging / "init")
        base_info = {"base": None, "source": f"scratch:{spec.scratch_size}"}
    else:
        base_dir = artifacts.model_dir(home, spec.base_model)
        manifest = artifacts.read_manifest(base_dir)  # FileNotFoundError names the folder
        shutil.copytree(
            base_dir / manifest.files.get("tokenizer", "tokenizer"), staging / "tokenizer"
        )
        shutil.copytree(base_dir / manifest.files.get("hf", "hf"), staging / "init")
        _check_weights(staging / "init", spec.base_model)
        base_info = {"base": spec.base_model, "source": manifest.source}
    tok = load_tokenizer(staging / "tokenizer", hp.max_seq_length)
    labels = train.label_names if spec.task == "text-classification" else []
    task = make_task(spec, tok, labels)
    if spec.task == "text-classification":
        unknown = sorted(set(val.labels) - set(labels))
        if unknown:
            raise data.DataError(
                spec.validation_file or spec.train_file,
                [f"validation labels {unknown} are not in the training data"],
            )
        prepared = {
            "train": task.features(train.texts, train.labels),
            "eval": task.features(val.texts, val.labels),
        }
    elif spec.task == "extractive-qa":
        prepared = {
            "train": task.windows(train),
            "eval": {"examples": val, "windows": task.windows(val)},
        }
    else:
        prepared = {"train": task.blocks(train, hp.seed), "eval": task.blocks(val, hp.seed + 1)}
    prepared["labels"] = labels
    torch.save(prepared, staging / "prepared.pt")
    info = {
        "labels": labels,
        "train_rows": len(train.texts) if hasattr(train, "texts") else len(train),
        "train_items": len(prepared["train"]),
        "dataset_sha256": sha256(spec.train_file),
        "spec": _trained_part(spec),
        **base_info,
    }
    (staging / "prepared.json").write_text(json.dumps(info))
    if inputs.exists():
        shutil.rmtree(inputs)
    os.replace(staging, inputs)
    return info


def _onnx_validator(task, prepared: dict):
    """session -> the validation metric in percent, through ONNX Runtime."""

    def feeds(items):
        for i in range(0, len(items), 64):
            batch = task.collate(items[i : i + 64])
            yield (
                {k: batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")},
                batch,
            )

    if isinstance(task, QATask):
        windows, examples = prepared["eval"]["windows"], prepared["eval"]["examples"]

        def validate_qa(session) -> float:
            starts, ends = [], []
            for feed, _ in feeds(windows):
                start_logits, end_logits = session.run(None, feed)
                starts.append(start_logits)
                ends.append(end_logits)
            return task.scores(starts, ends, examples, windows)["f1"]

        return validate_qa

    def validate_cls(session) -> float:
        right = total = 0
        for feed, batch in feeds(prepared["eval"]):
            pred = session.run(None, feed)[0].argmax(-1)
            right += int((pred == batch["labels"].numpy()).sum())
            total += len(pred)
        return 100.0 * right / max(total, 1)

    return validate_cls


def export_run(
    spec,
    home: Path,
    inputs: Path,
    best_dir: Path,
    info: dict,
    metrics: dict,
    *,
    replace: bool = False,
):
    from training.export import export_encoder, export_finetuned

    hf = best_dir / "hf"
    config = AutoConfig.from_pretrained(str(hf))
    tok = load_tokenizer(inputs / "tokenizer", spec.hyperparameters.max_seq_length)
    task = make_task(spec, tok, info["labels"])
    model = task.build_model(hf).eval()
    extras = {
        "spec": json.loads(spec.model_dump_json()),
        "dataset_sha256": info["dataset_sha256"],
        "run_id": spec.run_id,
    }
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    if spec.task == "masked-lm":
        # the product of pretraining is an encoder: export it as a base for later fine-tunes
        with tempfile.TemporaryDirectory() as tmp:
            encoder = getattr(model, model.base_model_prefix)
            encoder.save_pretrained(tmp)
            for f in (inputs / "tokenizer").iterdir():
                shutil.copy2(f, tmp)
            manifest = export_encoder(
                tmp,
                home,
                spec.model_id,
                source=info["source"],
                max_seq_length=spec.hyperparameters.max_seq_length,
                replace=replace,
            )
        manifest = manifest.model_copy(update={"base": info["base"], "metrics": numeric, **extras})
        artifacts.write_manifest(artifacts.model_dir(home, spec.model_id), manifest)
        return manifest
    manifest = artifacts.Manifest(
        id=spec.model_id,
        task=spec.task,
        base=info["base"],
        source=info["source"],
        labels=info["labels"],
        max_seq_length=spec.hyperparameters.max_seq_length,
        hidden_size=config.hidden_size,
        metrics=numeric,
        **extras,
        **(
            {
                "doc_stride": spec.hyperparameters.doc_stride,
                "max_answer_length": spec.hyperparameters.max_answer_length,
            }
            if spec.task == "extractive-qa"
            else {}
        ),
    )
    prepared = torch.load(inputs / "prepared.pt", weights_only=False)
    return export_finetuned(
        model,
        inputs / "tokenizer",
        home,
        manifest,
        validate=_onnx_validator(task, prepared),
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        replace=replace,
    )


def run(
    spec: PretrainSpec | FinetuneSpec,
    home: str | Path,
    *,
    replace_model: bool = False,
    ray_address: str | None = None,
) -> dict:
    """Prepare, train (resuming a run of the same id), export. Returns a summary."""
    import ray

    home = Path(home).resolve()
    runs = home / "runs"
    inputs = runs / spec.run_id / "inputs"
    inputs.parent.mkdir(parents=True, exist_ok=True)
    info = prepare(spec, home, inputs)
    _emit({"type": "message", "message": f"prepared {info['train_items']} training items"})
    if not ray.is_initialized():
        # the job service names its cluster; Ray Jobs also sets RAY_ADDRESS
        address = ray_address or os.environ.get("RAY_ADDRESS")
        # a Ray of its own needs no dashboard (nor the fixed port its agent would take)
        ray.init(address=address, **({} if address else {"include_dashboard": False}))
    task_cls = TASKS[spec.task]
    result = fit(
        spec,
        inputs,
        runs,
        metric=task_cls.metric,
        mode=task_cls.mode,
    )
    if result.error:
        raise result.error
    # the best by the task's metric; on a tie, the later one (it has trained longer)
    sign = 1 if task_cls.mode == "max" else -1
    ranked = sorted(
        result.best_checkpoints or [(result.checkpoint, result.metrics)],
        key=lambda cm: (sign * cm[1][task_cls.metric], cm[1]["step"]),
    )
    best, best_metrics = ranked[-1]
    with result.checkpoint.as_directory() as d:
        history = torch.load(Path(d) / STATE_FILE, weights_only=False)["history"]
    summary = {
        "run_id": spec.run_id,
        "metrics": best_metrics,
        "final": result.metrics,
        "checkpoint": best.path,
        "history": history,
    }
    if spec.export:
        with best.as_directory() as d:
            manifest = export_run(
                spec, home, inputs, Path(d), info, best_metrics, replace=replace_model
            )
        summary["model"] = manifest.id
        summary["precision"] = manifest.precision
        summary["parity"] = manifest.parity.model_dump() if manifest.parity else None
    _emit(
        {"type": "result", **{k: v for k, v in summary.items() if k not in ("parity", "history")}}
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training", description="run one training spec")
    p.add_argument("spec", type=Path, help="a PretrainSpec or FinetuneSpec as JSON")
    p.add_argument(
        "--home", type=Path, default=Path(os.environ.get("TUNESERVE_HOME", ".tuneserve"))
    )
    p.add_argument("--replace-model", action="store_true", help="overwrite an exported model")
    p.add_argument("--ray-address", help="the Ray cluster to train on (default: RAY_ADDRESS)")
    args = p.parse_args(argv)
    try:
        spec = load_spec(args.spec.read_text())
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"][1:]) or "spec"
            print(f"invalid spec {args.spec}: {loc}: {err['msg']}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        summary = run(
            spec, args.home, replace_model=args.replace_model, ray_address=args.ray_address
        )
    except (data.DataError, FileNotFoundError) as exc:
        print(f"invalid data: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:  # a run id reused with another spec
        print(f"invalid spec {args.spec}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        json.dumps(
            {k: v for k, v in summary.items() if k not in ("parity", "history")}, default=str
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
