"""/v1/embeddings, in OpenAI's shape: what its clients send and read."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from service.schemas.fields import MAX_INPUTS, ModelId, Request, Text

MAX_TOKEN_IDS = 8192  # ids in one token-id input; the model reads at most its max length
TokenIds = Annotated[
    list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_TOKEN_IDS)
]


class EmbeddingsRequest(Request):
    model: ModelId = Field(description="`base` or an encoder (a pretraining job's model)")
    input: (
        Text
        | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)]
    ) = Field(
        description="a text, a list of texts, or token ids of the model's own tokenizer (one "
        "list, or a list of lists); ids are decoded with that tokenizer and embedded as text",
        examples=["The food was delicious and the waiter was friendly."],
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`base64`: the little-endian float32 bytes of each vector"
    )
    dimensions: int | None = Field(
        None,
        ge=1,
        description="keep the first `dimensions` values of each vector and scale it back to "
        "unit length; at most the model's size. The bundled encoder was not trained for "
        "shortened vectors: expect similarity to degrade as they get shorter",
    )
    user: str | None = Field(None, max_length=256, description="accepted and ignored (OpenAI's)")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
