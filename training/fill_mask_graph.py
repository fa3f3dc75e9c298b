"""A pretraining run's masked-LM head, kept as a second ONNX graph beside its encoder's, so
that the encoder it becomes can also fill masks. The graph takes the usual token inputs and
returns the vocabulary logits at the [MASK] positions only (`mask_logits`: masks x
vocabulary, in row-major order of the batch): the head is not run on the other tokens, and
a batch's output is a few hundred kilobytes rather than sequence x vocabulary floats a row.

It is written in fp32 and fused by ONNX Runtime's transformer optimizer like the encoder; it
is not quantized: fill-mask is not the hot path, and the vocabulary projection is where int8
would lose the most. Parity with PyTorch is the share of masks whose top token is the same
(`fill_mask_top1` in the parity report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import artifacts
from training import onnx as steps
from training.export import PARITY_TEXTS, reference_outputs, to_onnx

ROLE = "onnx_fill_mask"
FILE = f"{artifacts.ONNX_DIR}/fill_mask.onnx"
OUTPUT = "mask_logits"
MASK_EVERY = 5  # the parity check masks every fifth word piece of each sentence


class MaskLogits(torch.nn.Module):
    """A BERT masked-LM model (BertForMaskedLM, or BertForPreTraining) reduced to the logits
    at its [MASK] positions."""

    def __init__(self, model: Any, mask_id: int):
        super().__init__()
        heads = getattr(model, "cls", None)
        if heads is None or not hasattr(heads, "predictions"):
            raise ValueError(f"{type(model).__name__}: no BERT masked-LM head to export")
        self.encoder: Any = model.base_model
        self.head: Any = heads.predictions
        self.mask_id = mask_id

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.head(hidden[input_ids == self.mask_id])


def masked_feed(tokenizer_dir: Path, max_length: int) -> dict[str, np.ndarray]:
    """The parity sentences with every MASK_EVERY-th word piece masked."""
    tok = steps.load_tokenizer(tokenizer_dir, max_length)
    feed = steps.encode(tok, PARITY_TEXTS)
    ids = feed["input_ids"]
    special = [i for t in ("[CLS]", "[SEP]", "[PAD]") if (i := tok.token_to_id(t)) is not None]
    where = np.zeros(ids.shape, dtype=bool)
    where[:, 1::MASK_EVERY] = True
    ids[where & ~np.isin(ids, special)] = mask_id(tokenizer_dir)
    return feed


def mask_id(tokenizer_dir: Path) -> int:
    token = steps.load_tokenizer(tokenizer_dir, 8).token_to_id("[MASK]")
    if token is None:
        raise ValueError(f"the tokenizer in {tokenizer_dir} has no [MASK] token")
    return token


def export_fill_mask(model: torch.nn.Module, out: Path, tokenizer_dir: Path, max_length: int):
    """Write the graph into the staged model folder `out`; returns (files, parity fields)."""
    config: Any = model.config
    module = MaskLogits(model.eval(), mask_id(tokenizer_dir)).eval()
    raw = to_onnx(
        module, out / artifacts.ONNX_DIR / "fill_mask.raw.onnx", [OUTPUT], axes={0: "masks"}
    )
    path = steps.optimize(
        raw,
        out / FILE,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    raw.unlink()
    feed = masked_feed(tokenizer_dir, max_length)
    (reference,) = reference_outputs(module, feed)
    (got,) = steps.session(path).run(None, feed)
    parity = {
        "fill_mask_top1": {"fp32": float((reference.argmax(-1) == got.argmax(-1)).mean())},
        "fill_mask_max_abs_diff": {"fp32": float(np.abs(got - reference).max())},
    }
    return {ROLE: FILE}, parity
