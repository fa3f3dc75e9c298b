"""Speed of the base encoder: PyTorch eager fp32 vs ONNX Runtime fp32 (optimized) vs int8.

    python bench/runtime.py [--home .tuneserve] [--seconds 1.0] [--threads 1]

One process, one intra-op thread for every engine, engines measured in turn within each
configuration (several rounds) so that a noisy neighbour slows them alike. Prints a markdown
table: sequences/s, latency per call, the ratio to eager, and the output difference to eager.
A second table runs real sentences of mixed length, where the runtime's length-sorted
sub-batches avoid most padding (eager pads each batch to its longest text, as HF does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import markdown_table
from service.inference.models import EncoderModel
from service.inference.session import Session
from service.settings import Settings
from training import artifacts
from training.encoders import ensure_base
from training.export import PARITY_TEXTS, MeanPooledEncoder
from training.onnx import quantize_int8

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def timed(fn, seconds: float) -> list[float]:
    fn()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 2:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


class Engines:
    def __init__(self, folder: Path, threads: int):
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        manifest = artifacts.read_manifest(folder)
        # eager baseline: the encoder as a user would load it (default attention), pooled the
        # same way as the exported graph
        self.eager = MeanPooledEncoder(AutoModel.from_pretrained(str(folder / "hf"))).eval()
        self.onnx: dict[str, EncoderModel] = {}
        for precision in ("fp32", "int8"):
            m = manifest.model_copy(update={"precision": precision})
            self.onnx[f"ort {precision}"] = EncoderModel(Session(folder, m, threads=threads))
        # for comparison only: int8 of the MatMuls alone, attention left in fp32 (the export's
        # quantize_attention=False), built beside the served graphs and not served
        alt = folder / "onnx" / "bench.int8-matmul-only.onnx"
        if not alt.exists():
            quantize_int8(folder / manifest.onnx_file("fp32"), alt, attention=False)
        m = manifest.model_copy(
            update={
                "precision": "int8",
                "files": {**manifest.files, "onnx_int8": str(alt.relative_to(folder))},
            }
        )
        self.onnx["ort int8 matmul-only*"] = EncoderModel(Session(folder, m, threads=threads))
        self.tokenizer = self.onnx["ort fp32"].session.tokenizer

    def eager_run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return self.eager(
                *(
                    torch.from_numpy(feed[k])
                    for k in ("input_ids", "attention_mask", "token_type_ids")
                )
            ).numpy()


def fixed_feed(batch: int, length: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(batch, length), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }


def measure(
    engines: Engines, runs: dict, seconds: float, rounds: int = 3
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name] += timed(fn, seconds / rounds)
    return times


def row(engine: str, batch: int, seq, seconds: float, base: float, out, want) -> dict:
    return {
        "engine": engine,
        "batch": batch,
        "seq": seq,
        "seq_per_s": batch / seconds,
        "ms_per_call": seconds * 1000,
        "speedup": base / seconds,
        "max_abs": float(np.abs(out - want).max()),
        "min_cos": cosine(out, want),
    }


def fixed_table(engines: Engines, seconds: float) -> list[dict]:
    rows = []
    vocab = engines.eager.encoder.config.vocab_size
    for length in (32, 128):
        for batch in (1, 8, 32):
            feed = fixed_feed(batch, length, vocab, seed=batch * length)
            want = engines.eager_run(feed)
            runs = {"eager fp32": lambda f=feed: engines.eager_run(f)}
            for name, model in engines.onnx.items():
                runs[name] = lambda f=feed, s=model.session.session: s.run(None, f)
            times = measure(engines, runs, seconds)
            base = statistics.median(times["eager fp32"])
            for name, ts in times.items():
                med = statistics.median(ts)
                out = (
                    want
                    if name == "eager fp32"
                    else engines.onnx[name].session.session.run(None, feed)[0]
                )
                rows.append(row(name, batch, length, med, base, out, want))
    return rows


def real_texts(n: int) -> list[str]:
    path = DATASETS / "sst2" / "validation.jsonl"
    if path.is_file():
        with path.open() as f:
            return [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]
    return (PARITY_TEXTS * (n // len(PARITY_TEXTS) + 1))[:n]


def mixed_table(engines: Engines, seconds: float, batch: int = 32) -> list[dict]:
    texts = real_texts(batch)
    encs = engines.tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encs)
    feed = {
        k: np.zeros((batch, width), dtype=np.int64)
        for k in ("input_ids", "attention_mask", "token_type_ids")
    }
    for i, e in enumerate(encs):
        feed["input_ids"][i, : len(e.ids)] = e.ids
        feed["attention_mask"][i, : len(e.ids)] = 1
    want = engines.eager_run(feed)
    runs = {"eager fp32 (padded to longest)": lambda: engines.eager_run(feed)}
    for name, model in engines.onnx.items():
        runs[f"{name} (runtime, sorted sub-batches)"] = lambda m=model: m.embed(texts)
    times = measure(engines, runs, seconds)
    base = statistics.median(times["eager fp32 (padded to longest)"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        key = name.split(" (")[0]
        out = want if key == "eager fp32" else engines.onnx[key].embed(texts)
        rows.append(
            row(name, batch, f"{min(len(e.ids) for e in encs)}-{width}", med, base, out, want)
        )
    return rows


def markdown(rows: list[dict]) -> str:
    columns = [
        ("engine", "{engine}"),
        ("batch", "{batch}"),
        ("seq len", "{seq}"),
        ("seq/s", "{seq_per_s:.1f}"),
        ("ms/call", "{ms_per_call:.1f}"),
        ("vs eager", "{speedup:.2f}x"),
        ("max abs diff", "{max_abs:.1e}"),
        ("min cosine", "{min_cos:.4f}"),
    ]
    return markdown_table(columns, rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--seconds", type=float, default=1.5, help="time per engine per configuration")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    home = Settings(**({"home": args.home} if args.home else {})).home
    ensure_base(home)
    engines = Engines(artifacts.model_dir(home, "base"), args.threads)
    print(
        f"base encoder: {artifacts.read_manifest(artifacts.model_dir(home, 'base')).source}; "
        f"{args.threads} thread(s); torch {torch.__version__}\n"
    )
    fixed = fixed_table(engines, args.seconds)
    print("Fixed-length inputs (no padding):\n")
    print(markdown(fixed))
    mixed = mixed_table(engines, args.seconds)
    print(
        "\nReal sentences of mixed length (SST-2 validation, first 32; built-in texts if absent):\n"
    )
    print(markdown(mixed))
    print("\n* not served: int8 of the MatMuls only, attention in fp32 (README)")
    if args.json:
        args.json.write_text(json.dumps({"fixed": fixed, "mixed": mixed}, indent=1))


if __name__ == "__main__":
    main()
