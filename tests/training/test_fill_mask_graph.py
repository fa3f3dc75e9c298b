"""A pretraining run's export keeps its masked-LM head as a second graph (the tiny BERT)."""

import numpy as np
import onnx
import pytest
import torch

from training import artifacts
from training.fill_mask_graph import ROLE, MaskLogits, mask_id, masked_feed
from training.onnx import session


@pytest.fixture(scope="module")
def with_head(tiny_encoder_dir, tmp_path_factory):
    from testdata import write_fill_mask_encoder

    home = tmp_path_factory.mktemp("mlm-store")
    mlm = write_fill_mask_encoder(home, "enc", tiny_encoder_dir)
    folder = artifacts.model_dir(home, "enc")
    return mlm, folder, artifacts.read_manifest(folder)


def test_the_graph_is_written_fused_and_named_in_the_manifest(with_head):
    _, folder, manifest = with_head
    assert manifest.fill_mask and manifest.task == "feature-extraction"
    path = folder / manifest.files[ROLE]
    assert path.is_file() and not (path.parent / "fill_mask.raw.onnx").exists()
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops


def test_parity_is_recorded(with_head):
    _, _, manifest = with_head
    assert manifest.parity is not None
    assert manifest.parity.fill_mask_top1["fp32"] >= 0.99
    assert manifest.parity.fill_mask_max_abs_diff["fp32"] < 1e-3


def test_logits_at_the_masks_match_pytorch_at_other_shapes(with_head):
    mlm, folder, manifest = with_head
    feed = {k: v[:3, :7] for k, v in masked_feed(folder / "tokenizer", 64).items()}
    masks = int((feed["input_ids"] == mask_id(folder / "tokenizer")).sum())
    (got,) = session(folder / manifest.files[ROLE]).run(None, feed)
    with torch.no_grad():
        module = MaskLogits(mlm, mask_id(folder / "tokenizer"))
        want = module(*(torch.from_numpy(feed[k]) for k in feed)).numpy()
    assert masks >= 3 and got.shape == (masks, mlm.config.vocab_size)
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_a_model_without_a_bert_head_is_refused(tiny_encoder_dir):
    from transformers import AutoModel

    with pytest.raises(ValueError, match="no BERT masked-LM head"):
        MaskLogits(AutoModel.from_pretrained(str(tiny_encoder_dir)), 4)


def test_an_encoder_without_a_head_has_no_fill_mask(store):
    assert not artifacts.read_manifest(artifacts.model_dir(store, "base")).fill_mask
