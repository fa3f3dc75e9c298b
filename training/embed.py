"""Sentence embeddings from a stored encoder's served ONNX graph: the same pooled, normalized
vectors the service computes, so a head trained on them (training/heads.py) and the zero-shot
baseline a job reports (training/baseline.py) see what serving sees. No torch: the service
imports `session_options` from here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from training import artifacts
from training.data import file_sha256

GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BATCH = 32  # sequences a call: int8 cost per sequence is flat from batch 1 up (bench/runtime.py)


def session_options(precision: str, threads: int) -> ort.SessionOptions:
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


class Embedder:
    """A stored encoder's served graph and tokenizer: texts in, unit vectors out."""

    def __init__(self, home: str | Path, model_id: str, *, threads: int | None = None):
        folder = artifacts.model_dir(home, model_id)
        self.manifest = artifacts.read_manifest(folder)
        if self.manifest.task != "feature-extraction":
            raise ValueError(f"model {model_id!r} is a {self.manifest.task} model, not an encoder")
        self.graph = folder / self.manifest.onnx_file()
        tokenizer_dir = folder / self.manifest.files.get("tokenizer", artifacts.TOKENIZER_DIR)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.manifest.max_seq_length)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.session = ort.InferenceSession(
            str(self.graph),
            session_options(self.manifest.precision, threads or os.cpu_count() or 1),
            providers=["CPUExecutionProvider"],
        )
        self.inputs = {i.name for i in self.session.get_inputs()}

    def sha256(self) -> str:
        """The served graph's digest: a head records it, so it is never served on another."""
        return file_sha256(self.graph)

    def __call__(self, texts: Sequence[str], *, progress=None) -> np.ndarray:
        """[len(texts), hidden] float32 embeddings; batches of similar length, each padded
        only to its own longest text. `progress(done, total)` is called after each batch."""
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(encodings), self.manifest.hidden_size or 0), dtype=np.float32)
        for at in range(0, len(order), BATCH):
            rows = order[at : at + BATCH]
            width = max(len(encodings[i].ids) for i in rows)
            feed = {n: np.zeros((len(rows), width), dtype=np.int64) for n in GRAPH_INPUTS}
            feed["input_ids"][:] = self.pad_id
            for r, i in enumerate(rows):
                e = encodings[i]
                feed["input_ids"][r, : len(e.ids)] = e.ids
                feed["attention_mask"][r, : len(e.ids)] = 1
                feed["token_type_ids"][r, : len(e.ids)] = e.type_ids
            result = self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})
            if out.shape[1] == 0:
                out = np.zeros((len(encodings), result[0].shape[1]), dtype=np.float32)
            out[rows] = result[0]
            if progress is not None:
                progress(min(at + BATCH, len(order)), len(order))
        return out
