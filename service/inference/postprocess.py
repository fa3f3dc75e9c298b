"""Pure functions from model outputs to answers: softmax to labels and scores, zero-shot
similarity, the sentence of a context closest to a question."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.artifacts import SIMILARITY_SCALE
from training.spans import split_sentences  # noqa: F401  # re-exported: the postprocessing of base QA


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def scores(logits: np.ndarray, transform: str = "softmax") -> np.ndarray:
    """A classifier's scores from its logits: a softmax over the labels (the default), each
    label's sigmoid, or the logits as they are ("none")."""
    x = logits.astype(np.float64)
    if transform == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if transform == "none":
        return x
    return softmax(x)


def zero_shot_scores(text_emb: np.ndarray, label_emb: np.ndarray) -> np.ndarray:
    """[texts, labels] probabilities from normalized embeddings."""
    return softmax(SIMILARITY_SCALE * text_emb @ label_emb.T, axis=1)


def classification_results(probs: np.ndarray, labels: Sequence[str]) -> list[dict]:
    results = []
    for row in probs:
        best = int(row.argmax())
        results.append(
            {
                "label": labels[best],
                "score": float(row[best]),
                "scores": {label: float(p) for label, p in zip(labels, row, strict=True)},
            }
        )
    return results


def best_sentence(
    context: str, spans: list[tuple[int, int]], question_emb: np.ndarray, sent_emb: np.ndarray
) -> dict:
    probs = softmax(SIMILARITY_SCALE * sent_emb @ question_emb)
    best = int(probs.argmax())
    start, end = spans[best]
    return {"answer": context[start:end], "start": start, "end": end, "score": float(probs[best])}


def best_span(context: str, candidates: list[tuple[float, int, int]]) -> dict:
    """The best of a question's candidate spans (score, start, end) over all its windows,
    its score a softmax over the candidates; an empty answer when there is none."""
    if not candidates:
        return {"answer": "", "start": 0, "end": 0, "score": 0.0}
    scores = softmax(np.array([c[0] for c in candidates], dtype=np.float64))
    best = int(scores.argmax())
    _, start, end = candidates[best]
    return {"answer": context[start:end], "start": start, "end": end, "score": float(scores[best])}
