"""/v1/fine_tuning/jobs: create a job from an uploaded file, follow it, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import Caller, Ctx
from service.jobs import store
from service.jobs.spec import JobDefaults
from service.schemas.fields import after as after_id
from service.schemas.jobs import CheckpointView, CreateJobRequest, EventView, JobView
from service.schemas.page import Page
from training.config import SCRATCH

router = APIRouter(tags=["jobs"])


@router.post("/v1/fine_tuning/jobs", response_model=JobView)
async def create_job(ctx: Ctx, who: Caller, body: CreateJobRequest) -> JobView:
    """Fine-tune (or pretrain, with `task: masked-lm`) from an uploaded file. The job is
    queued at once and runs as a Ray Job; follow it with its events."""
    base = None if body.model == SCRATCH else await ctx.tenancy.resolve(who, body.model)
    s = ctx.settings
    job = await ctx.db.call(
        store.create,
        body,
        base,
        defaults=JobDefaults(
            s.job_workers,
            s.job_cpus_per_worker,
            s.job_use_gpu,
            max_workers=s.max_job_workers,
            max_gpus=s.max_job_gpus,
            max_epochs=s.max_job_epochs,
        ),
        tenant=who.scope,
        max_unfinished=s.max_jobs_per_tenant if who.scope else None,
        max_models=s.max_tenant_models if who.scope else None,
    )
    return JobView.of(job)


@router.get("/v1/fine_tuning/jobs", response_model=Page[JobView])
async def list_jobs(
    ctx: Ctx,
    who: Caller,
    after: Annotated[
        str | None, after_id(r"^ftjob-[0-9a-f]{24}$", "ftjob-0123456789abcdef01234567")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Page[JobView]:
    rows, more = await ctx.db.call(store.listing, tenant=who.scope, after=after, limit=limit)
    return Page[JobView].of([JobView.of(j) for j in rows], more)


@router.get("/v1/fine_tuning/jobs/{job_id}", response_model=JobView)
async def get_job(ctx: Ctx, who: Caller, job_id: str) -> JobView:
    return JobView.of(await ctx.db.call(store.get, job_id, who.scope))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel", response_model=JobView)
async def cancel_job(ctx: Ctx, who: Caller, job_id: str) -> JobView:
    return JobView.of(await ctx.db.call(store.cancel, job_id, who.scope))


@router.get("/v1/fine_tuning/jobs/{job_id}/events", response_model=Page[EventView])
async def job_events(
    ctx: Ctx,
    who: Caller,
    job_id: str,
    after: Annotated[str | None, after_id(r"^ftevent-[0-9]{1,18}$", "ftevent-42")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> Page[EventView]:
    def read(db):
        return store.events(db, store.get(db, job_id, who.scope), after=after, limit=limit)

    rows, more = await ctx.db.call(read)
    return Page[EventView].of([EventView.of(e) for e in rows], more)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", response_model=Page[CheckpointView])
async def job_checkpoints(
    ctx: Ctx,
    who: Caller,
    job_id: str,
    after: Annotated[str | None, after_id(r"^ftckpt-[0-9]{1,18}$", "ftckpt-42")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Page[CheckpointView]:
    def read(db):
        job = store.get(db, job_id, who.scope)
        return job, *store.checkpoints(db, job, after=after, limit=limit)

    job, rows, more = await ctx.db.call(read)
    return Page[CheckpointView].of([CheckpointView.of(c, job) for c in rows], more)
