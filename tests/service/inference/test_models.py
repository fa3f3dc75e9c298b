"""inference/models.py: the model classes on the tiny store, through real ONNX Runtime."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from service.inference.models import DEFAULT_TEMPLATE, EncoderModel, QAModel, load_model
from service.inference.postprocess import split_sentences
from service.inference.session import Session
from training import artifacts
from training.artifacts import Manifest


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
    s = model.session
    fp32 = EncoderModel(Session(s.folder, s.manifest.model_copy(update={"precision": "fp32"})))
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
    model.session.max_batch_tokens = 100
    try:
        groups = model.session.sub_batches(lengths)
    finally:
        model.session.max_batch_tokens = 4096
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


class _Windows:
    """A stand-in for a QA model's session: the real tokenizer, and start/end logits that
    point at one word wherever a window holds it."""

    def __init__(self, tokenizer_dir, manifest: Manifest, word: str):
        self.manifest, self.word = manifest, word
        self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        self.tokenizer.no_padding()

    def run_rows(self, windows):
        rows = []
        for w in windows:
            start, end = np.zeros(len(w.ids)), np.zeros(len(w.ids))
            for t, (token, sid) in enumerate(zip(w.tokens, w.sequence_ids, strict=True)):
                if sid == 1 and token == self.word:
                    start[t] = end[t] = 10.0
            rows.append([start, end])
        return rows


def test_a_long_context_is_read_in_windows_and_the_answer_mapped_back(store):
    """The answer is only in the last window: a model that read one window would miss it."""
    manifest = Manifest(id="qa", task="extractive-qa", max_seq_length=32, doc_stride=8)
    qa = QAModel(_Windows(artifacts.model_dir(store, "base") / "tokenizer", manifest, "japan"))  # type: ignore[arg-type]
    context = (
        " ".join(["refunds are issued within five working days ."] * 6)
        + " mount fuji is in japan ."
    )
    windows, owners = qa.windows([("where is mount fuji", context)])
    assert len(windows) >= 3 and set(owners) == {0}
    assert "japan" not in windows[0].tokens and "japan" in windows[-1].tokens
    (r,) = qa.answer([("where is mount fuji", context)])
    assert r["answer"] == "japan" and context[r["start"] : r["end"]] == "japan"
    assert r["start"] == context.rindex("japan") and r["score"] > 0.5


def test_a_question_longer_than_the_window_is_cut_not_a_crash(store):
    """The fast tokenizer panics (a BaseException) when a question leaves the context no room
    in a window: the runtime cuts the question to what a window holds first."""
    manifest = Manifest(id="qa", task="extractive-qa", max_seq_length=32, doc_stride=8)
    tokenizer_dir = artifacts.model_dir(store, "base") / "tokenizer"
    qa = QAModel(_Windows(tokenizer_dir, manifest, "japan"))  # type: ignore[arg-type]
    assert qa.question_cap == 32 - 8 - 4  # a window keeps the context more than the stride
    question = "where is mount fuji " * 300
    context = "mount fuji is in japan ."
    windows, _ = qa.windows([(question, context)])
    assert all(len(w.ids) <= 32 for w in windows)
    (r,) = qa.answer([(question, context)])
    assert r["answer"] == "japan"
