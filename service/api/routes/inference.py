"""POST /v1/classify and /v1/qa: validated here, the model resolved once by tenancy, the work
handed to the model replicas."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.deps import Caller, Ctx, ModelHeader, limit_texts, model_named, resolved
from service.errors import InvalidRequest, LimitExceeded
from service.inference.batching import approx_tokens
from service.inference.requests import ClassifyItem
from service.registry import check_endpoint, classify_route
from service.schemas.inference import (
    ClassifyManyResponse,
    ClassifyRequest,
    ClassifyResponse,
    QARequest,
    QAResponse,
)

router = APIRouter(tags=["inference"])


@router.post("/v1/classify", response_model=ClassifyResponse | ClassifyManyResponse)
async def classify(
    ctx: Ctx,
    who: Caller,
    request: Request,
    body: ClassifyRequest,
    serve_multiplexed_model_id: ModelHeader = None,
):
    """Classify texts: with a fine-tuned classifier's own labels, or zero-shot with a base
    encoder and the candidate `labels` given in the request; with a list of models, each of
    them (head-only variants of one base, and that base) from one encoder pass."""
    many = isinstance(body.model, list)
    ids = (
        body.model
        if isinstance(body.model, list)
        else [model_named(request, body.model, serve_multiplexed_model_id)]
    )
    models = [await ctx.tenancy.resolve(who, m) for m in ids]
    resolved(request, ids[0] if not many else "list")
    route = classify_route(ctx.registry, models, body.labels, many=many)
    texts = list(body.inputs)
    limit_texts(ctx.settings, texts, "inputs")
    most = ctx.settings.max_labels
    if body.labels is not None and len(body.labels) > most:
        raise LimitExceeded(
            f"labels: at most {most} labels (setting TUNESERVE_MAX_LABELS)", param="labels"
        )
    if body.template is not None and not any(m.zero_shot for m in models):
        raise InvalidRequest(
            "`template` is for zero-shot classification with a base encoder", param="template"
        )
    assert ctx.models is not None
    item = ClassifyItem(texts, body.labels, body.template, route.outputs)
    results = await ctx.models.call(route.target, "classify", item, approx_tokens(texts))
    # the replica's results are already the response's shape: skip re-validating them
    if many:
        data = [{"model": m, "results": r} for m, r in zip(ids, results, strict=True)]
        return JSONResponse({"object": "list", "data": data})
    return JSONResponse(
        {"model": ids[0], "results": results if route.outputs is None else results[0]}
    )


@router.post("/v1/qa", response_model=QAResponse)
async def qa(
    ctx: Ctx,
    who: Caller,
    request: Request,
    body: QARequest,
    serve_multiplexed_model_id: ModelHeader = None,
):
    """Answer questions from a context: a token span with a fine-tuned QA model, or the
    sentence of the context closest to the question with a base encoder."""
    model_id = model_named(request, body.model, serve_multiplexed_model_id)
    model = await ctx.tenancy.resolve(who, model_id)
    resolved(request, model_id)
    check_endpoint(model, "extractive-qa")
    pairs = body.pairs()
    if body.inputs is not None:
        limit_texts(ctx.settings, [t for pair in pairs for t in pair], "inputs", per=2)
    else:
        for name, value in (("question", body.question), ("context", body.context)):
            limit_texts(ctx.settings, [value or ""], name, single=True)
    assert ctx.models is not None
    tokens = approx_tokens([q + c for q, c in pairs])
    results = await ctx.models.call(model_id, "answer", pairs, tokens)
    return JSONResponse({"model": model_id, "results": results})
