"""inference/postprocess.py: pure functions from outputs to answers."""

import numpy as np
import pytest

from service.inference.postprocess import (
    best_span,
    classification_results,
    softmax,
    split_sentences,
    zero_shot_scores,
)


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    p = softmax(np.array([[1000.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p[1], [0.5, 0.5])
    assert p[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "text,sentences",
    [
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("Dr. Smith lives in St. Louis. He is 40.", ["Dr. Smith lives in St. Louis.", "He is 40."]),
        ("no end at all", ["no end at all"]),
        ('He said "Stop." Then 3 cars came.', ['He said "Stop."', "Then 3 cars came."]),
        ("  padded.   Spaces.  ", ["padded.", "Spaces."]),
        ("J. R. R. Tolkien wrote it. It sold.", ["J. R. R. Tolkien wrote it.", "It sold."]),
    ],
)
def test_split_sentences(text, sentences):
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == sentences


def test_zero_shot_picks_the_closest_label():
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = np.array([[0.0, 1.0], [1.0, 0.0]])
    results = classification_results(zero_shot_scores(text, labels), ["b", "a"])
    assert [r["label"] for r in results] == ["a", "b"]
    assert results[0]["scores"]["a"] == results[0]["score"] > 0.99
    assert sum(results[0]["scores"].values()) == pytest.approx(1.0)


def test_best_span_softmaxes_over_all_candidates_and_answers_empty_without_any():
    context = "the eiffel tower stands in paris"
    r = best_span(context, [(1.0, 0, 3), (5.0, 27, 32)])
    assert r["answer"] == "paris" and (r["start"], r["end"]) == (27, 32)
    assert r["score"] == pytest.approx(1 / (1 + np.exp(-4.0)))
    assert best_span(context, []) == {"answer": "", "start": 0, "end": 0, "score": 0.0}
