"""The inference runtime: an ONNX Runtime session and a fast tokenizer per model.

`load_model` is the factory: it reads a model folder and returns the class for its task. Each
class has the methods of the endpoints it serves. Postprocessing (softmax, sentence splitting,
picking the best sentence) is pure functions, tested on their own.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from training import artifacts
from training.artifacts import Manifest
from training.spans import best_spans

# Cosine similarities are multiplied by this before the softmax. all-MiniLM-L6-v2 was trained
# with a contrastive loss at this scale (sentence-transformers' MultipleNegativesRankingLoss
# default), so scaled cosines are the logits the encoder learned to separate.
SIMILARITY_SCALE = 20.0

# A label is compared with a text as this sentence. Of 17 wordings tried on SST-2 validation
# and movie_sentiment test with labels negative/positive (bench/zero_shot.py), this one was
# best on both (74.8% and 71.0% fp32, against 66.8% and 67.8% for the bare label); topic
# labels read better with a request `template` such as "This text is about {}.".
DEFAULT_TEMPLATE = "The tone is {}."

# At most this many sequences in one ONNX Runtime call: int8 cost per sequence is flat from
# batch 1 upwards on CPU (bench/runtime.py), so bigger calls only add padding.
MAX_SUB_BATCH = 16

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
# a period after these does not end a sentence ("Dr. Smith", "e.g. Paris")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "no",
        "fig",
        "approx",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "gen",
        "gov",
    ]
)


def _ends_sentence(text: str, dot: int) -> bool:
    if text[dot] != ".":
        return True
    word = text[:dot].rsplit(None, 1)[-1].lstrip("\"'([").lower() if text[:dot].strip() else ""
    return not (word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, whitespace trimmed, so that
    ``text[start:end]`` is each sentence. A text without sentence ends is one sentence."""
    spans = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if not _ends_sentence(text, m.start() - 1):
            continue
        spans.append((start, m.start() + len(m.group(0).rstrip())))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out or [(0, len(text))]


def zero_shot_scores(text_emb: np.ndarray, label_emb: np.ndarray) -> np.ndarray:
    """[texts, labels] probabilities from normalized embeddings."""
    return softmax(SIMILARITY_SCALE * text_emb @ label_emb.T, axis=1)


def classification_results(probs: np.ndarray, labels: Sequence[str]) -> list[dict]:
    results = []
    for row in probs:
        best = int(row.argmax())
        results.append(
            {
                "label": labels[best],
                "score": float(row[best]),
                "scores": {label: float(p) for label, p in zip(labels, row, strict=True)},
            }
        )
    return results


def best_sentence(
    context: str, spans: list[tuple[int, int]], question_emb: np.ndarray, sent_emb: np.ndarray
) -> dict:
    probs = softmax(SIMILARITY_SCALE * sent_emb @ question_emb)
    best = int(probs.argmax())
    start, end = spans[best]
    return {"answer": context[start:end], "start": start, "end": end, "score": float(probs[best])}


def _session_options(precision: str, threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The fp32 graph is already fused by the transformer optimizer at export; ORT's own
    # passes on top were 3-9% slower. The int8 graph gains from ORT's extended fusions
    # (MatMulInteger + Cast + Mul -> MatMulIntegerToFloat).
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        if precision == "int8"
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return opts


# one classification request: (texts, labels or None, template or None)
ClassifyItem = tuple[list[str], list[str] | None, str | None]


def _split(flat: list, sizes: Sequence[int]) -> list[list]:
    out, at = [], 0
    for n in sizes:
        out.append(flat[at : at + n])
        at += n
    return out


def approx_tokens(texts: Sequence[str], max_tokens: int) -> int:
    """Tokens a batch will take, estimated from characters (about 4 a token in English) and
    capped per text by truncation; cheap enough to run before tokenizing."""
    return sum(min(len(t) // 4 + 2, max_tokens) for t in texts)


# Seconds spent tokenizing and in ONNX Runtime by the calls of this thread since `reset()`:
# the replica runs each batch in one worker thread and reads them after.
class _Timings(threading.local):
    tokenize = 0.0
    inference = 0.0

    def reset(self) -> None:
        self.tokenize = self.inference = 0.0


timings = _Timings()


class LoadedModel:
    """A model ready to run: its manifest, tokenizer and ONNX Runtime session."""

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        *,
        threads: int = 1,
        max_batch_tokens: int = 4096,
        providers: Sequence[str] | None = None,
    ):
        self.folder = Path(folder)
        self.manifest = manifest
        self.max_batch_tokens = max_batch_tokens
        self.tokenizer = Tokenizer.from_file(
            str(
                self.folder
                / manifest.files.get("tokenizer", artifacts.TOKENIZER_DIR)
                / "tokenizer.json"
            )
        )
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=manifest.max_seq_length)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.session = ort.InferenceSession(
            str(self.folder / manifest.onnx_file()),
            _session_options(manifest.precision, threads),
            providers=list(providers or ["CPUExecutionProvider"]),
        )
        self.input_names = {i.name for i in self.session.get_inputs()}

    def _sub_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped by similar length, each group under the token budget once padded."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        groups: list[list[int]] = []
        current: list[int] = []
        for i in order:
            padded = lengths[i] * (len(current) + 1)  # sorted: i is the longest so far
            if current and (padded > self.max_batch_tokens or len(current) >= MAX_SUB_BATCH):
                groups.append(current)
                current = []
            current.append(i)
        if current:
            groups.append(current)
        return groups

    def encode(self, texts: Sequence[str]) -> list:
        t = time.perf_counter()
        out = self.tokenizer.encode_batch(list(texts))
        timings.tokenize += time.perf_counter() - t
        return out

    def classify(self, texts: Sequence[str], labels=None, template=None) -> list[dict]:
        return self.classify_many([(list(texts), labels, template)])[0]

    def classify_many(self, requests: Sequence[ClassifyItem]) -> list[list[dict]]:
        raise NotImplementedError(f"{self.manifest.task} models do not classify")

    def answer(self, pairs: Sequence[tuple[str, str]]) -> list[dict]:
        raise NotImplementedError(f"{self.manifest.task} models do not answer questions")

    def answer_many(self, requests: Sequence[Sequence[tuple[str, str]]]) -> list[list[dict]]:
        """Several requests' question/context pairs in one pass."""
        results = self.answer([pair for pairs in requests for pair in pairs])
        return _split(results, [len(pairs) for pairs in requests])

    def run(self, encodings: Sequence) -> np.ndarray:
        """The graph's first output for each input, in input order."""
        return np.stack([row[0] for row in self.run_rows(encodings)])

    def run_rows(self, encodings: Sequence) -> list[list[np.ndarray]]:
        """Run the graph over tokenized inputs, length-sorted and padded per sub-batch;
        returns, per input in input order, its row of every output (token outputs are padded
        to the sub-batch width: trim them to the input's length)."""
        lengths = [len(e.ids) for e in encodings]
        out: list[list[np.ndarray] | None] = [None] * len(encodings)
        for group in self._sub_batches(lengths):
            width = max(lengths[i] for i in group)
            feed = {
                name: np.full(
                    (len(group), width), self.pad_id if name == "input_ids" else 0, dtype=np.int64
                )
                for name in ("input_ids", "attention_mask", "token_type_ids")
            }
            for row, i in enumerate(group):
                e, n = encodings[i], lengths[i]
                feed["input_ids"][row, :n] = e.ids
                feed["attention_mask"][row, :n] = 1
                feed["token_type_ids"][row, :n] = e.type_ids
            feed = {k: v for k, v in feed.items() if k in self.input_names}
            t = time.perf_counter()
            results = self.session.run(None, feed)
            timings.inference += time.perf_counter() - t
            for row, i in enumerate(group):
                out[i] = [r[row] for r in results]
        return out  # type: ignore[return-value]


class EncoderModel(LoadedModel):
    """A base encoder: sentence embeddings, used zero-shot for classification and QA."""

    LABEL_CACHE = 1024

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # clients send the same candidate labels again and again
        self._label_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.run(self.encode(texts))

    def _label_embeddings(self, labels: Sequence[str]) -> np.ndarray:
        missing = [x for x in dict.fromkeys(labels) if x not in self._label_cache]
        if missing:
            for label, emb in zip(missing, self.embed(missing), strict=True):
                self._label_cache[label] = emb
        for label in labels:
            self._label_cache.move_to_end(label)
        while len(self._label_cache) > self.LABEL_CACHE:
            self._label_cache.popitem(last=False)
        return np.stack([self._label_cache[x] for x in labels])

    def classify_many(self, requests: Sequence[ClassifyItem]) -> list[list[dict]]:
        """Zero-shot: each text against each of its request's labels put into the request's
        template ("{}" is the label). One ONNX pass embeds the texts of every request."""
        emb = self.embed([t for texts, _, _ in requests for t in texts])
        out, at = [], 0
        for texts, labels, template in requests:
            hypotheses = [(template or DEFAULT_TEMPLATE).replace("{}", x) for x in labels or []]
            probs = zero_shot_scores(emb[at : at + len(texts)], self._label_embeddings(hypotheses))
            out.append(classification_results(probs, labels or []))
            at += len(texts)
        return out

    def answer(self, pairs: Sequence[tuple[str, str]]) -> list[dict]:
        """For each (question, context): the context sentence closest to the question."""
        spans = [split_sentences(context) for _, context in pairs]
        texts = [q for q, _ in pairs]
        for (_, context), sp in zip(pairs, spans, strict=True):
            texts.extend(context[s:e] for s, e in sp)
        emb = self.embed(texts)
        results, offset = [], len(pairs)
        for i, ((_, context), sp) in enumerate(zip(pairs, spans, strict=True)):
            results.append(best_sentence(context, sp, emb[i], emb[offset : offset + len(sp)]))
            offset += len(sp)
        return results


class ClassifierModel(LoadedModel):
    """A fine-tuned classifier: softmax over its own labels."""

    def classify_many(self, requests: Sequence[ClassifyItem]) -> list[list[dict]]:
        texts = [t for texts, _, _ in requests for t in texts]
        logits = self.run(self.encode(texts))
        results = classification_results(softmax(logits.astype(np.float64)), self.manifest.labels)
        return _split(results, [len(t) for t, _, _ in requests])


class QAModel(LoadedModel):
    """A fine-tuned extractive QA model: the best token span over sliding windows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        m = self.manifest
        self.max_answer_length = m.max_answer_length or 30
        self.tokenizer.enable_truncation(
            max_length=m.max_seq_length, stride=m.doc_stride or 64, strategy="only_second"
        )

    def answer(self, pairs: Sequence[tuple[str, str]]) -> list[dict]:
        windows, owners = [], []
        t = time.perf_counter()
        for i, (question, context) in enumerate(pairs):
            enc = self.tokenizer.encode(question, context)
            for w in [enc, *enc.overflowing]:
                windows.append(w)
                owners.append(i)
        timings.tokenize += time.perf_counter() - t
        rows = self.run_rows(windows)
        candidates: list[list[tuple[float, int, int]]] = [[] for _ in pairs]
        for w, (start, end), owner in zip(windows, rows, owners, strict=True):
            n = len(w.ids)
            offsets = [
                o if sid == 1 else None for o, sid in zip(w.offsets, w.sequence_ids, strict=True)
            ]
            candidates[owner] += best_spans(
                start[:n], end[:n], offsets, max_answer_length=self.max_answer_length
            )
        results = []
        for (_, context), cands in zip(pairs, candidates, strict=True):
            if not cands:
                results.append({"answer": "", "start": 0, "end": 0, "score": 0.0})
                continue
            scores = softmax(np.array([c[0] for c in cands], dtype=np.float64))
            best = int(scores.argmax())
            _, start, end = cands[best]
            results.append(
                {
                    "answer": context[start:end],
                    "start": start,
                    "end": end,
                    "score": float(scores[best]),
                }
            )
        return results


_CLASSES: dict[str, type[LoadedModel]] = {
    "feature-extraction": EncoderModel,
    "text-classification": ClassifierModel,
    "extractive-qa": QAModel,
}


def load_model(folder: str | Path, **kwargs) -> LoadedModel:
    """Load the model in `folder` with the runtime class for its task."""
    manifest = artifacts.read_manifest(folder)
    cls = _CLASSES.get(manifest.task)
    if cls is None:
        raise ValueError(f"model {manifest.id!r}: the runtime cannot serve task {manifest.task!r}")
    return cls(Path(folder), manifest, **kwargs)
