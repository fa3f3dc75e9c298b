"""Answer spans from a QA head's start and end logits: one pure function, used by evaluation
during training and by the serving runtime, so that both pick answers the same way. Light (no
torch): the service imports it.
"""

from __future__ import annotations

import re
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


# Of a question, a QA window keeps at most this many tokens (as SQuAD's reference
# preprocessing does): the rest of the window is the context's.
DEFAULT_MAX_QUESTION_TOKENS = 64


def question_cap(max_seq_length: int, doc_stride: int, wanted: int) -> int:
    """The question tokens a window may hold: at most `wanted`, and few enough that the
    context still gets more than `doc_stride` tokens of it (else the fast tokenizer fails to
    cut the windows at all: [CLS] question [SEP] context [SEP] is 3 more)."""
    return max(1, min(wanted, max_seq_length - doc_stride - 4))


def cap_question(question: str, token_offsets: Sequence[tuple[int, int]], cap: int) -> str:
    """The question cut after its `cap`-th token (`token_offsets`: the character span of each
    of its tokens, without special tokens)."""
    if len(token_offsets) <= cap:
        return question
    return question[: token_offsets[cap - 1][1]]


# ---------------------------------------------------------------------------- sentences
# (the base encoder answers a question with the sentence of its context closest to it: at
# serving, and in the baseline a QA job reports)

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
