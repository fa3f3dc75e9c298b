"""What /v1/embeddings asks of an encoder beyond its vectors: token ids read back as text, and
vectors shortened to the `dimensions` asked for."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from service.errors import InvalidRequest
from service.inference.requests import EmbedItem
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
