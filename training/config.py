"""Training specs: what a pretraining or fine-tuning run is, validated before any compute.

A spec is the whole description of a run: the job service writes one as JSON, `python -m
training SPEC.json` runs it, and it is saved inside every checkpoint and model manifest. A spec
that cannot run fails here, with pydantic naming the field (``hyperparameters.doc_stride``).
This module is imported by the service: no torch, no ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Task = Literal["masked-lm", "text-classification", "extractive-qa"]
FileFormat = Literal["classification", "squad", "corpus"]
Purpose = Literal["fine-tune", "pretrain"]
SCRATCH = "scratch"


@dataclass(frozen=True)
class TaskInfo:
    """What a training task takes and makes: the one table of tasks."""

    file_format: FileFormat  # the data file it trains on (training.data reads each format)
    purpose: Purpose  # the upload purpose of that file
    model_task: str  # what the exported model serves (training.artifacts.ModelTask)


TASKS: dict[str, TaskInfo] = {
    "text-classification": TaskInfo("classification", "fine-tune", "text-classification"),
    "extractive-qa": TaskInfo("squad", "fine-tune", "extractive-qa"),
    # pretraining makes an encoder: served zero-shot, and the start of later fine-tunes
    "masked-lm": TaskInfo("corpus", "pretrain", "feature-extraction"),
}
# the task a file of each format trains when a job does not name one
TASK_OF_FORMAT: dict[str, str] = {info.file_format: task for task, info in TASKS.items()}
PURPOSES: tuple[Purpose, ...] = ("fine-tune", "pretrain")

# Encoder sizes for pretraining from scratch: (layers, hidden, heads, intermediate). `tiny`
# and `mini` follow the small BERTs of Turc et al. 2019; `tiny` is what tests use.
SCRATCH_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "medium": (8, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}
ScratchSize = Literal["tiny", "mini", "small", "medium", "base"]


# QA's learning rate: 1.5e-4, not the general 1e-4 (squad_new_wiki's validation F1 after 3
# epochs through the job API: 67.73 against 65.66; 5e-5 was 4 points behind 1e-4 after 2)
QA_DEFAULTS = {"max_seq_length": 384, "doc_stride": 128, "learning_rate": 1.5e-4}
# "auto" picks the head method below this many training rows a class (rows / labels):
# bench/learning_curve.py measures where full fine-tuning starts to win on every set (128)
HEAD_BELOW_ROWS_PER_CLASS = 128


# "auto" epochs: enough passes to see about this many examples, within [1, 10] (early stopping
# ends a run that stops improving); QA: 3 passes, 2 over many questions
AUTO_EXAMPLES = 2000
QA_EPOCHS, QA_MANY_QUESTIONS = (3, 2), 20_000


def auto_epochs(task: str, rows: int) -> int:
    """The epochs a job or a CLI run gets when it does not say."""
    if task == "extractive-qa":
        return QA_EPOCHS[rows >= QA_MANY_QUESTIONS]
    return max(1, min(10, math.ceil(AUTO_EXAMPLES / max(rows, 1))))


def default_learning_rate(task: str) -> float:
    """The learning rate a run gets when it does not say (a job's multiplier scales it)."""
    if task == "extractive-qa":
        return float(QA_DEFAULTS["learning_rate"])
    return float(Hyperparameters.model_fields["learning_rate"].default)


def pick_method(task: str, requested: str, rows_per_class: int) -> str:
    """The method a run uses: as requested, or for "auto", by the amount of data."""
    if requested != "auto" or task != "text-classification":
        return "full" if requested == "auto" else requested
    return "head" if rows_per_class < HEAD_BELOW_ROWS_PER_CLASS else "full"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hyperparameters(_Strict):
    epochs: float = Field(1.0, gt=0, le=100, description="passes over the training data")
    batch_size: int = Field(16, ge=1, le=4096, description="per worker, per step")
    # 1e-4 beat 5e-5 for fine-tuning MiniLM on SST-2 on both seeds tried
    learning_rate: float = Field(1e-4, gt=0, le=1)
    warmup_ratio: float = Field(0.06, ge=0, le=0.5, description="share of steps to warm up")
    weight_decay: float = Field(0.01, ge=0, le=1)
    max_seq_length: int = Field(128, ge=16, le=4096)
    doc_stride: int = Field(64, ge=8, description="QA: tokens shared by adjacent windows")
    max_answer_length: int = Field(30, ge=1, le=512, description="QA: longest answer, in tokens")
    max_question_tokens: int = Field(
        64, ge=1, le=512, description="QA: a longer question is cut to this many tokens"
    )
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    group_by_length: bool = Field(
        True,
        description="batch sequences of similar length together (less padding: 1.8x fewer "
        "tokens a QA epoch); false: plain shuffled batches",
    )
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = Field(42, ge=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    eval_every_steps: int | None = Field(None, ge=1, description="also evaluate every N steps")
    log_every_steps: int = Field(20, ge=1)
    eval_before_training: bool | None = Field(
        None,
        description="also evaluate (and checkpoint) the starting model; null: for "
        "text-classification, whose head starts at zero-shot quality",
    )
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="masked-lm: tokens masked")
    early_stopping_patience: int | None = Field(
        3, ge=1, description="stop after this many evaluations without a better metric; null: never"
    )
    label_template: str | None = Field(
        None,
        pattern=r"\{\}",
        description="classification: the sentence each label is put in to start the head at "
        "zero-shot quality ({} is the label); default the service's zero-shot template",
    )
    cv_folds: int | None = Field(
        None,
        ge=0,
        le=10,
        description="full classification method on small data (under 128 rows a label, no "
        "validation file): the folds that decide, out of fold, whether training beats the "
        "zero-shot start; where it does not, the run makes a head variant. null: 4; 0: off",
    )
    head_l2: float | None = Field(
        None,
        gt=0,
        description="head method: the pull toward the zero-shot start; null: chosen by validation",
    )


class Scaling(_Strict):
    num_workers: int = Field(1, ge=1, le=1024, description="data-parallel workers")
    use_gpu: bool = False
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    cpus_per_worker: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _fp16_needs_gpu(self) -> Scaling:
        # bf16 autocast runs on CPUs too (fast where they have AVX-512 BF16 or AMX); fp16
        # autocast with its loss scaling is a GPU's
        if self.mixed_precision == "fp16" and not self.use_gpu:
            raise ValueError("mixed_precision 'fp16' needs use_gpu: true (on CPUs: 'bf16')")
        return self


class _Spec(_Strict):
    """What every run has. `base_model` is a model id in the store (`base` by default)."""

    run_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    base_model: str = Field("base", min_length=1, max_length=128)
    train_file: Path
    validation_file: Path | None = None
    validation_split: float = Field(
        0.1, ge=0, lt=0.5, description="held out from train_file when no validation_file"
    )
    output_model_id: str | None = Field(None, description="id of the exported model")
    hyperparameters: Hyperparameters = Hyperparameters()
    scaling: Scaling = Scaling()
    max_failures: int = Field(2, ge=0, le=100, description="worker failures to retry")
    export: bool = Field(True, description="export the best checkpoint to ONNX at the end")

    @property
    def model_id(self) -> str:
        return self.output_model_id or self.run_id


class PretrainSpec(_Spec):
    """Masked-language modelling, continued from an encoder or from `scratch` (a new
    WordPiece vocabulary trained on the corpus, and random weights of `scratch_size`)."""

    task: Literal["masked-lm"] = "masked-lm"
    objective: Literal["mlm", "mlm+nsp"] = "mlm"
    scratch_size: ScratchSize = "mini"
    vocab_size: int = Field(8000, ge=100, le=250_000, description="scratch: WordPiece vocabulary")


class FinetuneSpec(_Spec):
    task: Literal["text-classification", "extractive-qa"]
    # full: every weight trains (an encoder of its own); head: a small head on the base's frozen
    # pooled output, trained in seconds, stored in kilobytes; auto: picked by the data's size
    method: Literal["auto", "full", "head"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _qa_defaults(cls, data: object) -> object:
        """QA reads a question and a slice of its context together: it needs longer windows
        than the general default (at 128 tokens, 42% of SQuAD's training windows held no
        answer; at 384, 1%)."""
        if isinstance(data, dict) and data.get("task") == "extractive-qa":
            hp = data.get("hyperparameters") or {}
            if isinstance(hp, dict):
                data = {**data, "hyperparameters": {**QA_DEFAULTS, **hp}}
        return data

    @model_validator(mode="after")
    def _needs_an_encoder(self) -> FinetuneSpec:
        hp = self.hyperparameters
        if self.task == "extractive-qa" and hp.doc_stride > hp.max_seq_length // 2:
            raise ValueError(
                f"hyperparameters.doc_stride ({hp.doc_stride}) must be at most half of "
                f"max_seq_length ({hp.max_seq_length}): windows would barely advance"
            )
        if self.task == "extractive-qa" and self.method == "head":
            raise ValueError(
                "method 'head' is for text-classification; extractive-qa trains in full"
            )
        if self.base_model == SCRATCH:
            raise ValueError(
                f"base_model 'scratch' works for task masked-lm only; {self.task} needs a "
                "pretrained encoder such as 'base'"
            )
        return self


TrainSpec = Annotated[PretrainSpec | FinetuneSpec, Field(discriminator="task")]
_ADAPTER: TypeAdapter[PretrainSpec | FinetuneSpec] = TypeAdapter(TrainSpec)


def load_spec(text: str) -> PretrainSpec | FinetuneSpec:
    """Parse a spec from JSON; a ValidationError names every field that is wrong."""
    return _ADAPTER.validate_json(text)


def build_spec(
    *,
    run_id: str,
    task: str,
    base_model: str,
    train_file: str | Path,
    validation_file: str | Path | None = None,
    output_model_id: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    scaling: dict[str, Any] | None = None,
    **top: Any,
) -> PretrainSpec | FinetuneSpec:
    """The one place a spec is put together (the job API and the CLI both call it); unset
    values stay unset, so the spec records only what was asked. Raises ValidationError."""
    spec: dict[str, Any] = {
        "run_id": run_id,
        "task": task,
        "base_model": base_model,
        "train_file": str(train_file),
        "hyperparameters": hyperparameters or {},
        "scaling": scaling or {},
        **{k: v for k, v in top.items() if v is not None},
    }
    if validation_file is not None:
        spec["validation_file"] = str(validation_file)
    if output_model_id is not None:
        spec["output_model_id"] = output_model_id
    return _ADAPTER.validate_python(spec)
