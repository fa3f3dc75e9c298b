"""What a request asks a model replica, as it travels from the ingress (light: the ingress
imports it without ONNX Runtime)."""

from __future__ import annotations

from typing import NamedTuple


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
