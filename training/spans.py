"""Answer spans from a QA head's start and end logits: one pure function, used by evaluation
during training and by the serving runtime, so that both pick answers the same way. Light (no
torch): the service imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: Sequence,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> list[tuple[float, int, int]]:
    """Candidate (score, start char, end char) in one window, best first. `offsets[i]` is
    the (start, end) of token i in the context, or None for question and special tokens."""
    starts = np.argsort(start_logits)[::-1][:n_best]
    ends = np.argsort(end_logits)[::-1][:n_best]
    spans = []
    for s in starts:
        for e in ends:
            if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                continue
            if e < s or e - s + 1 > max_answer_length:
                continue
            spans.append((float(start_logits[s] + end_logits[e]), offsets[s][0], offsets[e][1]))
    return sorted(spans, reverse=True)
