"""Text classification: a head on the encoder, trained on labelled texts; accuracy and
macro-F1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

from training.config import FinetuneSpec
from training.data import ClassificationData, DataError
from training.tasks.base import Evaluate, OnnxMetric, onnx_batches, pad_batch


class ClassificationTask:
    name = "text-classification"
    metric = "accuracy"
    mode = "max"
    output_names: tuple[str, ...] = ("logits",)

    def __init__(self, spec: FinetuneSpec, tokenizer: PreTrainedTokenizerFast, labels: list[str]):
        self.spec, self.tokenizer, self.labels = spec, tokenizer, labels
        self.label_id = {label: i for i, label in enumerate(labels)}

    def build_model(self, init_dir: str | Path) -> torch.nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(
            str(init_dir),
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id=self.label_id,
            attn_implementation="eager",
        )

    def features(self, texts: Sequence[str], labels: Sequence[str]) -> list[dict]:
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.spec.hyperparameters.max_seq_length
        )
        return [
            {
                "input_ids": enc["input_ids"][i],
                "attention_mask": enc["attention_mask"][i],
                "token_type_ids": enc["token_type_ids"][i],
                "labels": self.label_id[labels[i]],
            }
            for i in range(len(texts))
        ]

    def prepare(self, train: ClassificationData, val: ClassificationData, seed: int) -> dict:
        unknown = sorted(set(val.labels) - set(self.labels))
        if unknown:
            where = self.spec.validation_file or self.spec.train_file
            raise DataError(where, [f"validation labels {unknown} are not in the training data"])
        return {
            "train": self.features(train.texts, train.labels),
            "eval": self.features(val.texts, val.labels),
        }

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(features, self.tokenizer.pad_token_id)

    def evaluator(self, eval_data: list[dict], batch_size: int, device, seed: int) -> Evaluate:
        # a list is a map-style dataset (DataLoader's types say Dataset)
        loader: DataLoader = DataLoader(eval_data, batch_size=batch_size, collate_fn=self.collate)  # type: ignore[arg-type]
        return lambda model: self.evaluate(model, loader, device)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, loader, device) -> dict[str, float]:
        model.eval()
        preds, golds, losses = [], [], []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            losses.append(float(out.loss) * len(batch["labels"]))
            preds.append(out.logits.argmax(-1).cpu().numpy())
            golds.append(batch["labels"].cpu().numpy())
        model.train()
        p, g = np.concatenate(preds), np.concatenate(golds)
        return {
            "accuracy": float((p == g).mean()),
            "macro_f1": macro_f1(p, g, len(self.labels)),
            "eval_loss": sum(losses) / len(g),
        }

    def onnx_metric(self, eval_data: list[dict]) -> OnnxMetric:
        def accuracy(session) -> float:
            right = total = 0
            for feed, batch in onnx_batches(eval_data, self.collate):
                pred = session.run(None, feed)[0].argmax(-1)
                right += int((pred == batch["labels"].numpy()).sum())
                total += len(pred)
            return 100.0 * right / max(total, 1)

        return accuracy


def macro_f1(pred: np.ndarray, gold: np.ndarray, n_labels: int) -> float:
    scores = []
    for c in range(n_labels):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0
