"""What a request asks a model replica, as it travels from the ingress (light: the ingress
imports it without ONNX Runtime)."""

from __future__ import annotations

from typing import NamedTuple

from service.errors import ServiceError


class ClassifyItem(NamedTuple):
    """One classification request."""

    texts: list[str]
    labels: list[str] | None = None  # zero-shot: the candidate labels
    template: str | None = None  # zero-shot: the sentence a label is put in
    # an encoder's requests only: what to answer with, in order, each a head variant's id or
    # None for zero-shot with `labels`; None: the model itself (one result list)
    outputs: list[str | None] | None = None
    # a fine-tuned classifier's (or head's) scores from its logits: softmax, sigmoid or none
    transform: str = "softmax"


QAItem = list[tuple[str, str]]  # one QA request: its (question, context) pairs


class EmbedItem(NamedTuple):
    """One embeddings request: texts, or token ids of the model's tokenizer, in order."""

    inputs: list[str | list[int]]
    dimensions: int | None = None


class FillMaskItem(NamedTuple):
    """One fill-mask request: texts with one or more [MASK] each."""

    texts: list[str]
    top_k: int = 5
    targets: list[str] | None = None  # score only these tokens


class Refused(NamedTuple):
    """A request the replica refused (a stale head, `dimensions` beyond the model), returned
    as its result rather than raised: a raise fails the whole batch, which then runs again
    call by call, so one careless request would cost everyone in its batch a pass."""

    status: int
    type: str
    message: str
    param: str | None

    @classmethod
    def of(cls, exc: ServiceError) -> Refused:
        return cls(exc.status, exc.type, exc.message, exc.param)

    def error(self) -> ServiceError:
        exc = ServiceError(self.message, param=self.param)
        exc.status, exc.type = self.status, self.type  # as the replica had it
        return exc
