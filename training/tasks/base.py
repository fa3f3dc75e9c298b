"""What every training task shares: the fast tokenizer, padding, and the protocol a task
implements so that the loop, the preparation and the export never branch on the task."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}

# a model -> its validation metrics
Evaluate = Callable[[torch.nn.Module], dict[str, float]]
# an ONNX Runtime session -> the validation metric, in percent (the export's precision check)
OnnxMetric = Callable[[Any], float]


class TrainingTask(Protocol):
    """One task: its data, its Hugging Face head, its metric. Every head returns `.loss` when
    its batch carries targets, so one loop trains them all (`loss = model(**batch).loss`)."""

    name: str
    metric: str  # the checkpoint ranking metric
    mode: str  # "max" or "min"
    output_names: tuple[str, ...]  # the exported graph's outputs (none: exported as an encoder)

    def build_model(self, init_dir: str | Path) -> torch.nn.Module: ...

    def prepare(self, train: Any, val: Any, seed: int) -> dict[str, Any]:
        """{"train": items, "eval": what `evaluator` and `onnx_metric` take}."""
        ...

    def collate(self, items: Sequence[dict]) -> dict[str, torch.Tensor]: ...

    def evaluator(self, eval_data: Any, batch_size: int, device, seed: int) -> Evaluate: ...

    def onnx_metric(self, eval_data: Any) -> OnnxMetric: ...


def load_tokenizer(tokenizer_dir: str | Path, max_length: int) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(Path(tokenizer_dir) / "tokenizer.json"), **SPECIAL_TOKENS
    )
    tok.model_max_length = max_length
    tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    return tok


def mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The unit-length mean of the token states: the sentence embedding the service serves
    (sentence-transformers' Pooling(mean) -> Normalize)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def pad_batch(features: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad each sequence key to the longest in the batch; scalars become a 1-D tensor."""
    width = max(len(f["input_ids"]) for f in features)
    out: dict[str, torch.Tensor] = {}
    for key in features[0]:
        values = [f[key] for f in features]
        if isinstance(values[0], list | np.ndarray):
            fill = pad_id if key == "input_ids" else (-100 if key == "labels" else 0)
            arr = np.full((len(values), width), fill, dtype=np.int64)
            for i, v in enumerate(values):
                arr[i, : len(v)] = v
            out[key] = torch.from_numpy(arr)
        else:
            out[key] = torch.tensor(values)
    return out


GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_batches(items: Sequence[dict], collate, size: int = 64):
    """(feed for an ONNX Runtime session, the collated batch) over `items`."""
    for i in range(0, len(items), size):
        batch = collate(items[i : i + size])
        yield {k: batch[k].numpy() for k in GRAPH_INPUTS}, batch
