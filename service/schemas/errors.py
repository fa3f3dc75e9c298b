"""The one error body of every 4xx and 5xx, as the schema declares it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    type: str = Field(..., examples=["validation_error"])
    message: str = Field(..., examples=["inputs: at most 64 inputs a request"])
    param: str | None = Field(None, examples=["inputs"])


class ErrorBody(BaseModel):
    """The one error body of every 4xx and 5xx."""

    error: ErrorDetail


# every route documents it, so that a client (and a schema fuzzer) can rely on its shape
ERROR_RESPONSES: dict = {
    "4XX": {"model": ErrorBody, "description": "the request cannot be served as it is"},
    "5XX": {"model": ErrorBody, "description": "the service cannot serve it now"},
}
