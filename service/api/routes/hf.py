"""POST /hf/models/{model}: the Hugging Face Inference API's payloads and answers, so that
`huggingface_hub.InferenceClient(base_url=".../hf/models/<model>")` works unmodified for
text_classification, zero_shot_classification, question_answering, fill_mask and
feature_extraction.

The client posts every task to the one URL, so the task is read from the payload and the
model: `{"question", "context"}` inputs are QA; `candidate_labels` is zero-shot; otherwise a
fine-tuned classifier classifies, and an encoder embeds when the payload has no `parameters`
(feature extraction sends its parameters at the root; the other tasks send `parameters`,
empty or not) and fills masks when it has (a text with [MASK], or `targets`). Shapes follow
the client's parsers (huggingface_hub/inference/_client.py): text classification answers a
list of lists (the client takes element [0]), zero-shot a list of {label, score}, QA one
{answer, score, start, end}, fill-mask a list of {score, token, token_str, sequence} (a list
of such lists when the text has more masks, as the Inference API does), feature extraction
one vector a text. A parameter we cannot honour is refused by name.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from service.api.deps import Caller, Context, Ctx, limit_texts, resolved
from service.api.routes.embeddings import check_dimensions
from service.api.routes.fill_mask import fill
from service.errors import InvalidRequest, LimitExceeded, WrongTask
from service.inference.batching import approx_tokens
from service.inference.requests import ClassifyItem, EmbedItem
from service.registry import ResolvedModel, check_endpoint, classify_route
from service.schemas.fields import MIN_LABELS
from service.schemas.hf import HFParameters, HFRequest, HFResponse, QAInputs

router = APIRouter(tags=["hugging face"])
MASK = "[MASK]"
ModelPath = Annotated[str, Path(min_length=1, max_length=128, description="`base` or a model id")]


def _refuse(p: HFParameters, task: str, allowed: set[str]) -> None:
    for name in sorted(p.model_fields_set - allowed):
        if getattr(p, name) is not None:
            raise InvalidRequest(
                f"parameters.{name} is not served for {task} (it takes {sorted(allowed) or 'none'})",
                param=f"parameters.{name}",
            )


def _ranked(scores: dict[str, float], top_k: int | None) -> list[dict]:
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return [{"label": k, "score": v} for k, v in ranked[:top_k]]


@router.post("/hf/models/{model_id:path}", response_model=HFResponse)
async def hf_inference(
    ctx: Ctx, who: Caller, request: Request, model_id: ModelPath, body: HFRequest
):
    """The Hugging Face Inference API for one model: text classification, zero-shot
    classification, question answering or feature extraction, by payload and model."""
    model = await ctx.tenancy.resolve(who, model_id)
    resolved(request, model_id)
    p = body.parameters or HFParameters()
    if isinstance(body.inputs, QAInputs):
        return await _question_answering(ctx, model, body.inputs, p)
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    limit_texts(ctx.settings, texts, "inputs")
    if p.candidate_labels is not None:
        return await _zero_shot(ctx, model, texts, p, single=isinstance(body.inputs, str))
    if not model.zero_shot:
        if p.targets is not None:
            raise WrongTask(f"fill-mask is for encoders; {model_id!r} is not one", param="model")
        return await _text_classification(ctx, model, texts, p)
    if body.parameters is None:  # feature extraction sends its parameters at the root
        return await _feature_extraction(ctx, model, texts, body)
    if p.targets is not None or any(MASK in t for t in texts):
        return await _fill_mask(ctx, model, texts, p, single=isinstance(body.inputs, str))
    return await _text_classification(ctx, model, texts, p)


async def _fill_mask(ctx: Context, model: ResolvedModel, texts, p: HFParameters, *, single: bool):
    _refuse(p, "fill-mask", {"top_k", "targets"})
    results = await fill(ctx, model, texts, p.top_k or 5, p.targets)
    # per text: its mask's candidates, or a list of them a mask when it has more
    shaped = [masks[0] if len(masks) == 1 else masks for masks in results]
    return JSONResponse(shaped[0] if single else shaped)


async def _text_classification(ctx: Context, model: ResolvedModel, texts, p: HFParameters):
    _refuse(p, "text-classification", {"top_k", "function_to_apply"})
    if model.zero_shot:
        raise InvalidRequest(
            f"model {model.id!r} is a base encoder: use zero_shot_classification with "
            "candidate_labels",
            param="model",
        )
    route = classify_route(ctx.registry, [model], None, many=False)
    item = ClassifyItem(texts, None, None, route.outputs, p.function_to_apply or "softmax")
    assert ctx.models is not None
    results = await ctx.models.call(route.target, "classify", item, approx_tokens(texts))
    if route.outputs is not None:
        results = results[0]
    return JSONResponse([_ranked(r["scores"], p.top_k) for r in results])


async def _zero_shot(ctx: Context, model: ResolvedModel, texts, p: HFParameters, *, single: bool):
    _refuse(
        p, "zero-shot-classification", {"candidate_labels", "multi_label", "hypothesis_template"}
    )
    if p.multi_label:
        raise InvalidRequest(
            "parameters.multi_label is not served: zero-shot scores are a softmax over the "
            "candidate labels, which compete; ask one label against its opposite instead",
            param="parameters.multi_label",
        )
    labels = cast(list[str], p.candidate_labels)
    most = ctx.settings.max_labels
    if not MIN_LABELS <= len(labels) <= most or len(set(labels)) < len(labels):
        raise LimitExceeded(
            f"parameters.candidate_labels: {MIN_LABELS}-{most} distinct labels "
            "(setting TUNESERVE_MAX_LABELS)",
            param="parameters.candidate_labels",
        )
    check_endpoint(model, "text-classification", labels)
    item = ClassifyItem(texts, labels, p.hypothesis_template)
    assert ctx.models is not None
    results = await ctx.models.call(model.id, "classify", item, approx_tokens(texts))
    ranked = [_ranked(r["scores"], None) for r in results]
    return JSONResponse(ranked[0] if single else ranked)


async def _question_answering(ctx: Context, model: ResolvedModel, qa: QAInputs, p: HFParameters):
    _refuse(p, "question-answering", {"top_k", "handle_impossible_answer", "align_to_words"})
    if (p.top_k or 1) > 1:
        raise InvalidRequest(
            "parameters.top_k: one answer a question is served", param="parameters.top_k"
        )
    if p.handle_impossible_answer:
        raise InvalidRequest(
            "parameters.handle_impossible_answer is not served: the models always answer with "
            "a span of the context (SQuAD v1.1)",
            param="parameters.handle_impossible_answer",
        )
    check_endpoint(model, "extractive-qa")
    for name, value in (("inputs.question", qa.question), ("inputs.context", qa.context)):
        limit_texts(ctx.settings, [value], name, single=True)
    assert ctx.models is not None
    pairs = [(qa.question, qa.context)]
    (result,) = await ctx.models.call(model.id, "answer", pairs, approx_tokens([qa.context]))
    return JSONResponse(result)


async def _feature_extraction(ctx: Context, model: ResolvedModel, texts, body: HFRequest):
    _refuse(body.parameters or HFParameters(), "feature-extraction", set())
    refused = {
        "normalize": body.normalize is False and "vectors are always unit length",
        "truncate": body.truncate is False and "texts are cut to the model's max length",
        "truncation_direction": (body.truncation_direction or "right").lower() != "right"
        and "texts are cut on the right",
        "prompt_name": body.prompt_name is not None and "the models have no named prompts",
        "encoding_format": body.encoding_format == "base64"
        and "base64 is served by /v1/embeddings",
    }
    for name, why in refused.items():
        if why:
            raise InvalidRequest(f"{name}: not served ({why})", param=name)
    check_endpoint(model, "embeddings")
    check_dimensions(model, body.dimensions)
    assert ctx.models is not None
    item = EmbedItem(cast(list[str | list[int]], texts), body.dimensions)
    out = cast(dict, await ctx.models.call(model.id, "embed", item, approx_tokens(texts)))
    return JSONResponse(out["vectors"].tolist())
