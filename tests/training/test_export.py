"""The export path on a tiny BERT: the same code `make run` runs on the bundled encoder."""

import numpy as np
import onnx
import pytest
import torch

from training import artifacts
from training.export import MeanPooledEncoder, export_encoder, load_encoder
from training.onnx import INPUT_NAMES, encode, load_tokenizer, session


@pytest.fixture(scope="module")
def exported(store):
    folder = artifacts.model_dir(store, "base")
    return folder, artifacts.read_manifest(folder)


def test_export_writes_the_whole_artifact(exported):
    folder, manifest = exported
    assert manifest.task == "feature-extraction"
    for role in ("tokenizer", "hf", "onnx_fp32", "onnx_int8", "onnx_fp16"):
        assert (folder / manifest.files[role]).exists(), role
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    assert not (folder / "onnx" / "raw.onnx").exists()
    assert manifest.hidden_size == 32


def test_fp32_graph_is_fused_and_int8_graph_is_quantized(exported):
    folder, manifest = exported
    fp32_ops = {n.op_type for n in onnx.load(str(folder / manifest.onnx_file("fp32"))).graph.node}
    int8_ops = {n.op_type for n in onnx.load(str(folder / manifest.onnx_file("int8"))).graph.node}
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= fp32_ops
    assert {"MatMulInteger", "QAttention"} <= int8_ops


def test_attention_can_stay_in_fp32(tiny_encoder_dir, tmp_path):
    manifest = export_encoder(tiny_encoder_dir, tmp_path, "mm", quantize_attention=False)
    graph = onnx.load(str(artifacts.model_dir(tmp_path, "mm") / manifest.onnx_file("int8")))
    ops = {n.op_type for n in graph.graph.node}
    assert "MatMulInteger" in ops and "Attention" in ops and "QAttention" not in ops


def test_the_fp16_graph_is_float16_inside_and_close_to_pytorch(exported):
    folder, manifest = exported
    graph = onnx.load(str(folder / manifest.onnx_file("fp16")))
    weights = {t.data_type for t in graph.graph.initializer if len(t.dims) == 2}
    assert onnx.TensorProto.FLOAT16 in weights
    # inputs and outputs keep their types: the runtime feeds it as it feeds the others
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert manifest.parity.min_cosine["fp16"] > 0.999


def test_parity_is_recorded_and_fp32_matches_pytorch(exported):
    _, manifest = exported
    assert manifest.parity is not None and manifest.parity.samples > 16
    assert manifest.parity.max_abs_diff["fp32"] < 1e-4
    assert manifest.parity.mean_cosine["int8"] > 0.9


@pytest.mark.parametrize("batch,length", [(1, 5), (3, 17), (7, 60)])
def test_dynamic_axes_match_pytorch_at_other_shapes(exported, batch, length):
    folder, manifest = exported
    module = MeanPooledEncoder(load_encoder(folder / "hf")).eval()
    rng = np.random.default_rng(batch)
    vocab = module.encoder.config.vocab_size
    ids = rng.integers(5, vocab, size=(batch, length), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[0, length // 2 :] = 0  # padding in one row
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    got = session(folder / manifest.onnx_file("fp32")).run(None, feed)[0]
    with torch.no_grad():
        want = module(*(torch.from_numpy(feed[n]) for n in INPUT_NAMES)).numpy()
    assert got.shape == (batch, 32)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_embeddings_are_normalized(exported):
    folder, manifest = exported
    tok = load_tokenizer(folder / "tokenizer", 64)
    out = session(folder / manifest.onnx_file("fp32")).run(
        None, encode(tok, ["a b c", "the film"])
    )[0]
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_int8_that_drifts_falls_back_to_fp32(tiny_encoder_dir, tmp_path):
    manifest = export_encoder(tiny_encoder_dir, tmp_path, "strict", min_int8_cosine=1.01)
    assert manifest.precision == "fp32"
    assert "onnx_int8" in manifest.files  # still exported, just not served


def test_export_refuses_to_overwrite_a_model(tiny_encoder_dir, store):
    with pytest.raises(FileExistsError):
        export_encoder(tiny_encoder_dir, store, "base")
