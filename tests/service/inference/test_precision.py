"""Which precision and device a replica serves: the fastest its hardware runs within the
accuracy budget, else fp32; CUDA only where ONNX Runtime has it and a GPU is visible."""

import logging

import pytest

from service.inference.models import load_model
from service.inference.precision import CPU, CUDA, choose, device_for
from training import artifacts
from training.artifacts import Manifest, ParityReport

GRAPHS = {f"onnx_{p}": f"onnx/{p}.onnx" for p in ("fp32", "int8", "fp16")}


def classifier(**metric: float) -> Manifest:
    parity = ParityReport(samples=22, validation_metric=metric)
    return Manifest(id="c", task="text-classification", files=GRAPHS, parity=parity)


def encoder(**cosine: float) -> Manifest:
    parity = ParityReport(samples=22, min_cosine=cosine)
    return Manifest(id="e", task="feature-extraction", files=GRAPHS, parity=parity)


@pytest.mark.parametrize(
    "manifest, device, precision, words",
    [
        (classifier(fp32=90.0, int8=89.5, fp16=90.0), "cpu", "int8", "within the 1-point"),
        (classifier(fp32=90.0, int8=88.0, fp16=90.0), "cpu", "fp32", "beyond the 1-point"),
        (classifier(fp32=90.0, int8=80.0, fp16=89.9), "cuda", "fp16", "fp16 scores 89.90"),
        (classifier(fp32=90.0, int8=89.9, fp16=85.0), "cuda", "fp32", "beyond"),
        (encoder(int8=0.99, fp16=0.9999), "cpu", "int8", "at least 0.95"),
        (encoder(int8=0.90, fp16=0.9999), "cpu", "fp32", "below 0.95"),
        (encoder(int8=0.90, fp16=0.9999), "cuda", "fp16", "0.9999"),
    ],
)
def test_the_fastest_precision_within_the_budget(manifest, device, precision, words):
    chosen = choose(manifest, device, budget=1.0, min_cosine=0.95)
    assert (chosen.precision, chosen.device) == (precision, device)
    assert words in chosen.reason


def test_a_classifiers_gate_rows_decide_over_its_few_validation_rows():
    """16 held-out rows: one row is 6 points. The gate's 1,016 rows (held-out and training)
    decide, both ways, and the reason says on what."""
    noisy = classifier(fp32=87.5, int8=81.25, fp16=87.5)
    noisy.parity.gate_metric, noisy.parity.gate_rows = {"fp32": 97.1, "int8": 96.9}, 1016
    chosen = choose(noisy, "cpu", budget=1.0, min_cosine=0.95)
    assert chosen.precision == "int8"
    assert chosen.reason == (
        "int8 scores 96.90 on 1016 labelled rows against fp32's 97.10: within the 1-point budget"
    )
    broken = classifier(fp32=87.5, int8=87.5, fp16=87.5)
    broken.parity.gate_metric, broken.parity.gate_rows = {"fp32": 97.1, "int8": 80.0}, 1016
    assert choose(broken, "cpu", budget=1.0, min_cosine=0.95).precision == "fp32"


@pytest.mark.parametrize(
    "held_out, rows, precision",
    [
        ({"fp32": 87.5, "int8": 56.25}, 16, "fp32"),  # 5 of 16 held-out rows lost: a veto
        ({"fp32": 87.5, "int8": 62.5}, 16, "int8"),  # 4 of 16: within the noise of 16 rows
        ({"fp32": 93.75, "int8": 91.67}, 144, "int8"),  # 3 of 144 (TREC, measured)
        ({"fp32": 88.0, "int8": 87.0}, 100, "int8"),  # 1 of 100: within the budget
    ],
)
def test_held_out_rows_veto_a_graph_that_loses_five_of_them(held_out, rows, precision):
    manifest = classifier(**held_out, fp16=held_out["fp32"])
    manifest.parity.gate_metric = {"fp32": 97.1, "int8": 96.9, "fp16": 97.1}
    manifest.parity.gate_rows, manifest.parity.validation_rows = 1016, rows
    chosen = choose(manifest, "cpu", budget=1.0, min_cosine=0.95)
    assert chosen.precision == precision, chosen.reason
    if precision == "fp32":
        assert "5 of its 16 held-out rows lost" in chosen.reason


def test_a_missing_graph_or_metric_falls_back_to_fp32_or_the_exports_choice():
    no_fp16 = classifier(fp32=90.0, int8=90.0, fp16=90.0)
    no_fp16.files = {k: v for k, v in GRAPHS.items() if k != "onnx_fp16"}
    assert choose(no_fp16, "cuda", budget=1, min_cosine=0.95).precision == "fp32"
    old = Manifest(id="o", task="text-classification", files=GRAPHS, precision="int8")
    assert choose(old, "cpu", budget=1, min_cosine=0.95).reason == "as chosen at export"
    assert choose(old, "cuda", budget=1, min_cosine=0.95).precision == "fp32"


def test_cuda_needs_the_provider_and_a_visible_gpu(monkeypatch, caplog):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert device_for("auto", [CUDA, CPU]) == "cuda"
    assert device_for("cpu", [CUDA, CPU]) == "cpu"
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        assert device_for("auto", [CPU]) == "cpu"
        assert not caplog.records  # no GPU was asked for: nothing to say
        assert device_for("cuda", [CPU]) == "cpu"
    assert "serving on CPU: no CUDA provider" in caplog.text
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        assert device_for("auto", [CUDA, CPU]) == "cpu"
    assert "no GPU visible to this replica" in caplog.text


def test_a_model_that_fails_the_budget_is_served_in_fp32(store, tmp_path):
    import shutil

    folder = tmp_path / "strict"
    shutil.copytree(artifacts.model_dir(store, "base"), folder)
    manifest = artifacts.read_manifest(folder)
    assert load_model(folder).session.serving.precision == "int8"  # within the budget
    manifest.parity.min_cosine["int8"] = 0.5  # made to fail it
    artifacts.write_manifest(folder, manifest)
    model = load_model(folder)
    assert (
        model.session.serving.precision == "fp32" and "below 0.95" in model.session.serving.reason
    )
    assert model.session.session.get_providers() == [CPU]
    assert model.embed(["hello"]).shape[0] == 1


@pytest.mark.gpu
def test_on_a_gpu_the_fp16_graph_runs_with_cuda(store):
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and a CUDA GPU (the `gpu` extra): CPU-only here")
    model = load_model(artifacts.model_dir(store, "base"), device="cuda")
    assert model.session.serving.precision == "fp16"
    assert model.session.session.get_providers()[0] == CUDA
    assert model.embed(["hello"]).shape[0] == 1
