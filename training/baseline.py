"""What the base scores zero-shot on a job's validation data: the number a job's own scores
are reported beside, so that every job says what fine-tuning bought.

Zero-shot is what the service does with the base for a request that names labels (or asks a
question): classification compares each text with each label put into the zero-shot template;
QA answers with the sentence of the context closest to the question, scored as a span.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.artifacts import ZERO_SHOT_TEMPLATE
from training.data import ClassificationData, QAExample
from training.embed import Embedder
from training.heads import prototype_head, scores
from training.spans import split_sentences
from training.tasks.squad import squad_scores


def label_sentences(labels: Sequence[str], template: str | None = None) -> list[str]:
    return [(template or ZERO_SHOT_TEMPLATE).replace("{}", label) for label in labels]


def classification(
    embed: Embedder, data: ClassificationData, labels: list[str], template: str | None = None
) -> dict[str, float]:
    head = prototype_head(embed(label_sentences(labels, template)))
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[label] for label in data.labels])
    return scores(head, embed(data.texts), y, len(labels))


def qa(embed: Embedder, examples: Sequence[QAExample]) -> dict[str, float]:
    """SQuAD EM/F1 of answering each question with its context's closest sentence."""
    sentences = {ex.context: split_sentences(ex.context) for ex in examples}
    texts = list(dict.fromkeys(c[s:e] for c, spans in sentences.items() for s, e in spans))
    vectors = dict(zip(texts, embed(texts), strict=True))
    questions = embed([ex.question for ex in examples])
    predictions = {}
    for ex, q in zip(examples, questions, strict=True):
        spans = sentences[ex.context]
        sims = [float(q @ vectors[ex.context[s:e]]) for s, e in spans]
        s, e = spans[int(np.argmax(sims))]
        predictions[ex.id] = ex.context[s:e]
    return squad_scores(predictions, examples)
