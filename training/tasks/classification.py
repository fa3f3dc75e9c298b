"""Text classification, full method: every weight trained, with a linear head on the
encoder's mean-pooled, normalized output (how sentence encoders such as all-MiniLM-L6-v2 were
trained: their `[CLS]` pooler carries no sentence meaning), started at the zero-shot
classifier. Accuracy and macro-F1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerFast
from transformers.modeling_outputs import SequenceClassifierOutput

from training.artifacts import SIMILARITY_SCALE, ZERO_SHOT_TEMPLATE
from training.config import FinetuneSpec
from training.data import ClassificationData, DataError
from training.heads import macro_f1
from training.tasks.base import Evaluate, OnnxMetric, mean_pooled, onnx_batches, pad_batch

HEAD_STATE = "classifier_head.pt"  # beside the encoder's weights in a checkpoint's hf/


class PooledClassifier(torch.nn.Module):
    """An encoder and a linear head on its mean-pooled, normalized output. Saved as the
    encoder's Hugging Face folder plus the head's state (HEAD_STATE)."""

    def __init__(self, encoder: PreTrainedModel, n_labels: int):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, n_labels)

    @property
    def config(self):
        return self.encoder.config

    def embed(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return mean_pooled(hidden, attention_mask)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        logits = self.head(self.embed(input_ids, attention_mask, token_type_ids))
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def start_at_zero_shot(self, tokenizer: PreTrainedTokenizerFast, sentences: list[str]) -> None:
        """Each label's row: its sentence's embedding, scaled as zero-shot scales cosines (no
        bias), so that the untrained model predicts what the base predicts zero-shot."""
        was_training = self.training
        self.eval()
        enc = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
        emb = self.embed(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        self.head.weight.copy_(SIMILARITY_SCALE * emb)
        self.head.bias.zero_()
        self.train(was_training)

    def save_pretrained(self, folder: str | Path) -> None:
        self.encoder.save_pretrained(str(folder))
        torch.save(self.head.state_dict(), Path(folder) / HEAD_STATE)


class ClassificationTask:
    name = "text-classification"
    metric = "accuracy"
    mode = "max"
    output_names: tuple[str, ...] = ("logits",)

    def __init__(self, spec: FinetuneSpec, tokenizer: PreTrainedTokenizerFast, labels: list[str]):
        self.spec, self.tokenizer, self.labels = spec, tokenizer, labels
        self.label_id = {label: i for i, label in enumerate(labels)}

    def build_model(self, init_dir: str | Path) -> torch.nn.Module:
        """From a checkpoint (the encoder and HEAD_STATE), or from the base encoder with the
        head started at zero-shot. No pooler: it would be a parameter without a gradient."""
        encoder = AutoModel.from_pretrained(
            str(init_dir), attn_implementation="eager", add_pooling_layer=False
        )
        model = PooledClassifier(encoder, len(self.labels))
        state = Path(init_dir) / HEAD_STATE
        if state.is_file():
            model.head.load_state_dict(torch.load(state, weights_only=True))
        else:
            template = self.spec.hyperparameters.label_template or ZERO_SHOT_TEMPLATE
            model.start_at_zero_shot(
                self.tokenizer, [template.replace("{}", label) for label in self.labels]
            )
        return model

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
        loader: DataLoader = DataLoader(eval_data, batch_size=batch_size, collate_fn=self.collate)  # type: ignore[arg-type]  # a list is a map-style dataset
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
