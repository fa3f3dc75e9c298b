"""A job request -> the training spec it runs: its task, its files checked against the task,
its base model checked, "auto" values resolved, the whole spec validated before a row is
written (an invalid field is a 422 naming it)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from pydantic import ValidationError

from service.db import File
from service.errors import InvalidRequest, LimitExceeded
from service.registry import ResolvedModel
from service.schemas.jobs import CreateJobRequest
from training.artifacts import validate_model_id
from training.config import (
    SCRATCH,
    TASK_OF_FORMAT,
    TASKS,
    Hyperparameters,
    auto_epochs,
    build_spec,
    default_learning_rate,
    pick_method,
)

# hyperparameters the request may give that are fields of the spec itself
SPEC_TOP_LEVEL = ("objective", "scratch_size", "vocab_size")


@dataclass(frozen=True)
class JobDefaults:
    """What a job gets when its request does not say, and the most it may ask (settings)."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    max_workers: int = 8
    max_gpus: int = 8
    max_epochs: float = 20


@dataclass(frozen=True)
class Plan:
    task: str
    spec: dict
    hyperparameters: dict  # OpenAI's three, resolved (no "auto")
    output_model: str
    seed: int


def _method(req: CreateJobRequest, task: str, train: File) -> dict:
    """The spec's `method` (fine-tunes only), "auto" resolved by rows a label."""
    if task != "text-classification" and req.training_method == "head":
        raise InvalidRequest(
            f"training_method 'head' is for text-classification; {task} trains every weight",
            param="training_method",
        )
    if task == "masked-lm":
        return {}
    rows_per_class = train.rows // max(len(train.labels or []), 1)
    return {"method": pick_method(task, req.training_method, rows_per_class)}


def plan(
    req: CreateJobRequest,
    job_id: str,
    train: File,
    valid: File | None,
    base: ResolvedModel | None,
    defaults: JobDefaults,
) -> Plan:
    """The job's spec, or InvalidRequest / a 422 naming what to change. `base` is None when
    the request starts from `scratch`."""
    task = req.task or TASK_OF_FORMAT[train.format]
    method = _method(req, task, train)
    _check_files(task, train, valid)
    base_id = _check_base(task, req.model, base)
    hp = req.requested_hyperparameters()
    n_epochs, batch_size, lr_mult = (
        hp.pop("n_epochs"),
        hp.pop("batch_size"),
        hp.pop("learning_rate_multiplier"),
    )
    defaults_hp = Hyperparameters()
    resolved = {
        "n_epochs": auto_epochs(task, train.rows) if n_epochs == "auto" else n_epochs,
        "batch_size": defaults_hp.batch_size if batch_size == "auto" else batch_size,
        "learning_rate_multiplier": 1.0 if lr_mult == "auto" else lr_mult,
    }
    scaling = _scaling(req, defaults)
    _within_bounds(resolved["n_epochs"], scaling, defaults)
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    output = _output_id(req, job_id)
    top = {k: hp.pop(k) for k in SPEC_TOP_LEVEL if k in hp} | method
    try:
        spec = build_spec(
            run_id=job_id,
            task=task,
            base_model=base_id,
            train_file=train.path,
            validation_file=valid.path if valid else None,
            output_model_id=output,
            hyperparameters={
                **hp,
                "epochs": resolved["n_epochs"],
                "batch_size": resolved["batch_size"],
                "learning_rate": default_learning_rate(task) * resolved["learning_rate_multiplier"],
                "seed": seed,
            },
            scaling=scaling,
            **top,
        )
    except ValidationError as exc:
        raise _invalid(exc) from exc
    return Plan(task, spec.model_dump(mode="json", exclude_unset=True), resolved, output, seed)


def _scaling(req: CreateJobRequest, defaults: JobDefaults) -> dict:
    asked = req.scaling
    return {
        "num_workers": (asked.num_workers if asked else None) or defaults.workers,
        "use_gpu": defaults.use_gpu if asked is None or asked.use_gpu is None else asked.use_gpu,
        "mixed_precision": asked.mixed_precision if asked else "no",
        "cpus_per_worker": defaults.cpus_per_worker,
    }


def _output_id(req: CreateJobRequest, job_id: str) -> str:
    """The id the job's model will have: ft:<base>:<suffix>:<8 characters of the job id>."""
    output = f"ft:{req.model}:{req.suffix or ''}:{job_id[-8:]}"
    try:
        return validate_model_id(output)
    except ValueError:
        raise InvalidRequest(
            f"the model would be named {output!r}, longer than a model id may be (128); "
            "give a shorter `suffix`",
            param="suffix",
        ) from None


def _within_bounds(epochs: float, scaling: dict, defaults: JobDefaults) -> None:
    """What one job may ask for: workers, GPUs and epochs (settings)."""
    workers = scaling["num_workers"]
    for value, most, param, setting in (
        (workers, defaults.max_workers, "scaling.num_workers", "TUNESERVE_MAX_JOB_WORKERS"),
        (
            workers if scaling["use_gpu"] else 0,
            defaults.max_gpus,
            "scaling.use_gpu",
            "TUNESERVE_MAX_JOB_GPUS",
        ),
        (epochs, defaults.max_epochs, "hyperparameters.n_epochs", "TUNESERVE_MAX_JOB_EPOCHS"),
    ):
        if value > most:
            raise LimitExceeded(
                f"{param}: at most {most} a job (setting {setting}); asked {value}", param=param
            )


def _check_files(task: str, train: File, valid: File | None) -> None:
    info = TASKS[task]
    for f, param in ((train, "training_file"), (valid, "validation_file")):
        if f is None:
            continue
        if f.format != info.file_format:
            raise InvalidRequest(
                f"{param} {f.id} holds {f.format} data; a {task} job needs {info.file_format} data",
                param=param,
            )
        if f.purpose != info.purpose:
            raise InvalidRequest(
                f"{param} {f.id} was uploaded with purpose {f.purpose!r}; a {task} job "
                f"takes files uploaded with purpose {info.purpose!r}",
                param=param,
            )
    if valid is not None and train.labels and valid.labels:
        unknown = sorted(set(valid.labels) - set(train.labels))
        if unknown:
            raise InvalidRequest(
                f"validation_file has labels the training file lacks: {unknown}",
                param="validation_file",
            )


def _check_base(task: str, requested: str, base: ResolvedModel | None) -> str:
    """The stored id of the model the job starts from."""
    if base is None:
        if task != "masked-lm":
            raise InvalidRequest(
                "only a masked-lm job starts from `scratch`; fine-tune an encoder", param="model"
            )
        return SCRATCH
    if base.manifest.task != "feature-extraction":
        raise InvalidRequest(
            f"model {requested!r} is a {base.manifest.task} model; start from an encoder "
            "(`base` or a masked-lm job's model)",
            param="model",
        )
    return base.manifest.id


def _invalid(exc: ValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    loc = [str(x) for x in err["loc"][1:]]  # the first is the task, the union's tag
    field = loc[-1] if loc else "spec"
    param = "hyperparameters." + field if loc[:1] == ["hyperparameters"] else field
    return InvalidRequest(f"{param}: {err['msg']}", param=param)
