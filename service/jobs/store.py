"""Job rows, their events and checkpoints: what the API reads and writes. A job is written
`validating_files` and from then on moved along by the runner; the API only cancels."""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy import func, select, update

from service import files
from service.db import (
    Database,
    File,
    Job,
    JobCheckpoint,
    JobEvent,
    Model,
    changed,
    lock_tenant,
    now,
)
from service.errors import Conflict, NotFound, RateLimited
from service.jobs.spec import JobDefaults, plan
from service.paging import page
from service.registry import ResolvedModel
from service.schemas.jobs import TERMINAL, CreateJobRequest


def new_job_id() -> str:
    return "ftjob-" + secrets.token_hex(12)


def add_event(
    s,
    job_id: str,
    message: str,
    *,
    key: str,
    level: str = "info",
    type_: str = "message",
    data: dict | None = None,
) -> None:
    """Add an event unless one with this key exists (a log line Ray printed twice)."""
    exists = s.scalar(
        select(func.count())
        .select_from(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.key == key[:160])
    )
    if not exists:
        s.add(
            JobEvent(
                job_id=job_id,
                key=key[:160],
                created_at=now(),
                level=level,
                type=type_,
                message=message,
                data=data,
            )
        )


def create(
    db: Database,
    req: CreateJobRequest,
    base: ResolvedModel | None,
    *,
    defaults: JobDefaults,
    tenant: str | None = None,
    max_unfinished: int | None = None,
    max_models: int | None = None,
) -> Job:
    """Check a job request against its files and model, write it as `validating_files`.
    A tenant with `max_unfinished` jobs not finished yet, or with `max_models` models (its
    unfinished jobs counted as the models they will make), gets a 429: counted and written
    under the tenant's lock, so that parallel requests cannot all pass the count."""
    train = files.get(db, req.training_file, tenant)
    valid = files.get(db, req.validation_file, tenant) if req.validation_file else None
    job_id = new_job_id()
    p = plan(req, job_id, train, valid, base, defaults)
    job = Job(
        id=job_id,
        tenant=tenant,
        model=req.model,
        task=p.task,
        training_file=train.id,
        validation_file=valid.id if valid else None,
        hyperparameters=p.hyperparameters,
        spec=p.spec,
        suffix=req.suffix,
        seed=p.seed,
        metadata_=req.metadata,
        status="validating_files",
        output_model=p.output_model,
        created_at=now(),
        attempt=0,
        log_offset=0,
        settled=False,
    )
    with db.session() as s:
        if tenant is not None and max_unfinished is not None:
            lock_tenant(db, s, tenant)
            _below_limit(s, tenant, max_unfinished, max_models)
        s.add(job)
        add_event(s, job.id, f"Created {p.task} job {job.id} from {req.model}", key="created")
    return job


def _below_limit(s, tenant: str, max_unfinished: int, max_models: int | None) -> None:
    # one statement, so that a job finishing meanwhile (its model row written, its status
    # moved) is not counted twice
    unfinished, models = s.execute(
        select(
            select(func.count())
            .select_from(Job)
            .where(Job.tenant == tenant, Job.status.not_in(TERMINAL))
            .scalar_subquery(),
            select(func.count())
            .select_from(Model)
            .where(Model.tenant == tenant, Model.shared.is_(False))
            .scalar_subquery(),
        )
    ).one()
    if unfinished >= max_unfinished:
        raise RateLimited(
            f"tenant {tenant!r} has {unfinished} unfinished jobs, the most it may have "
            f"(setting TUNESERVE_MAX_JOBS_PER_TENANT); retry when one finishes",
            param="training_file",
        )
    if max_models is not None and models + unfinished >= max_models:
        raise RateLimited(
            f"tenant {tenant!r} keeps {models} models and has {unfinished} unfinished jobs; "
            f"it may keep {max_models} (setting TUNESERVE_MAX_TENANT_MODELS): delete one "
            "first (DELETE /v1/models/{id})",
        )


def get(db: Database, job_id: str, tenant: str | None = None) -> Job:
    with db.session() as s:
        job = s.scalar(select(Job).where(Job.id == job_id))
    if job is None or (tenant is not None and job.tenant != tenant):
        raise NotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id")
    return job


def listing(
    db: Database, *, tenant: str | None = None, after: str | None = None, limit: int = 20
) -> tuple[list[Job], bool]:
    q = select(Job)
    if tenant is not None:
        q = q.where(Job.tenant == tenant)
    with db.session() as s:
        return page(s, q, Job, limit, after)


def events(
    db: Database, job: Job, *, after: str | None = None, limit: int = 20
) -> tuple[list[JobEvent], bool]:
    """Newest first, as OpenAI lists them; `after` is the last event id of the previous page."""
    with db.session() as s:
        return page(s, select(JobEvent).where(JobEvent.job_id == job.id), JobEvent, limit, after)


def checkpoints(
    db: Database, job: Job, *, after: str | None = None, limit: int = 10
) -> tuple[list[JobCheckpoint], bool]:
    q = select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)
    with db.session() as s:
        return page(s, q, JobCheckpoint, limit, after)


def lineage(db: Database, model_id: str) -> dict | None:
    """Where a model a job made came from (None for a model imported or trained by hand)."""
    with db.session() as s:
        m = s.scalar(select(Model).where(Model.id == model_id))
    if m is None or m.job_id is None:
        return None
    return {
        "job_id": m.job_id,
        "base_model": m.base_model,
        "dataset_sha256": m.dataset_sha256,
        "precision": m.precision,
    }


def cancel(db: Database, job_id: str, tenant: str | None = None) -> Job:
    """Mark a job cancelled at once; the runner stops its Ray Job and discards its output."""
    job = get(db, job_id, tenant)
    with db.session() as s:
        done = changed(
            s,
            update(Job)
            .where(Job.id == job.id, Job.status.not_in(TERMINAL))
            .values(
                status="cancelled",
                finished_at=now(),
                settled=Job.ray_job_id.is_(None),  # never submitted: nothing to wind down
            ),
        )
        if done:
            add_event(s, job.id, "The job was cancelled", key="status:cancelled")
    if not done:
        job = get(db, job_id, tenant)
        raise Conflict(f"job {job_id} has already {job.status}; it cannot be cancelled")
    return get(db, job_id, tenant)


def register_model(s, job: Job, manifest) -> None:
    """The row of a job's model: owned by the job's tenant (shared when an admin's job made
    it), with where it came from. Written once."""
    if s.scalar(select(func.count()).select_from(Model).where(Model.id == job.output_model)):
        return
    s.add(
        Model(
            id=job.output_model,
            tenant=job.tenant,
            shared=job.tenant is None,
            task=manifest.task,
            base_model=job.model,
            job_id=job.id,
            dataset_sha256=s.scalar(select(File.sha256).where(File.id == job.training_file)),
            spec=job.spec,
            metrics=manifest.metrics,
            export_report=manifest.parity.model_dump() if manifest.parity else None,
            precision=manifest.precision,
            created_at=now(),
        )
    )


def refuse_if_in_use(db: Database, stored_model_id: str) -> None:
    """Conflict while an unfinished job starts from this model (it reads its weights)."""
    with db.session() as s:
        jobs = s.scalars(select(Job).where(Job.status.not_in(TERMINAL)))
        using = [j.id for j in jobs if (j.spec or {}).get("base_model") == stored_model_id]
    if using:
        raise Conflict(
            f"model {stored_model_id!r} is the base of unfinished job(s) {', '.join(using)}; "
            "cancel them or wait for them to end",
            param="model_id",
        )


def run_dir(home: Path, job_id: str) -> Path:
    return Path(home) / "runs" / job_id
