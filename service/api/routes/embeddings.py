"""POST /v1/embeddings, in OpenAI's shape (its `openai` client calls it unmodified): sentence
embeddings from `base` or any encoder, batched with the rest of the model's traffic."""

from __future__ import annotations

import base64
from typing import cast

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.deps import Caller, Ctx, limit_texts, resolved
from service.errors import InvalidRequest
from service.inference.batching import MAX_ITEM_TOKENS, approx_tokens
from service.inference.requests import EmbedItem
from service.registry import ResolvedModel, check_endpoint
from service.schemas.embeddings import EmbeddingsRequest, EmbeddingsResponse

router = APIRouter(tags=["inference"])


def _inputs(body: EmbeddingsRequest) -> list[str | list[int]]:
    """The request's inputs as a list: a text or one list of ids is a list of one."""
    x = body.input
    if isinstance(x, str):
        return [x]
    if x and isinstance(x[0], int):
        return [x]  # one token-id input
    return list(x)  # type: ignore[arg-type]  # texts, or token-id inputs


def check_dimensions(model: ResolvedModel, dimensions: int | None) -> None:
    """Refused here when the manifest says the size (the replica checks again otherwise)."""
    size = model.manifest.hidden_size
    if dimensions is not None and size and dimensions > size:
        raise InvalidRequest(
            f"dimensions: model {model.id!r} makes vectors of {size}; ask for at most {size}",
            param="dimensions",
        )


@router.post("/v1/embeddings", response_model=EmbeddingsResponse)
async def embeddings(ctx: Ctx, who: Caller, request: Request, body: EmbeddingsRequest):
    """Sentence embeddings (mean-pooled, unit length): the vectors the encoder uses for
    zero-shot classification and QA."""
    model = await ctx.tenancy.resolve(who, body.model)
    resolved(request, body.model)
    check_endpoint(model, "embeddings")
    check_dimensions(model, body.dimensions)
    inputs = _inputs(body)
    # the count covers token-id inputs too; the characters only texts
    limit_texts(ctx.settings, [x if isinstance(x, str) else "" for x in inputs], "input")
    tokens = sum(
        approx_tokens([x]) if isinstance(x, str) else min(len(x), MAX_ITEM_TOKENS) for x in inputs
    )
    assert ctx.models is not None
    item = EmbedItem(inputs, body.dimensions)
    out = cast(dict, await ctx.models.call(model.id, "embed", item, tokens))
    vectors: np.ndarray = out["vectors"]
    as_base64 = body.encoding_format == "base64"
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
            if as_base64
            else v.tolist(),
        }
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": out["tokens"], "total_tokens": out["tokens"]}
    return JSONResponse({"object": "list", "data": data, "model": body.model, "usage": usage})
