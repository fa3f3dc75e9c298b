"""GET /v1/models and /v1/models/{id}: the models the caller may use."""

from __future__ import annotations

import dataclasses
import logging

from fastapi import APIRouter

from service.api.deps import Caller, Ctx
from service.inference.precision import choose
from service.jobs import store
from service.registry import ENDPOINTS
from service.schemas.models import ModelDeleted, ModelList, ModelView
from service.settings import Settings
from training.artifacts import Manifest

router = APIRouter(tags=["models"])
log = logging.getLogger("ray.serve")
# what a manifest's metrics record besides the validation scores
_RUN_FACTS = ("step", "epoch", "workers", "resumed_from_step")


def serving(settings: Settings, manifest: Manifest) -> dict | None:
    """What a model replica serves for this model on the hardware the replicas are given
    (the rule the replica itself applies: inference/precision.py); a head-only variant
    rides on its base's graph."""
    if manifest.head_only:
        return None
    gpu = settings.model_replica_gpus > 0 and settings.device != "cpu"
    chosen = choose(
        manifest,
        "cuda" if gpu else "cpu",
        budget=settings.precision_budget,
        min_cosine=settings.min_encoder_cosine,
    )
    return dataclasses.asdict(chosen)


def view(manifest: Manifest, settings: Settings | None = None) -> ModelView:
    return ModelView.model_validate(
        {
            "id": manifest.id,
            "task": manifest.task,
            "endpoints": [
                e
                for e in ENDPOINTS.get(manifest.task, [])
                if e != "fill-mask" or manifest.fill_mask
            ],
            "zero_shot": manifest.task == "feature-extraction",
            "base": manifest.base,
            "labels": manifest.labels,
            "precision": manifest.precision,
            "metrics": {k: v for k, v in manifest.metrics.items() if k not in _RUN_FACTS},
            "baseline": manifest.baseline,
            "method": manifest.method if manifest.task == "text-classification" else None,
            "head_only": manifest.head_only,
            "created_at": manifest.created_at,
            "serving": serving(settings, manifest) if settings else None,
            "export": manifest.parity.model_dump() if manifest.parity else None,
        }
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(ctx: Ctx, who: Caller) -> ModelList:
    models = await ctx.tenancy.listing(who)
    return ModelList(
        data=[view(m.manifest.model_copy(update={"id": m.id}), ctx.settings) for m in models]
    )


@router.get("/v1/models/{model_id}", response_model=ModelView)
async def get_model(ctx: Ctx, who: Caller, model_id: str) -> ModelView:
    model = await ctx.tenancy.resolve(who, model_id)
    shown = view(model.manifest.model_copy(update={"id": model_id}), ctx.settings)
    try:
        shown.job = await ctx.db.call(store.lineage, model.manifest.id)
    except Exception as exc:  # the model serves without its record; say nothing wrong
        log.warning("no lineage for %s: %s", model_id, type(exc).__name__)
    return shown


@router.delete("/v1/models/{model_id}", response_model=ModelDeleted)
async def delete_model(ctx: Ctx, who: Caller, model_id: str) -> ModelDeleted:
    """Delete a model: a tenant its own fine-tuned models, the admin any but the base. A
    model an unfinished job starts from cannot be deleted (409) until the job ends."""
    model = await ctx.tenancy.resolve(who, model_id)
    await ctx.tenancy.check_may_delete(who, model)
    await ctx.db.call(store.refuse_if_in_use, model.manifest.id)
    ctx.registry.check_deletable(model)  # before its row goes: a refusal changes nothing
    await ctx.tenancy.forget(who, model)
    ctx.registry.delete(model)
    return ModelDeleted(id=model_id)
