"""A model's ONNX Runtime session and fast tokenizer, run over batches of tokenized inputs:
sorted by length and cut into sub-batches, each padded only to its own longest input."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from service.inference.precision import Serving
from training import artifacts
from training.artifacts import Manifest, Precision
from training.embed import session_options

# At most this many sequences in one ONNX Runtime call: int8 cost per sequence is flat from
# batch 1 upwards on CPU (bench/runtime.py), so bigger calls only add padding.
MAX_SUB_BATCH = 16
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _Timings(threading.local):
    """Seconds spent tokenizing and in ONNX Runtime by this thread's calls since `reset()`:
    the replica runs each batch in one worker thread and reads them after."""

    tokenize = 0.0
    inference = 0.0

    def reset(self) -> None:
        self.tokenize = self.inference = 0.0


timings = _Timings()


class Session:
    """A model folder, ready to run: its manifest, tokenizer and ONNX Runtime session."""

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        *,
        threads: int = 1,
        max_batch_tokens: int = 4096,
        serving: Serving | None = None,
        graph: str | None = None,
    ):
        """`serving`: the precision and device to serve (precision.choose; default: the
        manifest's precision, on CPU). `graph`: the role of another graph of the folder to
        run instead (`onnx_fill_mask`, fp32)."""
        self.folder, self.manifest = Path(folder), manifest
        self.serving = serving or Serving(manifest.precision, "cpu", "as chosen at export")
        precision: Precision = "fp32" if graph else self.serving.precision
        self.threads, self.max_batch_tokens = threads, max_batch_tokens
        tokenizer_dir = self.folder / manifest.files.get("tokenizer", artifacts.TOKENIZER_DIR)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=manifest.max_seq_length)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.session = ort.InferenceSession(
            str(self.folder / (manifest.files[graph] if graph else manifest.onnx_file(precision))),
            session_options(precision, threads),
            providers=self.serving.providers(),
        )
        self.input_names = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        t = time.perf_counter()
        out = self.tokenizer.encode_batch(list(texts))
        timings.tokenize += time.perf_counter() - t
        return out

    def sub_batches(self, lengths: Sequence[int]) -> list[list[int]]:
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

    def run(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """The graph's first output for each input, in input order."""
        return np.stack([row[0] for row in self.run_rows(encodings)])

    def run_rows(self, encodings: Sequence[Encoding]) -> list[list[np.ndarray]]:
        """Run the graph over tokenized inputs; returns, per input in input order, its row of
        every output (token outputs are padded to the sub-batch width: trim them to the
        input's length)."""
        lengths = [len(e.ids) for e in encodings]
        out: list[list[np.ndarray]] = [[] for _ in encodings]
        for group in self.sub_batches(lengths):
            feed = self.feed([encodings[i] for i in group], max(lengths[i] for i in group))
            t = time.perf_counter()
            results = self.session.run(None, feed)
            timings.inference += time.perf_counter() - t
            for row, i in enumerate(group):
                out[i] = [r[row] for r in results]
        return out

    def feed(self, encodings: Sequence[Encoding], width: int) -> dict[str, np.ndarray]:
        feed = {
            name: np.full(
                (len(encodings), width), self.pad_id if name == "input_ids" else 0, dtype=np.int64
            )
            for name in GRAPH_INPUTS
        }
        for row, e in enumerate(encodings):
            n = len(e.ids)
            feed["input_ids"][row, :n] = e.ids
            feed["attention_mask"][row, :n] = 1
            feed["token_type_ids"][row, :n] = e.type_ids
        return {k: v for k, v in feed.items() if k in self.input_names}
