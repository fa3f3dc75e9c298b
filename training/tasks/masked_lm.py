"""Masked-language modelling (optionally with next-sentence prediction): token blocks cut
from the corpus, BERT's masking; eval loss, perplexity and masked-token accuracy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForMaskedLM,
    BertForPreTraining,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerFast,
)

from training.config import PretrainSpec
from training.tasks.base import Evaluate, OnnxMetric


class MaskedLMTask:
    name = "masked-lm"
    metric = "eval_loss"
    mode = "min"
    output_names: tuple[str, ...] = ()  # exported as an encoder

    def __init__(self, spec: PretrainSpec, tokenizer: PreTrainedTokenizerFast):
        self.spec, self.tokenizer = spec, tokenizer
        # 15% of tokens; of those 80% [MASK], 10% random, 10% unchanged (BERT)
        self.collator = DataCollatorForLanguageModeling(
            tokenizer,
            mlm=True,
            mlm_probability=spec.hyperparameters.mlm_probability,
            return_tensors="pt",
        )

    def build_model(self, init_dir: str | Path) -> torch.nn.Module:
        cls = BertForPreTraining if self.spec.objective == "mlm+nsp" else AutoModelForMaskedLM
        return cls.from_pretrained(str(init_dir), attn_implementation="eager")

    def blocks(self, docs: Sequence[str], seed: int) -> list[dict]:
        """Token blocks of max_seq_length: documents joined, then cut (no padding wasted).
        With mlm+nsp, each block is two segments, the second the true continuation half the
        time."""
        size = self.spec.hyperparameters.max_seq_length
        ids = self.tokenizer(list(docs), add_special_tokens=False)["input_ids"]
        stream = [t for doc in ids for t in (*doc, self.tokenizer.sep_token_id)]
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        if self.spec.objective == "mlm":
            body = size - 2
            return [
                {
                    "input_ids": [cls, *stream[i : i + body], sep],
                    "token_type_ids": [0] * (min(body, len(stream) - i) + 2),
                }
                for i in range(0, max(len(stream) - body // 4, 1), body)
            ]
        rng = np.random.default_rng(seed)
        half = (size - 3) // 2
        segments = [stream[i : i + half] for i in range(0, len(stream) - half + 1, half)]
        out = []
        for k in range(0, len(segments) - 1, 2):
            a = segments[k]
            is_next = rng.random() < 0.5 or len(segments) < 3
            b = segments[k + 1] if is_next else segments[int(rng.integers(len(segments)))]
            out.append(
                {
                    "input_ids": [cls, *a, sep, *b, sep],
                    "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
                    "next_sentence_label": 0 if is_next else 1,
                }
            )
        return out

    def prepare(self, train: list[str], val: list[str], seed: int) -> dict:
        return {"train": self.blocks(train, seed), "eval": self.blocks(val, seed + 1)}

    def collate(self, blocks: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator([dict(b) for b in blocks])
        batch["attention_mask"] = (batch["input_ids"] != self.tokenizer.pad_token_id).long()
        return batch

    def evaluator(self, eval_data: list[dict], batch_size: int, device, seed: int) -> Evaluate:
        batches = self.fixed_eval(eval_data, batch_size, seed)
        return lambda model: self.evaluate(model, batches, device)

    def fixed_eval(self, blocks: Sequence[dict], batch_size: int, seed: int) -> list[dict]:
        """Eval batches masked once, with a fixed seed, so every evaluation sees the same task."""
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            return [
                self.collate(blocks[i : i + batch_size]) for i in range(0, len(blocks), batch_size)
            ]
        finally:
            torch.random.set_rng_state(gen_state)

    @torch.no_grad()
    def evaluate(self, model, batches, device) -> dict[str, float]:
        model.eval()
        loss_sum = correct = total = 0.0
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            logits = out.logits if hasattr(out, "logits") else out.prediction_logits
            labels = batch["labels"]
            masked = labels != -100
            # the loss of the MLM part only, weighted by masked tokens
            loss_sum += float(
                torch.nn.functional.cross_entropy(
                    logits[masked].float(), labels[masked], reduction="sum"
                )
            )
            correct += float((logits.argmax(-1)[masked] == labels[masked]).sum())
            total += int(masked.sum())
        model.train()
        loss = loss_sum / max(total, 1)
        return {
            "eval_loss": loss,
            "perplexity": math.exp(min(loss, 50)),
            "masked_accuracy": correct / max(total, 1),
        }

    def onnx_metric(self, eval_data: list[dict]) -> OnnxMetric:
        raise NotImplementedError("a masked-lm run is exported as an encoder, checked by cosine")
