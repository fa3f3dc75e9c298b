"""One class per model task, made by `load_model` from the manifest: an encoder (sentence
embeddings, used zero-shot and by its head-only variants), a fine-tuned classifier, a
fine-tuned extractive QA model. Each takes a whole batch of requests and returns one result
list a request."""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from service.errors import ServiceError, WrongTask
from service.inference import embeddings, postprocess
from service.inference.fill_mask import FillMask
from service.inference.heads import HeadCache, LoadedHead
from service.inference.precision import Device, choose, device_for
from service.inference.requests import ClassifyItem, EmbedItem, FillMaskItem, QAItem, Refused
from service.inference.session import Session, timings
from training import artifacts
from training.artifacts import ZERO_SHOT_TEMPLATE
from training.data import file_sha256
from training.spans import (
    DEFAULT_MAX_QUESTION_TOKENS,
    best_spans,
    cap_question,
    question_cap,
)

DEFAULT_TEMPLATE = ZERO_SHOT_TEMPLATE  # the sentence a label is put in (training/artifacts.py)


def _split(flat: list, sizes: Sequence[int]) -> list[list]:
    out, at = [], 0
    for n in sizes:
        out.append(flat[at : at + n])
        at += n
    return out


class LoadedModel:
    """A model ready to serve the endpoints of its task."""

    def __init__(self, session: Session):
        self.session = session
        self.manifest = session.manifest

    def classify(self, texts: Sequence[str], labels=None, template=None) -> list[dict]:
        (result,) = self.classify_many([ClassifyItem(list(texts), labels, template)])
        if isinstance(result, Refused):
            raise result.error()
        return result

    def classify_many(
        self, requests: Sequence[ClassifyItem], heads: HeadCache | None = None
    ) -> list[list | Refused]:
        raise NotImplementedError(f"{self.manifest.task} models do not classify")

    def answer(self, pairs: Sequence[tuple[str, str]]) -> list[dict]:
        raise NotImplementedError(f"{self.manifest.task} models do not answer questions")

    def embed_many(self, requests: Sequence[EmbedItem]) -> list[dict | Refused]:
        raise NotImplementedError(f"{self.manifest.task} models do not serve embeddings")

    def fill_mask_many(self, requests: Sequence[FillMaskItem]) -> list[list | Refused]:
        raise NotImplementedError(f"{self.manifest.task} models do not fill masks")

    def answer_many(self, requests: Sequence[QAItem]) -> list[list[dict]]:
        """Several requests' question/context pairs in one pass."""
        results = self.answer([pair for pairs in requests for pair in pairs])
        return _split(results, [len(pairs) for pairs in requests])


class EncoderModel(LoadedModel):
    """A base encoder: sentence embeddings, used zero-shot for classification and QA."""

    LABEL_CACHE = 1024

    def __init__(self, session: Session):
        super().__init__(session)
        # clients send the same candidate labels again and again
        self._label_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.session.run(self.session.encode(texts))

    def embed_many(self, requests: Sequence[EmbedItem]) -> list[dict | Refused]:
        return embeddings.embed_requests(self.session, requests)

    def fill_mask_many(self, requests: Sequence[FillMaskItem]) -> list[list | Refused]:
        if not self.manifest.fill_mask:
            raise WrongTask(f"model {self.manifest.id!r} has no masked-LM head", param="model")
        return self._filler.run(requests)

    @functools.cached_property
    def _filler(self) -> FillMask:
        """The masked-LM graph, opened on first use: most encoders never fill masks."""
        return FillMask(self.session)

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

    @functools.cached_property
    def graph_sha256(self) -> str:
        """The digest of the graph head variants are trained on (the manifest's precision,
        training/embed.py), whichever this replica serves: a head names the base it fits."""
        return file_sha256(self.session.folder / self.manifest.onnx_file())

    def classify_many(
        self, requests: Sequence[ClassifyItem], heads: HeadCache | None = None
    ) -> list[list | Refused]:
        """One ONNX pass embeds the texts of every request; then each request is answered
        zero-shot (each text against each of its labels put into its template, "{}" being
        the label) or, for the head variants it names in `outputs`, by their heads. The heads
        are found first: a request with one that cannot serve is refused, and its texts are
        not embedded."""
        found: list[dict[str, LoadedHead] | Refused] = [self._heads_of(r, heads) for r in requests]
        live = [r for r, f in zip(requests, found, strict=True) if not isinstance(f, Refused)]
        emb = self.embed([t for item in live for t in item.texts]) if live else None
        out: list[list | Refused] = []
        at = 0
        for item, loaded in zip(requests, found, strict=True):
            if isinstance(loaded, Refused):
                out.append(loaded)
                continue
            assert emb is not None
            rows = emb[at : at + len(item.texts)]
            at += len(item.texts)
            if item.outputs is None:
                out.append(self._zero_shot(rows, item))
                continue
            out.append(
                [
                    self._zero_shot(rows, item)
                    if o is None
                    else self._head(rows, loaded[o], heads, item.transform)
                    for o in item.outputs
                ]
            )
        return out

    def _heads_of(
        self, item: ClassifyItem, heads: HeadCache | None
    ) -> dict[str, LoadedHead] | Refused:
        wanted = [o for o in item.outputs or [] if o is not None]
        if wanted and heads is None:
            raise ValueError("head variants need the replica's head cache")
        try:
            return {o: heads.get(o, self.manifest, self.graph_sha256) for o in wanted}  # type: ignore[union-attr]  # checked above
        except ServiceError as exc:
            return Refused.of(exc)

    def _zero_shot(self, rows: np.ndarray, item: ClassifyItem) -> list[dict]:
        labels = item.labels or []
        hypotheses = [(item.template or DEFAULT_TEMPLATE).replace("{}", x) for x in labels]
        probs = postprocess.zero_shot_scores(rows, self._label_embeddings(hypotheses))
        return postprocess.classification_results(probs, labels)

    def _head(self, rows: np.ndarray, loaded: LoadedHead, heads, transform: str) -> list[dict]:
        heads.count_applied(1)
        probs = postprocess.scores(loaded.head.logits(rows), transform)
        return postprocess.classification_results(probs, loaded.labels)

    def answer(self, pairs: Sequence[tuple[str, str]]) -> list[dict]:
        """For each (question, context): the context sentence closest to the question."""
        spans = [postprocess.split_sentences(context) for _, context in pairs]
        texts = [q for q, _ in pairs]
        for (_, context), sp in zip(pairs, spans, strict=True):
            texts.extend(context[s:e] for s, e in sp)
        emb = self.embed(texts)
        results, offset = [], len(pairs)
        for i, ((_, context), sp) in enumerate(zip(pairs, spans, strict=True)):
            sentences = emb[offset : offset + len(sp)]
            results.append(postprocess.best_sentence(context, sp, emb[i], sentences))
            offset += len(sp)
        return results


class ClassifierModel(LoadedModel):
    """A fine-tuned classifier: softmax over its own labels."""

    def classify_many(
        self, requests: Sequence[ClassifyItem], heads: HeadCache | None = None
    ) -> list[list | Refused]:
        logits = self.session.run(self.session.encode([t for r in requests for t in r.texts]))
        out: list[list | Refused] = []
        at = 0
        for r in requests:
            probs = postprocess.scores(logits[at : at + len(r.texts)], r.transform)
            out.append(postprocess.classification_results(probs, self.manifest.labels))
            at += len(r.texts)
        return out


class QAModel(LoadedModel):
    """A fine-tuned extractive QA model: the best token span over sliding windows."""

    def __init__(self, session: Session):
        super().__init__(session)
        m = self.manifest
        self.max_answer_length = m.max_answer_length or 30
        stride = m.doc_stride or 64
        wanted = m.max_question_tokens or DEFAULT_MAX_QUESTION_TOKENS
        self.question_cap = question_cap(m.max_seq_length, stride, wanted)
        # the question alone, to cut it: the windowing tokenizer refuses a single sequence
        self._questions = Tokenizer.from_str(session.tokenizer.to_str())
        self._questions.no_truncation()
        session.tokenizer.enable_truncation(
            max_length=m.max_seq_length, stride=stride, strategy="only_second"
        )

    def cut(self, question: str) -> str:
        """The question as a window holds it: a long one cut to `question_cap` tokens, rather
        than failing (the fast tokenizer panics on a question that leaves no room)."""
        offsets = self._questions.encode(question, add_special_tokens=False).offsets
        return cap_question(question, offsets, self.question_cap)

    def windows(self, pairs: Sequence[tuple[str, str]]) -> tuple[list, list[int]]:
        """Every window of every (question, context), and the pair each belongs to."""
        windows, owners = [], []
        for i, (question, context) in enumerate(pairs):
            enc = self.session.tokenizer.encode(self.cut(question), context)
            for w in [enc, *enc.overflowing]:
                windows.append(w)
                owners.append(i)
        return windows, owners

    def answer(self, pairs: Sequence[tuple[str, str]]) -> list[dict]:
        t = time.perf_counter()
        windows, owners = self.windows(pairs)
        timings.tokenize += time.perf_counter() - t
        rows = self.session.run_rows(windows)
        candidates: list[list[tuple[float, int, int]]] = [[] for _ in pairs]
        for w, (start, end), owner in zip(windows, rows, owners, strict=True):
            n = len(w.ids)
            offsets = [
                o if sid == 1 else None for o, sid in zip(w.offsets, w.sequence_ids, strict=True)
            ]
            candidates[owner] += best_spans(
                start[:n], end[:n], offsets, max_answer_length=self.max_answer_length
            )
        return [
            postprocess.best_span(context, cands)
            for (_, context), cands in zip(pairs, candidates, strict=True)
        ]


_CLASSES: dict[str, type[LoadedModel]] = {
    "feature-extraction": EncoderModel,
    "text-classification": ClassifierModel,
    "extractive-qa": QAModel,
}


def load_model(
    folder: str | Path,
    *,
    threads: int = 1,
    max_batch_tokens: int = 4096,
    device: Device = "auto",
    budget: float = 1.0,
    min_cosine: float = 0.95,
) -> LoadedModel:
    """Load the model in `folder` with the class for its task, serving the precision its
    hardware runs fastest within the budget (inference/precision.py)."""
    manifest = artifacts.read_manifest(folder)
    if manifest.head_only:
        raise ValueError(
            f"model {manifest.id!r} is a head-only variant: it is served through its base "
            f"{manifest.base!r} (inference/heads.py), not loaded on its own"
        )
    cls = _CLASSES.get(manifest.task)
    if cls is None:
        raise ValueError(f"model {manifest.id!r}: the runtime cannot serve task {manifest.task!r}")
    serving = choose(manifest, device_for(device), budget=budget, min_cosine=min_cosine)
    return cls(
        Session(
            Path(folder),
            manifest,
            threads=threads,
            max_batch_tokens=max_batch_tokens,
            serving=serving,
        )
    )
