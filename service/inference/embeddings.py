"""What /v1/embeddings asks of an encoder beyond its vectors: token ids read back as text, and
vectors shortened to the `dimensions` asked for; and a batch of requests answered."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from service.errors import InvalidRequest, ServiceError
from service.inference.requests import EmbedItem, Refused
from service.inference.session import Session
from training.artifacts import Manifest


def input_texts(item: EmbedItem, tokenizer: Tokenizer, manifest: Manifest) -> list[str]:
    """A request's texts, token ids decoded with the model's tokenizer; refused, naming the
    input, when `dimensions` is beyond the model or an id beyond its vocabulary."""
    size = manifest.hidden_size
    if item.dimensions is not None and size and item.dimensions > size:
        raise InvalidRequest(
            f"dimensions: the model makes vectors of {size}; ask for at most {size}",
            param="dimensions",
        )
    vocab = tokenizer.get_vocab_size()
    texts = []
    for index, x in enumerate(item.inputs):
        if isinstance(x, str):
            texts.append(x)
            continue
        bad = next((t for t in x if t >= vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"input[{index}]: token id {bad} is outside the model's vocabulary of {vocab}; "
                "token ids are this model's tokenizer's, not OpenAI's",
                param="input",
            )
        texts.append(tokenizer.decode(x, skip_special_tokens=True))
    return texts


def shortened(rows: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first `dimensions` values of each unit vector, scaled back to unit length."""
    if dimensions is None or dimensions >= rows.shape[1]:
        return rows
    rows = rows[:, :dimensions]
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def embed_requests(session: Session, requests: Sequence[EmbedItem]) -> list[dict | Refused]:
    """/v1/embeddings: one ONNX pass over the inputs of every request not refused; per
    request its unit vectors (shortened to `dimensions` and scaled back to unit length) and
    its tokens."""
    texts: list[list[str]] = []
    out: list[dict | Refused] = []
    for item in requests:
        try:
            texts.append(input_texts(item, session.tokenizer, session.manifest))
            out.append({})
        except ServiceError as exc:
            texts.append([])
            out.append(Refused.of(exc))
    flat = [t for ts in texts for t in ts]
    encodings = session.encode(flat) if flat else []
    vectors = session.run(encodings).astype(np.float32) if flat else None
    at = 0
    for i, (item, ts) in enumerate(zip(requests, texts, strict=True)):
        if isinstance(out[i], Refused):
            continue
        assert vectors is not None
        rows = vectors[at : at + len(ts)]
        at += len(ts)
        if item.dimensions is not None and item.dimensions > rows.shape[1]:
            size = rows.shape[1]  # a manifest without its hidden size
            out[i] = Refused.of(InvalidRequest(f"dimensions: at most {size}", param="dimensions"))
            continue
        rows = shortened(rows, item.dimensions)
        tokens = sum(len(e.ids) for e in encodings[at - len(ts) : at])
        out[i] = {"vectors": np.ascontiguousarray(rows, dtype=np.float32), "tokens": tokens}
    return out
