"""/v1/fill-mask: requests and responses."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from service.schemas.fields import MAX_LABELS, Label, ModelId, Request
from service.schemas.inference import Texts

MAX_TOP_K = 50


class FillMaskRequest(Request):
    model: ModelId = Field(
        description="an encoder with a masked-LM head: a pretraining job's model",
        examples=["ft:base:whaling:0f3a9c21"],
    )
    inputs: Texts = Field(
        description="a text, or a list of texts, each with 1-8 [MASK]",
        examples=[["Call me [MASK]."]],
    )
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="tokens a mask")
    targets: (
        Annotated[
            list[Label],
            Field(min_length=1, max_length=MAX_LABELS, json_schema_extra={"uniqueItems": True}),
        ]
        | None
    ) = Field(
        None,
        description="rank only these tokens (each one token of the model's vocabulary); "
        "scores stay probabilities over the whole vocabulary",
    )

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_text(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("targets")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) < len(v):
            raise ValueError("targets must be unique")
        return v


class Filled(BaseModel):
    score: float = Field(description="the token's probability at the mask")
    token: int = Field(description="its id in the model's vocabulary")
    token_str: str
    sequence: str = Field(description="the text with this mask filled by the token")


class FillMaskResult(BaseModel):
    masks: list[list[Filled]] = Field(description="per [MASK], in order: the top tokens")


class FillMaskResponse(BaseModel):
    model: str
    results: list[FillMaskResult] = Field(description="one per input text")
