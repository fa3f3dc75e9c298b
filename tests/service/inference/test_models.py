"""The runtime's pure postprocessing, and the ONNX Runtime model class on the tiny store."""

import numpy as np
import pytest

from service.runtime import (
    DEFAULT_TEMPLATE,
    EncoderModel,
    classification_results,
    load_model,
    softmax,
    split_sentences,
    zero_shot_scores,
)
from training import artifacts


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


@pytest.fixture(scope="module")
def model(store) -> EncoderModel:
    m = load_model(artifacts.model_dir(store, "base"))
    assert isinstance(m, EncoderModel)
    return m


def test_batching_and_padding_do_not_change_embeddings(model):
    texts = [
        "the film",
        "where is the eiffel tower " * 6,
        "a",
        "refunds are issued within five days",
    ]
    # fp32: padding and batch neighbours change nothing beyond float noise
    fp32 = EncoderModel(model.folder, model.manifest.model_copy(update={"precision": "fp32"}))
    alone = np.stack([fp32.embed([t])[0] for t in texts])
    np.testing.assert_allclose(fp32.embed(texts), alone, atol=1e-4)
    # int8 quantizes activations with one scale per batch: neighbours move it slightly
    alone = np.stack([model.embed([t])[0] for t in texts])
    together = model.embed(texts)
    cosine = (
        (alone * together).sum(1) / np.linalg.norm(alone, axis=1) / np.linalg.norm(together, axis=1)
    )
    assert cosine.min() > 0.999, cosine


def test_sub_batches_respect_the_token_budget_and_keep_order(model):
    lengths = [5, 50, 7, 50, 6, 49]
    model.max_batch_tokens = 100
    try:
        groups = model._sub_batches(lengths)
    finally:
        model.max_batch_tokens = 4096
    assert sorted(i for g in groups for i in g) == list(range(6))
    for g in groups:
        assert max(lengths[i] for i in g) * len(g) <= 100 or len(g) == 1


def test_classify_uses_the_template_and_returns_every_label(model):
    out = model.classify(["the film was wonderful"], ["positive", "negative", "neutral"])
    assert out[0]["label"] in {"positive", "negative", "neutral"}
    assert set(out[0]["scores"]) == {"positive", "negative", "neutral"}
    assert f"{DEFAULT_TEMPLATE.replace('{}', 'positive')}" in model._label_cache


def test_answer_returns_a_sentence_of_the_context(model):
    context = "The great wall stretches across China. The eiffel tower stands in Paris. Mount fuji is tall."
    (r,) = model.answer([("where is the eiffel tower", context)])
    assert context[r["start"] : r["end"]] == r["answer"]
    assert r["answer"] in [context[s:e] for s, e in split_sentences(context)]
    assert 0.0 <= r["score"] <= 1.0


def test_unknown_task_is_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"id": "m", "task": "summarization"}')
    with pytest.raises(ValueError, match="summarization"):
        load_model(folder)
