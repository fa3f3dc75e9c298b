"""Per task: preprocessing, the Hugging Face head, batching, and the metric.

Every head returns `.loss` when its batch carries targets, so one training loop serves all
three tasks (`loss = model(**batch).loss`). QA postprocessing and the SQuAD v1.1 metric are
pure functions with their own tests.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerFast,
)

from training.config import FinetuneSpec, PretrainSpec
from training.data import QAExample
from training.spans import best_spans

SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}


def load_tokenizer(tokenizer_dir: str | Path, max_length: int) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(Path(tokenizer_dir) / "tokenizer.json"), **SPECIAL_TOKENS
    )
    tok.model_max_length = max_length
    tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    return tok


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


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0


# ---------------------------------------------------------------------------- classification


class ClassificationTask:
    name = "text-classification"
    metric = "accuracy"
    mode = "max"

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

    def collate(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(features, self.tokenizer.pad_token_id)

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


def macro_f1(pred: np.ndarray, gold: np.ndarray, n_labels: int) -> float:
    scores = []
    for c in range(n_labels):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


# ---------------------------------------------------------------------------- extractive QA


def _normalize_answer(s: str) -> str:
    """SQuAD v1.1's normalization: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(_normalize_answer(prediction) == _normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = _normalize_answer(prediction).split(), _normalize_answer(gold).split()
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], examples: Sequence[QAExample]) -> dict[str, float]:
    """Official SQuAD v1.1 EM and F1 (in percent): the best over each question's answers."""
    em = f1 = 0.0
    for ex in examples:
        pred = predictions.get(ex.id, "")
        golds = [text for text, _ in ex.answers] or [""]
        em += max(exact_match(pred, g) for g in golds)
        f1 += max(token_f1(pred, g) for g in golds)
    n = max(len(examples), 1)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}


def postprocess_qa(
    examples: Sequence[QAExample],
    windows: Sequence[dict],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """The best answer text per question over all of its windows."""
    by_example: dict[int, list[int]] = collections.defaultdict(list)
    for w, window in enumerate(windows):
        by_example[window["example_index"]].append(w)
    predictions = {}
    for i, ex in enumerate(examples):
        candidates = []
        for w in by_example.get(i, []):
            candidates += best_spans(
                start_logits[w],
                end_logits[w],
                windows[w]["offsets"],
                n_best=n_best,
                max_answer_length=max_answer_length,
            )
        if candidates:
            _, s, e = max(candidates)
            predictions[ex.id] = ex.context[s:e]
        else:
            predictions[ex.id] = ""
    return predictions


class QATask:
    name = "extractive-qa"
    metric = "f1"
    mode = "max"
    labels: ClassVar[list[str]] = []

    def __init__(self, spec: FinetuneSpec, tokenizer: PreTrainedTokenizerFast):
        self.spec, self.tokenizer = spec, tokenizer
        self.hp = spec.hyperparameters

    def build_model(self, init_dir: str | Path) -> torch.nn.Module:
        return AutoModelForQuestionAnswering.from_pretrained(
            str(init_dir), attn_implementation="eager"
        )

    def windows(self, examples: Sequence[QAExample]) -> list[dict]:
        """Sliding windows over each context (question first, then a slice of the context),
        with the char offsets of the context tokens and, for training, the answer position."""
        enc = self.tokenizer(
            [ex.question for ex in examples],
            [ex.context for ex in examples],
            truncation="only_second",
            max_length=self.hp.max_seq_length,
            stride=self.hp.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        out = []
        for w in range(len(enc["input_ids"])):
            i = enc["overflow_to_sample_mapping"][w]
            seq = enc.sequence_ids(w)
            offsets = [
                tuple(o) if seq[t] == 1 else None for t, o in enumerate(enc["offset_mapping"][w])
            ]
            start = end = 0  # [CLS] when the answer is not inside this window
            if examples[i].answers:
                text, a0 = examples[i].answers[0]
                a1 = a0 + len(text)
                inside = [t for t, o in enumerate(offsets) if o is not None]
                if inside and offsets[inside[0]][0] <= a0 and offsets[inside[-1]][1] >= a1:
                    start = next(t for t in inside if offsets[t][1] > a0)
                    end = next(t for t in reversed(inside) if offsets[t][0] < a1)
            out.append(
                {
                    "input_ids": enc["input_ids"][w],
                    "attention_mask": enc["attention_mask"][w],
                    "token_type_ids": enc["token_type_ids"][w],
                    "start_positions": start,
                    "end_positions": end,
                    "example_index": i,
                    "offsets": offsets,
                }
            )
        return out

    def collate(self, windows: Sequence[dict]) -> dict[str, torch.Tensor]:
        keep = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")
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

        predictions = postprocess_qa(
            examples,
            windows,
            stack(starts),
            stack(ends),
            max_answer_length=self.hp.max_answer_length,
        )
        return squad_scores(predictions, examples)

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


# ---------------------------------------------------------------------------- masked LM


class MaskedLMTask:
    name = "masked-lm"
    metric = "eval_loss"
    mode = "min"
    labels: ClassVar[list[str]] = []

    def __init__(self, spec: PretrainSpec, tokenizer: PreTrainedTokenizerFast):
        self.spec, self.tokenizer = spec, tokenizer
        self.collator = DataCollatorForLanguageModeling(
            tokenizer,
            mlm=True,
            mlm_probability=spec.hyperparameters.mlm_probability,
            return_tensors="pt",
        )  # 15% of tokens; of those 80% [MASK], 10% random, 10% unchanged (BERT)

    def build_model(self, init_dir: str | Path) -> torch.nn.Module:
        if self.spec.objective == "mlm+nsp":
            from transformers import BertForPreTraining

            return BertForPreTraining.from_pretrained(str(init_dir), attn_implementation="eager")
        return AutoModelForMaskedLM.from_pretrained(str(init_dir), attn_implementation="eager")

    def blocks(self, docs: Sequence[str], seed: int) -> list[dict]:
        """Token blocks of max_seq_length: documents joined, then cut (no padding wasted).
        With mlm+nsp, each block is two segments, the second the true continuation half the time."""
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

    def collate(self, blocks: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator([{k: v for k, v in b.items()} for b in blocks])
        batch["attention_mask"] = (batch["input_ids"] != self.tokenizer.pad_token_id).long()
        return batch

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
            n = int(masked.sum())
            # the loss of the MLM part only, weighted by masked tokens
            mlm_loss = torch.nn.functional.cross_entropy(
                logits[masked].float(), labels[masked], reduction="sum"
            )
            loss_sum += float(mlm_loss)
            correct += float((logits.argmax(-1)[masked] == labels[masked]).sum())
            total += n
        model.train()
        loss = loss_sum / max(total, 1)
        return {
            "eval_loss": loss,
            "perplexity": math.exp(min(loss, 50)),
            "masked_accuracy": correct / max(total, 1),
        }
