"""Real Ray Train on CPU with the tiny BERT: every task trains, DDP, resume, export (training/run.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from testdata import classification_file, corpus_file, squad_file

from training import artifacts
from training.checkpoints import HF_DIR
from training.config import FinetuneSpec, PretrainSpec
from training.data import DataError
from training.onnx import INPUT_NAMES, encode, load_tokenizer, session
from training.run import run

FAST = {
    "batch_size": 8,
    "learning_rate": 2e-3,
    "warmup_ratio": 0.0,
    "log_every_steps": 5,
    "early_stopping_patience": None,  # every epoch runs (test_early_stopping_stops shows it)
    "cv_folds": 0,  # the epochs as asked (cross-validation: tests/training/test_cv.py)
}
CPU = {"cpus_per_worker": 0.5}


@pytest.fixture(scope="module")
def home(ray_session, store, tmp_path_factory):
    """A store with the tiny `base`, and training data made here."""
    return store


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return {
        "cls": classification_file(d / "cls.jsonl"),
        "qa": squad_file(d / "qa.json"),
        "corpus": corpus_file(d / "corpus.txt"),
    }


def _losses(summary):
    return [h["eval_loss"] for h in summary["history"]]


def _classifier(run_id: str, files, epochs: int, scaling: dict, **spec) -> FinetuneSpec:
    """A full-method classification run on the test data, few epochs."""
    return FinetuneSpec(
        run_id=run_id,
        task="text-classification",
        method="full",
        train_file=files["cls"],
        hyperparameters={**FAST, "epochs": epochs},
        scaling={**scaling, **CPU},
        **spec,
    )


@pytest.fixture(scope="module")
def cls_run(home, files):
    return run(_classifier("t-cls", files, 4, {}), home)


@pytest.fixture(scope="module")
def qa_run(home, files):
    spec = FinetuneSpec(
        run_id="t-qa",
        task="extractive-qa",
        train_file=files["qa"],
        validation_split=0.25,
        hyperparameters={**FAST, "epochs": 6, "max_seq_length": 32, "doc_stride": 8},
        scaling=CPU,
    )
    return run(spec, home)


def test_classification_trains_exports_and_matches_pytorch(home, cls_run):
    summary = cls_run
    losses = _losses(summary)
    # the starting model (its head at zero-shot) is evaluated and kept first, then each epoch
    assert summary["history"][0]["step"] == 0
    assert len(losses) == 5 and losses[-1] < losses[0], losses
    assert summary["metrics"]["accuracy"] >= 0.5
    assert summary["method"] == "full" and set(summary["baseline"]) == {"accuracy", "macro_f1"}

    folder = artifacts.model_dir(home, "t-cls")
    manifest = artifacts.read_manifest(folder)
    assert manifest.task == "text-classification" and manifest.labels == ["negative", "positive"]
    assert manifest.base == "base" and len(manifest.dataset_sha256) == 64
    assert manifest.spec["run_id"] == "t-cls" and "accuracy" in manifest.metrics
    assert manifest.parity.max_abs_diff["fp32"] < 1e-4
    assert set(manifest.parity.validation_metric) == {"fp32", "int8", "fp16"}
    # the precision gate scores every held-out row and the training rows (fewer than 1,000)
    gate = manifest.parity.gate_metric
    assert set(gate) == {"fp32", "int8", "fp16"}
    rows = len(Path(manifest.spec["train_file"]).read_text().splitlines())
    assert manifest.parity.gate_rows == rows  # held out and trained on: all of them
    assert manifest.parity.validation_rows and manifest.parity.validation_rows < rows
    assert (manifest.precision == "int8") == manifest.parity.verdict("int8", 1.0)[0]

    # the exported graph against PyTorch on other inputs (dynamic batch and length)
    from transformers import AutoModel

    from training.tasks.classification import HEAD_STATE, PooledClassifier

    encoder = AutoModel.from_pretrained(
        str(folder / "hf"), attn_implementation="eager", add_pooling_layer=False
    )
    model = PooledClassifier(encoder, 2)
    model.head.load_state_dict(torch.load(folder / "hf" / HEAD_STATE))
    model.eval()
    feed = encode(
        load_tokenizer(folder / "tokenizer", 64),
        ["wonderful film", "dull tedious mess it was", "sad"],
    )
    got = session(folder / manifest.onnx_file("fp32")).run(None, feed)[0]
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(feed[k]) for k in INPUT_NAMES}).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_classifier_scores_by_the_function_asked(home, cls_run):
    """softmax (the default), sigmoid or the raw logits: what the Hugging Face client's
    `function_to_apply` asks of a fine-tuned classifier."""
    from service.inference.models import load_model
    from service.inference.requests import ClassifyItem

    model = load_model(artifacts.model_dir(home, "t-cls"))
    texts = ["wonderful film", "dull tedious mess it was"]
    soft, sig, raw = (
        model.classify_many([ClassifyItem(texts, transform=t)])[0]
        for t in ("softmax", "sigmoid", "none")
    )
    labels = model.manifest.labels
    for s, g, r in zip(soft, sig, raw, strict=True):
        logits = np.array([r["scores"][x] for x in labels])
        e = np.exp(logits - logits.max())
        np.testing.assert_allclose([s["scores"][x] for x in labels], e / e.sum(), atol=1e-9)
        np.testing.assert_allclose(
            [g["scores"][x] for x in labels], 1 / (1 + np.exp(-logits)), atol=1e-9
        )
        assert s["label"] == r["label"] == labels[int(logits.argmax())]


def test_qa_trains_and_exports(home, qa_run):
    summary = qa_run
    losses = _losses(summary)
    assert losses[-1] < losses[0], losses
    assert {"exact_match", "f1"} <= set(summary["metrics"])
    manifest = artifacts.read_manifest(artifacts.model_dir(home, "t-qa"))
    assert manifest.task == "extractive-qa" and manifest.parity.max_abs_diff["fp32"] < 1e-4
    assert manifest.doc_stride == 8 and manifest.max_answer_length == 30


def test_fine_tuned_models_are_served_on_the_next_request(service_url, home, cls_run, qa_run):
    """The Serve app was deployed before these models existed: no redeploy, no restart."""
    from conftest import post

    status, body = post(
        f"{service_url}/v1/classify",
        {"model": "t-cls", "inputs": ["wonderful loved film", "dull mess"]},
    )
    assert status == 200, body
    assert all(set(r["scores"]) == {"negative", "positive"} for r in body["results"])
    status, body = post(
        f"{service_url}/v1/classify", {"model": "t-cls", "inputs": ["x"], "labels": ["a", "b"]}
    )
    assert status == 400 and body["error"]["param"] == "labels"
    from conftest import get

    status, view = get(f"{service_url}/v1/models/t-cls")
    assert status == 200 and view["task"] == "text-classification" and view["base"] == "base"
    assert view["labels"] == ["negative", "positive"] and 0 <= view["metrics"]["accuracy"] <= 1
    status, body = post(f"{service_url}/v1/qa", {"model": "t-cls", "question": "q", "context": "c"})
    assert status == 400 and "text-classification model" in body["error"]["message"]

    context = "the great wall stands in china . refunds are issued within five working days ."
    status, body = post(
        f"{service_url}/v1/qa",
        {"model": "t-qa", "question": "where is the great wall", "context": context},
    )
    assert status == 200, body
    (r,) = body["results"]
    assert context[r["start"] : r["end"]] == r["answer"] and r["answer"]
    # a long context, read in several windows (tests/service/inference/test_models.py shows
    # the windowing): the service answers as the runtime does in this process
    long_context = " ".join(["refunds are issued within five working days ."] * 6) + " " + context
    status, body = post(
        f"{service_url}/v1/qa",
        {"model": "t-qa", "question": "where is the great wall", "context": long_context},
    )
    assert status == 200, body
    from service.inference.models import load_model

    local = load_model(artifacts.model_dir(home, "t-qa")).answer(
        [("where is the great wall", long_context)]
    )
    (r,) = body["results"]
    assert (r["start"], r["end"], r["answer"]) == (
        local[0]["start"],
        local[0]["end"],
        local[0]["answer"],
    )


@pytest.fixture(scope="module")
def mlm_run(home, files):
    spec = PretrainSpec(
        run_id="t-mlm",
        train_file=files["corpus"],
        hyperparameters={**FAST, "epochs": 3, "max_seq_length": 32, "eval_before_training": True},
        scaling=CPU,
    )
    return run(spec, home)


def test_masked_lm_continued_from_base_makes_an_encoder(home, mlm_run):
    summary = mlm_run
    losses = _losses(summary)
    assert summary["history"][0]["step"] == 0  # the starting model, evaluated first
    assert losses[-1] < losses[0], losses
    first, last = summary["history"][0], summary["history"][-1]
    assert last["perplexity"] < first["perplexity"]
    # masked accuracy is not asserted: on the tiny model's 26 masked tokens it moves by one
    # token between runs (0.038 -> 0.0 seen in CI); loss and perplexity carry the signal
    manifest = artifacts.read_manifest(artifacts.model_dir(home, "t-mlm"))
    assert manifest.task == "feature-extraction" and manifest.base == "base"  # a new base encoder


def test_pretrained_encoder_serves_zero_shot_and_starts_a_fine_tune(
    home, files, service_url, mlm_run
):
    from conftest import post

    status, body = post(
        f"{service_url}/v1/classify",
        {"model": "t-mlm", "inputs": ["the film was wonderful"], "labels": ["happy", "sad"]},
    )
    assert status == 200, body
    spec = FinetuneSpec(
        run_id="t-from-mlm",
        task="text-classification",
        method="full",
        base_model="t-mlm",
        train_file=files["cls"],
        export=False,
        hyperparameters={**FAST, "max_steps": 3},
        scaling=CPU,
    )
    assert run(spec, home)["final"]["step"] == 3


def test_bf16_autocast_trains_on_cpu(home, files):
    """bf16 mixed precision runs without a GPU (the spec refuses only fp16 there) and learns;
    the checkpoint it keeps is fp32, as the export expects."""
    spec = _classifier("t-bf16", files, 4, {"mixed_precision": "bf16"}, export=False)
    summary = run(spec, home)
    losses = _losses(summary)
    assert losses[-1] < losses[0], losses
    assert summary["final"]["accuracy"] > 0.5
    # the weights of the checkpoint the run chose (not the base's, copied in as its start)
    weights = next((Path(summary["checkpoint"]) / HF_DIR).glob("*.safetensors"))
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(weights).values()} == {torch.float32}


def test_masked_lm_from_scratch_with_nsp(home, files):
    spec = PretrainSpec(
        run_id="t-scratch",
        base_model="scratch",
        scratch_size="tiny",
        vocab_size=200,
        objective="mlm+nsp",
        train_file=files["corpus"],
        export=False,
        hyperparameters={**FAST, "epochs": 3, "max_seq_length": 32},
        scaling=CPU,
    )
    summary = run(spec, home)
    losses = _losses(summary)
    assert losses[-1] < losses[0], losses
    vocab = (home / "runs" / "t-scratch" / "inputs" / "tokenizer" / "vocab.txt").read_text().split()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(vocab) <= 200


def test_two_worker_ddp(home, files):
    summary = run(_classifier("t-ddp", files, 2, {"num_workers": 2}, export=False), home)
    assert summary["final"]["workers"] == 2 and summary["final"]["train_samples_per_s"] > 0
    # each worker sees half the data: half the steps of one worker per epoch (72 rows: 24 of
    # the 96 held out, training/prepare.py MIN_VALIDATION_ROWS)
    assert summary["final"]["step"] == 2 * -(-(72 // 2) // 8)


def test_invalid_data_fails_before_any_compute(home, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    spec = FinetuneSpec(run_id="t-bad", task="text-classification", train_file=bad, scaling=CPU)
    with pytest.raises(DataError, match=r"bad.jsonl line 2: \"label\" is missing"):
        run(spec, home)
    assert not list((home / "runs" / "t-bad").glob("checkpoint_*"))


def test_a_run_id_reused_with_another_spec_is_refused(home, files, cls_run):
    spec = FinetuneSpec(
        run_id="t-cls",  # the run of the cls_run fixture, with another learning rate
        task="text-classification",
        method="full",
        train_file=files["cls"],
        hyperparameters={**FAST, "epochs": 4, "learning_rate": 0.1},
        scaling=CPU,
    )
    with pytest.raises(ValueError, match=r"different spec \(changed: hyperparameters\)"):
        run(spec, home)


def test_early_stopping_stops(home, files):
    """A learning rate too small to change a prediction: no evaluation beats the start, so
    with patience 1 the run stops after the first of its 8 epochs."""
    spec = FinetuneSpec(
        run_id="t-early",
        task="text-classification",
        method="full",
        train_file=files["cls"],
        export=False,
        hyperparameters={**FAST, "epochs": 8, "learning_rate": 1e-12, "early_stopping_patience": 1},
        scaling=CPU,
    )
    summary = run(spec, home)
    assert [h["step"] for h in summary["history"]] == [0, 9]  # 72 rows: 9 steps an epoch


def test_a_head_run_stores_kilobytes_and_serves_through_its_base(service_url, home, files):
    from conftest import post

    spec = FinetuneSpec(
        run_id="t-head", task="text-classification", method="head", train_file=files["cls"]
    )
    summary = run(spec, home)
    assert summary["method"] == "head" and summary["model"] == "t-head"
    assert set(summary["baseline"]) == {"accuracy", "macro_f1"}
    # on data its words separate, the head beats the random tiny base's zero-shot
    assert summary["metrics"]["accuracy"] > summary["baseline"]["accuracy"]
    folder = artifacts.model_dir(home, "t-head")
    manifest = artifacts.read_manifest(folder)
    assert manifest.method == "head" and manifest.base == "base" and len(manifest.base_sha256) == 64
    assert sorted(p.name for p in folder.iterdir()) == ["head.npz", "manifest.json"]
    assert sum(p.stat().st_size for p in folder.iterdir()) < 20_000
    status, body = post(
        f"{service_url}/v1/classify", {"model": "t-head", "inputs": ["wonderful loved great"]}
    )
    assert status == 200, body
    assert body["results"][0]["label"] == "positive"
