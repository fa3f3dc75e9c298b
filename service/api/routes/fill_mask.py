"""POST /v1/fill-mask: the likeliest tokens for each [MASK], from an encoder that kept its
masked-LM head (a pretraining job's model), batched with the rest of its traffic."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.deps import Caller, Context, Ctx, limit_texts, resolved
from service.inference.batching import approx_tokens
from service.inference.requests import FillMaskItem
from service.registry import ResolvedModel, check_endpoint
from service.schemas.fill_mask import FillMaskRequest, FillMaskResponse

router = APIRouter(tags=["inference"])


async def fill(
    ctx: Context, model: ResolvedModel, texts: list[str], top_k: int, targets: list[str] | None
) -> list[list[list[dict]]]:
    """Per text, per mask, the top tokens (shared with the Hugging Face route)."""
    check_endpoint(model, "fill-mask")
    limit_texts(ctx.settings, texts, "inputs")
    assert ctx.models is not None
    item = FillMaskItem(texts, top_k, targets)
    return await ctx.models.call(model.id, "fill_mask", item, approx_tokens(texts))


@router.post("/v1/fill-mask", response_model=FillMaskResponse)
async def fill_mask(ctx: Ctx, who: Caller, request: Request, body: FillMaskRequest):
    """Fill each [MASK] of each text: the `top_k` likeliest tokens (or the `targets` only),
    with their probabilities and the text filled in."""
    model = await ctx.tenancy.resolve(who, body.model)
    resolved(request, body.model)
    results = await fill(ctx, model, list(body.inputs), body.top_k, body.targets)
    return JSONResponse({"model": body.model, "results": [{"masks": r} for r in results]})
