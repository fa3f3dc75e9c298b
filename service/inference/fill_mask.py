"""Fill-mask for an encoder that kept its masked-LM head (training/fill_mask_graph.py): for
each [MASK] of each text, the likeliest tokens with their probabilities (a softmax over the
whole vocabulary, also when `targets` restricts which tokens are ranked) and the text with
that mask filled in. Requests it cannot serve are refused one by one (requests.Refused)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from tokenizers import Encoding

from service.errors import InvalidRequest, ServiceError
from service.inference.requests import FillMaskItem, Refused
from service.inference.session import Session, timings

ROLE = "onnx_fill_mask"
MASK = "[MASK]"
MAX_MASKS = 8  # in one text
# tokens in one ONNX Runtime call: the head's output is small, the attention is not
MAX_BATCH_TOKENS = 2048


class FillMask:
    """The masked-LM graph of an encoder's folder, run over [MASK]ed texts."""

    def __init__(self, encoder: Session):
        self.session = Session(
            encoder.folder,
            encoder.manifest,
            threads=encoder.threads,
            max_batch_tokens=min(encoder.max_batch_tokens, MAX_BATCH_TOKENS),
            serving=encoder.serving,
            graph=ROLE,
        )
        self.tokenizer = self.session.tokenizer
        self.mask_id = self.tokenizer.token_to_id(MASK)

    def run(self, requests: Sequence[FillMaskItem]) -> list[list | Refused]:
        """Per request: per text, per mask, the top tokens."""
        # per request: its encodings, each one's mask positions, and the targets' ids
        prepared: list[tuple[list[Encoding], list[list[int]], list[int] | None] | Refused] = []
        for item in requests:
            try:
                prepared.append(self._prepare(item))
            except ServiceError as exc:
                prepared.append(Refused.of(exc))
        ok = [p for p in prepared if not isinstance(p, Refused)]
        flat = [e for p in ok for e in p[0]]
        logits = iter(self._mask_logits(flat, [len(m) for p in ok for m in p[1]]))
        out: list[list | Refused] = []
        for item, p in zip(requests, prepared, strict=True):
            if isinstance(p, Refused):
                out.append(p)
                continue
            enc, masks, targets = p
            out.append(
                [
                    [self._top(text, e, i, next(logits), item.top_k, targets) for i in positions]
                    for text, e, positions in zip(item.texts, enc, masks, strict=True)
                ]
            )
        return out

    def _masks(self, e: Encoding) -> list[int]:
        return [i for i, t in enumerate(e.ids) if t == self.mask_id]

    def _prepare(
        self, item: FillMaskItem
    ) -> tuple[list[Encoding], list[list[int]], list[int] | None]:
        """Each text tokenized, and the targets' token ids; refused when a target is not one
        token, or a text has no mask, too many, or one the model's max length cuts off."""
        targets = self._target_ids(item.targets)
        t = time.perf_counter()
        enc = self.tokenizer.encode_batch(item.texts)
        timings.tokenize += time.perf_counter() - t
        masks = [self._masks(e) for e in enc]
        for n, (text, positions) in enumerate(zip(item.texts, masks, strict=True)):
            written, kept = text.count(MASK), len(positions)
            param = f"inputs[{n}]"
            if written == 0:
                raise InvalidRequest(f"{param}: no {MASK} to fill", param=param)
            if written > MAX_MASKS:
                raise InvalidRequest(f"{param}: at most {MAX_MASKS} {MASK}s a text", param=param)
            if kept < written:
                most = self.session.manifest.max_seq_length
                raise InvalidRequest(
                    f"{param}: a {MASK} falls after the model's max length ({most} tokens)",
                    param=param,
                )
        return enc, masks, targets

    def _target_ids(self, targets: list[str] | None) -> list[int] | None:
        if targets is None:
            return None
        ids = []
        for n, target in enumerate(targets):
            pieces = self.tokenizer.encode(target, add_special_tokens=False).ids
            if len(pieces) != 1:
                raise InvalidRequest(
                    f"targets[{n}]: {target!r} is {len(pieces)} tokens in the model's "
                    "vocabulary; a target must be one token",
                    param=f"targets[{n}]",
                )
            ids.append(pieces[0])
        return list(dict.fromkeys(ids))

    def _mask_logits(self, encodings: Sequence[Encoding], counts: list[int]) -> list[np.ndarray]:
        """The logits at every mask (`counts[i]` of them in encoding i), in order of the
        encodings and their positions."""
        out: list[list[np.ndarray]] = [[] for _ in encodings]
        lengths = [len(e.ids) for e in encodings]
        for group in self.session.sub_batches(lengths):
            feed = self.session.feed([encodings[i] for i in group], max(lengths[i] for i in group))
            t = time.perf_counter()
            (rows,) = self.session.session.run(None, feed)
            timings.inference += time.perf_counter() - t
            at = 0
            for i in group:  # the graph's rows: masks in row-major order of the feed
                n = counts[i]
                out[i] = list(rows[at : at + n])
                at += n
        return [row for rows in out for row in rows]

    def _top(self, text: str, e: Encoding, position: int, logits: np.ndarray, top_k: int, targets):
        z = logits.astype(np.float64)
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        ids = np.asarray(targets) if targets is not None else np.arange(len(probs))
        best = ids[np.argsort(-probs[ids], kind="stable")[:top_k]]
        start, end = e.offsets[position]
        return [
            {
                "score": float(probs[i]),
                "token": int(i),
                "token_str": (piece := self.tokenizer.decode([int(i)])),
                "sequence": _filled(text, start, end, piece),
            }
            for i in best
        ]


def _filled(text: str, start: int, end: int, piece: str) -> str:
    """The text with the mask at [start, end) replaced by a token: a word piece that continues
    a word ("##ing") joins the word before."""
    if piece.startswith("##"):
        return text[:start].rstrip(" ") + piece[2:] + text[end:]
    return text[:start] + piece + text[end:]
