"""Preparing a run, once, in the driver: the data read and validated, the tokenizer and the
initial weights copied (or made, from scratch), the data tokenized by the task, everything
under `<home>/runs/<run id>/inputs`. Every worker and every retry starts from the same bytes,
and a rerun of the same run id reuses them (a rerun with another spec is refused)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForPreTraining

from training import artifacts, data
from training.config import SCRATCH, SCRATCH_SIZES, TASKS, FinetuneSpec, PretrainSpec
from training.tasks import load_tokenizer, make_task

Spec = PretrainSpec | FinetuneSpec
# fields that may differ when a run is started again (they do not change what is trained)
RERUN_FREE = {"export", "output_model_id", "max_failures"}


# a held-out validation set is at least this many rows (or a quarter of the data, if less):
# the best checkpoint, early stopping and the int8 gate are all decided on it
MIN_VALIDATION_ROWS = 100


def held_out_size(n: int, share: float) -> int:
    if not share or n < 2:
        return 0
    return max(1, int(n * share), min(MIN_VALIDATION_ROWS, n // 4))


def split(items: list, share: float, seed: int) -> tuple[list, list]:
    """(kept, held out): a seeded random share of the items held out (held_out_size)."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_eval = held_out_size(len(items), share)
    return [items[i] for i in order[n_eval:]], [items[i] for i in order[:n_eval]]


def stratified_split(
    rows: data.ClassificationData, share: float, seed: int
) -> tuple[data.ClassificationData, data.ClassificationData]:
    """(kept, held out), each label held out in proportion to its rows (at least one row of
    every label that has two, never its last): held_out_size rows in all, give or take the
    rounding of each label's share."""
    rng = np.random.default_rng(seed)
    labels = np.array(rows.labels)
    n_eval = held_out_size(len(labels), share)
    held: list[int] = []
    if n_eval:
        for label in sorted(set(rows.labels)):
            mine = rng.permutation(np.flatnonzero(labels == label))
            want = max(1, round(n_eval * len(mine) / len(labels)))
            held.extend(int(i) for i in mine[: min(want, len(mine) - 1)])
    kept = sorted(set(range(len(labels))) - set(held))

    def pick(index: list[int]) -> data.ClassificationData:
        return data.ClassificationData(
            [rows.texts[i] for i in index], [rows.labels[i] for i in index]
        )

    return pick(kept), pick(sorted(held))


def read_data(spec: Spec):
    """(train, validation) in the task's reader format; a DataError names file and line."""
    reader = data.READERS[TASKS[spec.task].file_format]
    train = reader(spec.train_file)
    if spec.validation_file:
        return train, reader(spec.validation_file)
    seed = spec.hyperparameters.seed
    if isinstance(train, data.ClassificationData):
        return stratified_split(train, spec.validation_split, seed)
    return split(train, spec.validation_split, seed)


def trained_part(spec: Spec) -> dict:
    return json.loads(spec.model_dump_json(exclude=RERUN_FREE))


def prepare(spec: Spec, home: Path, inputs: Path, *, baseline: bool = True) -> dict:
    """Write tokenizer/, init/ and prepared.pt under `inputs` and return what the run needs to
    know of them (with the base's zero-shot scores, unless `baseline` is off); reuse them
    when the same run is started again."""
    if (inputs / "prepared.pt").is_file():
        info = json.loads((inputs / "prepared.json").read_text())
        old, new = info.get("spec") or {}, trained_part(spec)
        if "spec" in info and old != new:
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise ValueError(
                f"run {spec.run_id!r} already exists with a different spec (changed: "
                f"{', '.join(changed)}); rerunning a run id resumes it, so give a new run id"
            )
        return info
    train, val = read_data(spec)
    staging = Path(tempfile.mkdtemp(prefix=".prep-", dir=inputs.parent))
    try:
        info = _prepare_into(spec, home, staging, train, val, baseline)
        if inputs.exists():
            shutil.rmtree(inputs)
        os.replace(staging, inputs)
        return info
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_weights(folder: Path, model_id: str) -> None:
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


def _from_scratch(spec: PretrainSpec, train: list[str], staging: Path) -> dict:
    """A WordPiece vocabulary trained on the corpus, and random weights of the spec's size,
    saved once so that every worker and retry starts from the same ones."""
    from training.tokenizer import train_wordpiece

    hp = spec.hyperparameters
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
    torch.manual_seed(hp.seed)
    # BertForPreTraining holds the MLM and NSP heads; an MLM-only run ignores NSP's
    BertForPreTraining(config).save_pretrained(staging / "init")
    return {"base": None, "source": f"scratch:{spec.scratch_size}"}


def _from_base(spec: Spec, home: Path, staging: Path) -> dict:
    base_dir = artifacts.model_dir(home, spec.base_model)
    manifest = artifacts.read_manifest(base_dir)  # FileNotFoundError names the folder
    shutil.copytree(base_dir / manifest.files.get("tokenizer", "tokenizer"), staging / "tokenizer")
    shutil.copytree(base_dir / manifest.files.get("hf", "hf"), staging / "init")
    check_weights(staging / "init", spec.base_model)
    return {"base": spec.base_model, "source": manifest.source}


def zero_shot_baseline(spec: Spec, home: Path, val, labels: list[str]) -> dict[str, float]:
    """The base's zero-shot scores on the run's validation data (training/baseline.py)."""
    if not isinstance(spec, FinetuneSpec):
        return {}
    from training import baseline
    from training.embed import Embedder

    embed = Embedder(home, spec.base_model)
    if labels:
        return baseline.classification(embed, val, labels, spec.hyperparameters.label_template)
    return baseline.qa(embed, val)


def _prepare_into(spec: Spec, home: Path, staging: Path, train, val, baseline: bool) -> dict:
    hp = spec.hyperparameters
    if spec.base_model == SCRATCH:
        assert isinstance(spec, PretrainSpec)  # the spec refuses scratch for fine-tuning
        base_info = _from_scratch(spec, train, staging)
    else:
        base_info = _from_base(spec, home, staging)
    tok = load_tokenizer(staging / "tokenizer", hp.max_seq_length)
    labels = train.label_names if isinstance(train, data.ClassificationData) else []
    prepared = make_task(spec, tok, labels).prepare(train, val, hp.seed)
    prepared["labels"] = labels
    torch.save(prepared, staging / "prepared.pt")
    info = {
        "labels": labels,
        "train_rows": len(train.texts)
        if isinstance(train, data.ClassificationData)
        else len(train),
        "train_items": len(prepared["train"]),
        "dataset_sha256": data.file_sha256(spec.train_file),
        "spec": trained_part(spec),
        "baseline": zero_shot_baseline(spec, home, val, labels) if baseline else {},
        **base_info,
    }
    (staging / "prepared.json").write_text(json.dumps(info))
    return info
