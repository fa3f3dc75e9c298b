"""Pure functions from model outputs to answers: softmax to labels and scores, zero-shot
similarity, the sentence of a context closest to a question."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# Cosine similarities are multiplied by this before the softmax. all-MiniLM-L6-v2 was trained
# with a contrastive loss at this scale (sentence-transformers' MultipleNegativesRankingLoss
# default), so scaled cosines are the logits the encoder learned to separate.
SIMILARITY_SCALE = 20.0

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
# a period after these does not end a sentence ("Dr. Smith", "e.g. Paris")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "no",
        "fig",
        "approx",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "gen",
        "gov",
    ]
)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _ends_sentence(text: str, dot: int) -> bool:
    if text[dot] != ".":
        return True
    word = text[:dot].rsplit(None, 1)[-1].lstrip("\"'([").lower() if text[:dot].strip() else ""
    return not (word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()))


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, whitespace trimmed, so that
    ``text[start:end]`` is each sentence. A text without sentence ends is one sentence."""
    spans = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if not _ends_sentence(text, m.start() - 1):
            continue
        spans.append((start, m.start() + len(m.group(0).rstrip())))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out or [(0, len(text))]


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
