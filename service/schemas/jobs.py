"""/v1/fine_tuning/jobs: shaped like OpenAI's fine-tuning API, so its SDK works unmodified
against ours; `task`, `scaling` and the training engine's hyperparameters are our own."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.db import Job, JobCheckpoint, JobEvent
from service.schemas.fields import ModelId, Request

TERMINAL = ("succeeded", "failed", "cancelled")
PATHS = ("train_file", "validation_file")  # a spec's server paths, never shown
Auto = Literal["auto"]
JobTask = Literal["text-classification", "extractive-qa", "masked-lm"]


class JobHyperparameters(BaseModel):
    """OpenAI's three (each a number or "auto"), plus any field of training's Hyperparameters
    (max_seq_length, warmup_ratio, doc_stride, ...), checked when the job is created."""

    model_config = ConfigDict(extra="allow")

    n_epochs: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=4096)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"


class JobScaling(Request):
    num_workers: int | None = Field(None, ge=1, le=1024)
    # unset: the service's default (TUNESERVE_JOB_USE_GPU)
    use_gpu: bool | None = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"


class JobSupervised(BaseModel):
    model_config = ConfigDict(extra="allow")
    hyperparameters: JobHyperparameters | None = None


class JobMethod(BaseModel):
    """OpenAI's newer form: {"type": "supervised", "supervised": {"hyperparameters": {...}}}."""

    model_config = ConfigDict(extra="allow")
    type: Literal["supervised"] = "supervised"
    supervised: JobSupervised | None = None


FileId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class CreateJobRequest(Request):
    model: ModelId = Field(
        description="the encoder to start from: `base`, a masked-lm job's model, or `scratch` "
        "(masked-lm only)",
        examples=["base"],
    )
    training_file: FileId
    validation_file: FileId | None = None
    task: JobTask | None = Field(
        None, description="inferred from the training file's format when absent"
    )
    hyperparameters: JobHyperparameters | None = None
    method: JobMethod | None = None
    suffix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,40}$")] | None = Field(
        None, description="part of the model's id: ft:<base>:<suffix>:<short id>"
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, Annotated[str, StringConstraints(max_length=512)]] | None = Field(
        None, max_length=16
    )
    scaling: JobScaling | None = Field(None, description="workers and GPUs for this job")
    training_method: Literal["auto", "full", "head"] = Field(
        "auto",
        description="text-classification: `head` trains a small head on the frozen base "
        "(seconds; a variant of kilobytes), `full` trains every weight; `auto` picks `head` "
        "below HEAD_BELOW_ROWS_PER_CLASS training rows a label. The job records its choice.",
    )
    integrations: list | None = Field(None, description="accepted for compatibility; ignored")

    def requested_hyperparameters(self) -> dict:
        if self.hyperparameters is not None:
            return self.hyperparameters.model_dump()
        supervised = self.method.supervised if self.method else None
        given = supervised.hyperparameters if supervised else None
        return (given or JobHyperparameters()).model_dump()


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobReport(BaseModel):
    """What fine-tuning bought: the job's model and its base zero-shot, scored on the same
    validation data (accuracy/macro_f1 as fractions, QA f1/exact_match in percent)."""

    method: Literal["full", "head"] | None = Field(description="how it was trained")
    metrics: dict[str, float] = Field(description="the exported model's validation scores")
    baseline: dict[str, float] = Field(description="the base model's zero-shot scores")
    improvement: dict[str, float] = Field(description="metrics - baseline, per shared score")


class JobView(BaseModel):
    """The OpenAI fine-tuning job object, plus `task`, `attempt`, `spec`, `training_method`
    and `report`."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    integrations: list | None = None
    metadata: dict[str, str] | None
    estimated_finish: int | None
    suffix: str | None
    task: str
    attempt: int
    spec: dict[str, Any]
    training_method: Literal["full", "head"] | None = Field(
        None, description="text-classification: the method it trains by (`auto` resolved)"
    )
    report: JobReport | None = Field(None, description="once it succeeded")

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls.model_validate(
            {
                "id": job.id,
                "created_at": job.created_at,
                "error": job.error,
                "fine_tuned_model": job.fine_tuned_model,
                "finished_at": job.finished_at,
                "hyperparameters": job.hyperparameters,
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": job.hyperparameters},
                },
                "model": job.model,
                "organization_id": job.tenant or "local",
                "seed": job.seed,
                "status": job.status,
                "trained_tokens": job.trained_tokens,
                "training_file": job.training_file,
                "validation_file": job.validation_file,
                "metadata": job.metadata_,
                "estimated_finish": job.estimated_finish if job.status not in TERMINAL else None,
                "suffix": job.suffix,
                "task": job.task,
                "attempt": job.attempt,
                # what it runs, less where the files lie on the server (`training_file` names them)
                "spec": {k: v for k, v in job.spec.items() if k not in PATHS},
                "training_method": job.spec.get("method"),
                "report": job.report,
            }
        )


class EventView(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None

    @classmethod
    def of(cls, e: JobEvent) -> EventView:
        return cls.model_validate(
            {
                "id": f"ftevent-{e.seq}",
                "created_at": e.created_at,
                "level": e.level,
                "message": e.message,
                "type": e.type,
                "data": e.data,
            }
        )


class CheckpointView(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int

    @classmethod
    def of(cls, c: JobCheckpoint, job: Job) -> CheckpointView:
        return cls(
            id=f"ftckpt-{c.seq}",
            created_at=c.created_at,
            fine_tuned_model_checkpoint=f"{job.output_model}:ckpt-step-{c.step}",
            fine_tuning_job_id=job.id,
            metrics=c.metrics,
            step_number=c.step,
        )
