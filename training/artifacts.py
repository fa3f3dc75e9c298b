"""The model artifact contract: the folder layout of one model and its manifest.

A model folder holds::

    manifest.json      what the model is (this module's `Manifest`)
    tokenizer/         the fast tokenizer (tokenizer.json and its configs)
    onnx/              model.onnx (fp32, optimized) and model.int8.onnx / model.fp16.onnx
    hf/                config and weights, for further fine-tuning

Everything that reads or writes a model folder goes through this module, so the layout has
one owner. A folder is built under a temporary name and renamed into place only when complete
(`staged_model_dir`), so a crash mid-export never leaves a half-written model that looks whole.
This module is imported by the service, so it must stay light: no torch, no onnxruntime.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
ONNX_DIR = "onnx"
HF_DIR = "hf"
MODELS_DIR = "models"

# What a model's head computes. A `feature-extraction` model is an encoder that outputs one
# normalized sentence embedding per input; the service uses it zero-shot for classification
# and for sentence-level QA.
ModelTask = Literal["feature-extraction", "text-classification", "extractive-qa"]
Precision = Literal["fp32", "int8", "fp16"]

# Zero-shot classification with an encoder: a label is compared with a text as this sentence,
# and cosine similarities are multiplied by this scale before the softmax. Serving (the base
# zero-shot), the heads a job trains (started from the label sentences) and the baseline a job
# reports all use these two. Of 17 wordings tried on SST-2 validation and movie_sentiment test
# (bench/zero_shot.py), this one was best on both; all-MiniLM-L6-v2 was trained with a
# contrastive loss at this scale (sentence-transformers' MultipleNegativesRankingLoss), so
# scaled cosines are the logits it learned to separate.
ZERO_SHOT_TEMPLATE = "The tone is {}."
SIMILARITY_SCALE = 20.0
HEAD_FILE = "head.npz"  # a head-only variant: W [labels, hidden] and b [labels]

ONNX_FILES: dict[str, str] = {
    "fp32": f"{ONNX_DIR}/model.onnx",
    "int8": f"{ONNX_DIR}/model.int8.onnx",
    "fp16": f"{ONNX_DIR}/model.fp16.onnx",
}

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


# held-out rows a graph must lose (net) to be refused whatever its gate rows say: five rows
# lost and none won would happen by chance under 5% of the time (a sign test) if the graph
# were as good as fp32; fewer is within the noise of a few dozen rows
VETO_ROWS = 5


class ParityReport(BaseModel):
    """How far each exported precision is from the PyTorch model, on the same inputs."""

    model_config = ConfigDict(extra="allow")

    samples: int
    # per precision: max abs difference of the outputs, and for embeddings the mean and
    # minimum cosine similarity to PyTorch's
    max_abs_diff: dict[str, float] = Field(default_factory=dict)
    mean_cosine: dict[str, float] = Field(default_factory=dict)
    min_cosine: dict[str, float] = Field(default_factory=dict)
    # a fine-tuned model: its validation metric through each graph (accuracy or F1, percent)
    validation_metric: dict[str, float] = Field(default_factory=dict)
    # a classifier: the same metric on every held-out row and a sample of the training rows,
    # `gate_rows` in all: what the precision gate compares (precision.py). On small data the
    # held-out split alone is a handful of rows, where one row is several points
    gate_metric: dict[str, float] = Field(default_factory=dict)
    gate_rows: int | None = None
    validation_rows: int | None = None  # the held-out rows among them

    def verdict(self, fast: str, budget: float) -> tuple[bool, str] | None:
        """Whether graph `fast` stays within `budget` points of fp32, and why; None when the
        metrics were not recorded. A classifier is judged on its gate rows, and its held-out
        rows veto a graph that loses VETO_ROWS of them or more, and more than the budget."""
        gated = bool(self.gate_metric)
        metric = self.gate_metric if gated else self.validation_metric
        if fast not in metric or "fp32" not in metric:
            return None
        rows = f"{self.gate_rows} labelled rows" if gated else "validation"
        shown = f"{fast} scores {metric[fast]:.2f} on {rows} against fp32's {metric['fp32']:.2f}"
        if metric[fast] < metric["fp32"] - budget:
            return False, f"{shown}: beyond the {budget:g}-point budget"
        held, n = self.validation_metric, self.validation_rows
        if gated and n and fast in held and "fp32" in held:
            drop = held["fp32"] - held[fast]
            lost = round(drop * n / 100)
            if drop > budget and lost >= VETO_ROWS:
                return False, (
                    f"{shown}, but {lost} of its {n} held-out rows lost "
                    f"({held[fast]:.2f} against {held['fp32']:.2f}): beyond the {budget:g}-point budget"
                )
        return True, f"{shown}: within the {budget:g}-point budget"

    # an encoder with a masked-LM head (training/fill_mask_graph.py): the share of masked
    # positions whose top token matches PyTorch's, and the largest logit difference
    fill_mask_top1: dict[str, float] = Field(default_factory=dict)
    fill_mask_max_abs_diff: dict[str, float] = Field(default_factory=dict)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    task: ModelTask
    base: str | None = Field(None, description="the model this one was trained from, if any")
    source: str | None = Field(None, description="where the weights came from")
    labels: list[str] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict, description="role -> relative path")
    precision: Precision = "fp32"
    max_seq_length: int = 256
    doc_stride: int | None = Field(None, description="QA: tokens shared by adjacent windows")
    max_answer_length: int | None = Field(None, description="QA: longest answer, in tokens")
    max_question_tokens: int | None = Field(None, description="QA: a question is cut to these")
    hidden_size: int | None = None
    parity: ParityReport | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    # what fine-tuning bought: the base model's zero-shot scores on the same validation data
    baseline: dict[str, float] = Field(default_factory=dict)
    # a classifier is `full` (every weight trained: an encoder of its own) or `head` (a small
    # head on its base's frozen, pooled output: the folder holds the head and names its base)
    method: Literal["full", "head"] = "full"
    base_sha256: str | None = Field(None, description="head: the base graph it was trained on")
    template: str | None = Field(None, description="head: the sentence its labels were put in")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def head_only(self) -> bool:
        return self.method == "head"

    @property
    def fill_mask(self) -> bool:
        """An encoder that kept its masked-LM head (a pretraining job's) fills masks."""
        return "onnx_fill_mask" in self.files

    def onnx_file(self, precision: Precision | None = None) -> str:
        """The relative path of the ONNX graph for `precision` (default: the one to serve)."""
        role = f"onnx_{precision or self.precision}"
        if role not in self.files:
            raise KeyError(f"model {self.id!r} has no {precision or self.precision} ONNX graph")
        return self.files[role]


def validate_model_id(model_id: str) -> str:
    if not _MODEL_ID.match(model_id):
        raise ValueError(
            f"invalid model id {model_id!r}: use 1-128 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit"
        )
    return model_id


def models_root(home: str | Path) -> Path:
    return Path(home) / MODELS_DIR


def model_dir(home: str | Path, model_id: str) -> Path:
    # ':' separates the parts of a fine-tuned id (ft:<base>:<suffix>:<id>); it is legal in a
    # POSIX path but not in every object store or on Windows, so the folder uses '--'.
    return models_root(home) / validate_model_id(model_id).replace(":", "--")


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no {MANIFEST} in {folder}: not a model folder") from None


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write the manifest atomically: readers see the old one or the new one, never half."""
    path = Path(folder) / MANIFEST
    tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


def list_manifests(home: str | Path) -> list[Manifest]:
    """Every complete model under `home`; staging folders and unreadable ones are skipped."""
    root = models_root(home)
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not (child / MANIFEST).is_file():
            continue
        with contextlib.suppress(ValueError, OSError):
            found.append(read_manifest(child))
    return found


@contextlib.contextmanager
def staged_model_dir(home: str | Path, model_id: str, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes the model's folder in one rename.

    On an exception the staging folder is removed and any existing model is left as it was.
    """
    final = model_dir(home, model_id)
    if final.exists() and not replace:
        raise FileExistsError(f"model {model_id!r} already exists at {final}")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        if not (staging / MANIFEST).is_file():
            raise RuntimeError(f"staged model {model_id!r} has no {MANIFEST}")
        if final.exists():
            retired = final.parent / f".retired-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, retired)
            os.replace(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_model_dir(home: str | Path, model_id: str) -> None:
    """Remove a model's folder: renamed out of the store in one step, then deleted, so a
    reader sees the whole model or none of it."""
    final = model_dir(home, model_id)
    if not final.exists():
        return
    retired = final.parent / f".retired-{final.name}-{uuid.uuid4().hex[:8]}"
    os.replace(final, retired)
    shutil.rmtree(retired, ignore_errors=True)
