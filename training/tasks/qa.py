"""Extractive question answering: start and end logits over sliding windows of the context;
SQuAD v1.1 exact match and F1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForQuestionAnswering, PreTrainedTokenizerFast

from training.config import FinetuneSpec
from training.data import QAExample
from training.spans import cap_question, question_cap
from training.tasks.base import Evaluate, OnnxMetric, onnx_batches, pad_batch
from training.tasks.squad import best_answers, squad_scores

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_TARGETS = ("start_positions", "end_positions")


class QATask:
    name = "extractive-qa"
    metric = "f1"
    mode = "max"
    output_names: tuple[str, ...] = ("start_logits", "end_logits")

    def __init__(self, spec: FinetuneSpec, tokenizer: PreTrainedTokenizerFast):
        self.spec, self.tokenizer = spec, tokenizer
        self.hp = spec.hyperparameters

    def build_model(self, init_dir: str | Path) -> torch.nn.Module:
        return AutoModelForQuestionAnswering.from_pretrained(
            str(init_dir), attn_implementation="eager"
        )

    def questions(self, examples: Sequence[QAExample]) -> list[str]:
        """Each question, cut to the tokens a window holds of it (spans.question_cap)."""
        cap = question_cap(self.hp.max_seq_length, self.hp.doc_stride, self.hp.max_question_tokens)
        alone = self.tokenizer(
            [ex.question for ex in examples], add_special_tokens=False, return_offsets_mapping=True
        )
        return [
            cap_question(ex.question, offsets, cap)
            for ex, offsets in zip(examples, alone["offset_mapping"], strict=True)
        ]

    def windows(self, examples: Sequence[QAExample]) -> list[dict]:
        """Sliding windows over each context (question first, then a slice of the context),
        with the char offsets of the context tokens and, for training, the answer position."""
        enc = self.tokenizer(
            self.questions(examples),
            [ex.context for ex in examples],
            truncation="only_second",
            max_length=self.hp.max_seq_length,
            stride=self.hp.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        out = []
        for w in range(len(enc["input_ids"])):
            example = examples[enc["overflow_to_sample_mapping"][w]]
            seq = enc.sequence_ids(w)
            offsets = [
                tuple(o) if seq[t] == 1 else None for t, o in enumerate(enc["offset_mapping"][w])
            ]
            start, end = _answer_tokens(example, offsets)
            out.append(
                {
                    "input_ids": enc["input_ids"][w],
                    "attention_mask": enc["attention_mask"][w],
                    "token_type_ids": enc["token_type_ids"][w],
                    "start_positions": start,
                    "end_positions": end,
                    "example_index": enc["overflow_to_sample_mapping"][w],
                    "offsets": offsets,
                }
            )
        return out

    def prepare(self, train: list[QAExample], val: list[QAExample], seed: int) -> dict:
        return {
            "train": self.windows(train),
            # shortest first: evaluation batches pad little (answers do not depend on order)
            "eval": {
                "examples": val,
                "windows": sorted(self.windows(val), key=lambda w: len(w["input_ids"])),
            },
        }

    def collate(self, windows: Sequence[dict]) -> dict[str, torch.Tensor]:
        keep = _MODEL_INPUTS + _TARGETS
        return pad_batch([{k: w[k] for k in keep} for w in windows], self.tokenizer.pad_token_id)

    def scores(
        self,
        starts: list[np.ndarray],
        ends: list[np.ndarray],
        examples: Sequence[QAExample],
        windows: Sequence[dict],
    ) -> dict[str, float]:
        """SQuAD EM/F1 from per-batch start/end logits (each batch as wide as its longest
        window), whichever runtime made them: PyTorch in training, ONNX Runtime at export."""
        width = self.hp.max_seq_length

        def stack(chunks: list[np.ndarray]) -> np.ndarray:
            out = np.full((sum(len(c) for c in chunks), width), -1e4, dtype=np.float32)
            row = 0
            for c in chunks:
                out[row : row + len(c), : c.shape[1]] = c
                row += len(c)
            return out

        predictions = best_answers(
            examples,
            windows,
            stack(starts),
            stack(ends),
            max_answer_length=self.hp.max_answer_length,
        )
        return squad_scores(predictions, examples)

    def evaluator(self, eval_data: dict, batch_size: int, device, seed: int) -> Evaluate:
        windows, examples = eval_data["windows"], eval_data["examples"]
        loader = DataLoader(windows, batch_size=batch_size, collate_fn=self.collate)
        return lambda model: self.evaluate(model, loader, device, examples, windows)

    @torch.no_grad()
    def evaluate(
        self, model, loader, device, examples: Sequence[QAExample], windows: Sequence[dict]
    ) -> dict[str, float]:
        model.eval()
        starts, ends, losses, n = [], [], 0.0, 0
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            losses += float(out.loss) * len(batch["input_ids"])
            n += len(batch["input_ids"])
            starts.append(out.start_logits.float().cpu().numpy())
            ends.append(out.end_logits.float().cpu().numpy())
        model.train()
        return {**self.scores(starts, ends, examples, windows), "eval_loss": losses / max(n, 1)}

    def onnx_metric(self, eval_data: dict) -> OnnxMetric:
        windows, examples = eval_data["windows"], eval_data["examples"]

        def f1(session) -> float:
            starts, ends = [], []
            for feed, _ in onnx_batches(windows, self.collate):
                start_logits, end_logits = session.run(None, feed)
                starts.append(start_logits)
                ends.append(end_logits)
            return self.scores(starts, ends, examples, windows)["f1"]

        return f1


def _answer_tokens(example: QAExample, offsets: list) -> tuple[int, int]:
    """The answer's first and last token in a window; (0, 0), the [CLS] token, when the
    window does not hold the whole answer."""
    if not example.answers:
        return 0, 0
    text, a0 = example.answers[0]
    a1 = a0 + len(text)
    inside = [t for t, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > a0 or offsets[inside[-1]][1] < a1:
        return 0, 0
    start = next(t for t in inside if offsets[t][1] > a0)
    end = next(t for t in reversed(inside) if offsets[t][0] < a1)
    return start, end
