"""The head method (training/heads.py) and the zero-shot start of both methods: the tiny base,
real ONNX Runtime, no Ray."""

import numpy as np
import torch

from service.inference.models import EncoderModel
from service.inference.session import Session
from training import artifacts
from training.baseline import label_sentences
from training.config import FinetuneSpec
from training.data import ClassificationData
from training.embed import Embedder
from training.heads import (
    Head,
    choose_and_fit,
    cross_validate,
    fit,
    folds,
    one_standard_error,
    prototype_head,
    scores,
)
from training.prepare import MIN_VALIDATION_ROWS, stratified_split
from training.tasks import load_tokenizer
from training.tasks.classification import ClassificationTask

TEXTS = ["the film was wonderful", "a dull tedious mess", "where is the eiffel tower", "sad"]
LABELS = ["negative", "positive", "question"]


def _base(store):
    folder = artifacts.model_dir(store, "base")
    return folder, artifacts.read_manifest(folder)


def test_a_prototype_head_predicts_exactly_what_zero_shot_serves(store):
    served = EncoderModel(Session(*_base(store))).classify(TEXTS, LABELS)
    embed = Embedder(store, "base")
    head = prototype_head(embed(label_sentences(LABELS)))
    logits = head.logits(embed(TEXTS)).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for row, result in zip(probs, served, strict=True):
        assert LABELS[int(row.argmax())] == result["label"]
        np.testing.assert_allclose(row, [result["scores"][x] for x in LABELS], atol=1e-5)


def test_the_full_models_step_zero_is_zero_shot(store):
    """A full fine-tune starts with its head at the label sentences: before a step, its
    predictions are base zero-shot's (through the fp32 graph: the same weights)."""
    folder, manifest = _base(store)
    spec = FinetuneSpec(run_id="x", task="text-classification", train_file="unused.jsonl")
    tok = load_tokenizer(folder / "tokenizer", 128)
    model = ClassificationTask(spec, tok, LABELS).build_model(folder / "hf").eval()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits.numpy()
    fp32 = EncoderModel(Session(folder, manifest.model_copy(update={"precision": "fp32"})))
    served = fp32.classify(TEXTS, LABELS)
    probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    for row, result in zip(probs, served, strict=True):
        assert LABELS[int(row.argmax())] == result["label"]
        np.testing.assert_allclose(row, [result["scores"][x] for x in LABELS], atol=1e-4)


def _blobs(n_per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = np.eye(3, 8) * 3
    x = np.concatenate([c + rng.normal(size=(n_per_class, 8)) for c in centers])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(3), n_per_class)


def test_a_strong_pull_keeps_the_start_and_a_weak_one_learns():
    x, y = _blobs(30)
    wrong = Head(np.roll(np.eye(3, 8), 1, axis=0).astype(np.float32) * 20, np.zeros(3))
    assert scores(wrong, x, y, 3)["accuracy"] < 0.2  # a start that is wrong on every class
    kept = fit(x, y, wrong, l2=1e3)
    assert np.abs(kept.weight - wrong.weight).max() < 0.5
    learnt = fit(x, y, wrong, l2=1e-4)
    assert scores(learnt, x, y, 3)["accuracy"] > 0.9


def test_cross_validation_picks_the_pull_that_generalizes_and_folds_are_stratified():
    x, y = _blobs(10)
    for held in folds(y, seed=1):
        assert sorted(np.bincount(y[held], minlength=3)) == [2, 2, 2]  # 5 folds of 10 a class
    wrong = Head(np.roll(np.eye(3, 8), 1, axis=0).astype(np.float32) * 20, np.zeros(3))
    l2, table = cross_validate(x, y, wrong, (1e-3, 1e3), seed=0)
    assert (
        l2 == 1e-3 and table[1e-3]["accuracy"] > table[1e3]["accuracy"] >= table[None]["accuracy"]
    )
    # a start already right: no trained head beats it by more than a row, so it is kept
    right = prototype_head(np.eye(3, 8, dtype=np.float32))
    chosen = choose_and_fit(x, y, right, (1e-3, 1e3), seed=0)
    assert chosen.l2 is None and chosen.head is right and chosen.table[None]["accuracy"] == 1.0
    one_row = np.array([0, 0, 1, 2, 2])
    assert folds(one_row, 0) == []
    assert cross_validate(x[:5], one_row, right, (1.0,), 0) == (None, {})


def test_the_strongest_pull_within_one_standard_error_of_the_best_is_chosen():
    rng = np.random.default_rng(0)
    best = rng.uniform(0.2, 0.8, size=16)
    # 1e-3 is best on average; 1e-1 is worse by less than its paired error (a noisy gap of
    # 0.01 on rows that disagree by +-0.2), 1.0 worse on every row by far more
    near = best + 0.01 + np.tile([0.2, -0.2], 8)
    losses = {1e-3: best, 1e-1: near, 1.0: best + 0.3}
    assert near.mean() > best.mean() and min(losses, key=lambda k: losses[k].mean()) == 1e-3
    assert one_standard_error(losses) == 1e-1
    # the same gap on every row is no noise: the best is chosen
    assert one_standard_error({1e-3: best, 1e-1: best + 0.01, 1.0: best + 0.3}) == 1e-3
    assert one_standard_error({1.0: best}) == 1.0


def test_the_held_out_split_is_stratified_and_never_tiny():
    labels = ["a"] * 90 + ["b"] * 10 + ["c"] * 1
    data = ClassificationData([str(i) for i in range(len(labels))], labels)
    kept, held = stratified_split(data, 0.1, seed=0)
    assert min(MIN_VALIDATION_ROWS, 101 // 4) == 25  # not 10%: 10 rows
    assert 24 <= len(held.labels) <= 26  # each label's share rounded
    assert held.labels.count("b") in (2, 3) and "c" not in held.labels  # never a label's last
    assert sorted(kept.texts + held.texts, key=int) == data.texts
    assert set(kept.labels) == {"a", "b", "c"}


def test_on_few_rows_the_choice_itself_is_cross_validated():
    # a start wrong on every class: the choice trains, and its nested score says how well
    x, y = _blobs(8)
    wrong = Head(np.roll(np.eye(3, 8), 1, axis=0).astype(np.float32) * 20, np.zeros(3))
    chosen = choose_and_fit(x, y, wrong, (1e-3, 1e3), seed=0)
    assert chosen.l2 == 1e-3 and chosen.scores is not None
    assert chosen.scores["accuracy"] > chosen.table[None]["accuracy"] + 0.5
    # with 2 rows a label the choice cannot be scored without the rows it was made on
    x2, y2 = _blobs(2)
    assert cross_validate(x2, y2, wrong, (1e-3, 1e3), seed=0)[0] == 1e-3
    assert choose_and_fit(x2, y2, wrong, (1e-3, 1e3), seed=0).head is wrong
    # labels that carry nothing: the plain comparison of the best strength against the start
    # now and then trains a head by luck; scoring the choice itself (nested) keeps the start
    # in those draws
    rng = np.random.default_rng(0)
    start = Head(rng.normal(size=(2, 16)).astype(np.float32), np.zeros(2))
    plain = nested = 0
    for seed in range(30):
        x = rng.normal(size=(16, 16)).astype(np.float32)
        y = np.repeat([0, 1], 8)
        plain += cross_validate(x, y, start, (1e-2, 1.0), seed)[0] is not None
        nested += choose_and_fit(x, y, start, (1e-2, 1.0), seed).l2 is not None
    assert plain >= 3 and nested < plain
