"""The SQuAD v1.1 metric (exact match and token F1, in percent) and the best answer of a
question over its windows. Pure functions."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np

from training.data import QAExample
from training.spans import best_spans

_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD v1.1's normalization: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], examples: Sequence[QAExample]) -> dict[str, float]:
    """Official SQuAD v1.1 EM and F1 (in percent): the best over each question's answers."""
    em = f1 = 0.0
    for ex in examples:
        pred = predictions.get(ex.id, "")
        golds = [text for text, _ in ex.answers] or [""]
        em += max(exact_match(pred, g) for g in golds)
        f1 += max(token_f1(pred, g) for g in golds)
    n = max(len(examples), 1)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}


def best_answers(
    examples: Sequence[QAExample],
    windows: Sequence[dict],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """The best answer text per question over all of its windows."""
    by_example: dict[int, list[int]] = collections.defaultdict(list)
    for w, window in enumerate(windows):
        by_example[window["example_index"]].append(w)
    predictions = {}
    for i, ex in enumerate(examples):
        candidates = []
        for w in by_example.get(i, []):
            candidates += best_spans(
                start_logits[w],
                end_logits[w],
                windows[w]["offsets"],
                n_best=n_best,
                max_answer_length=max_answer_length,
            )
        if candidates:
            _, s, e = max(candidates)
            predictions[ex.id] = ex.context[s:e]
        else:
            predictions[ex.id] = ""
    return predictions
