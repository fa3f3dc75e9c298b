"""/v1/embeddings throughput: tuneserve's `base` against a plain sentence-transformers
service on the same model (bench/baseline_embed_app.py), in the same run.

    python bench/embeddings.py [--home .tuneserve] [--seconds 8]
    python bench/serve.py --model ... --embeddings      (the same, after the classify grid)

Each server is started on 127.0.0.1 in turn and stopped by its PID: tuneserve as 2 model
replicas x 1 ONNX Runtime thread (int8), the baseline as uvicorn + SentenceTransformer with
every core (PyTorch fp32). The same closed-loop client (bench/load.py) sends OpenAI-shaped
requests, `{"model": "base", "input": [...]}` with 1 and 8 texts, at concurrency 1, 8 and 32.
Prints a markdown table and the ratios; saves bench/results/embeddings.svg.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import REPO, Server, free_port, load, texts
from bench.report import line_charts, markdown_table
from training.encoders import ensure_base

GRID = [(k, c) for k in (1, 8) for c in (1, 8, 32)]
BASELINE = "baseline: FastAPI + sentence-transformers"
TUNESERVE = "tuneserve 2x1 thread (int8)"


def grid(rows: list[dict], name: str, url: str, seconds: float) -> None:
    pool = texts()
    for k, c in GRID:
        r = asyncio.run(load(url, ["base"], k, c, seconds, pool, field="input"))
        rows.append({"server": name, "per_request": k, "concurrency": c, **r})
        print(f"{name} k={k} c={c}: {r['requests_per_s']:.1f} req/s", flush=True)


def run(home: Path, seconds: float, logs: Path) -> list[dict]:
    rows: list[dict] = []
    cores = os.cpu_count() or 2
    port = free_port()
    env = {**os.environ, "TUNESERVE_HOME": str(home), "TUNESERVE_PORT": str(port),
           "TUNESERVE_MODEL_REPLICAS": str(cores), "TUNESERVE_ORT_THREADS": "1",
           "TUNESERVE_MODEL_REPLICA_CPUS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "service.cli", "run"]
    server = Server(cmd, env, f"http://127.0.0.1:{port}/readyz", logs / "embed-tuneserve.log")
    try:
        grid(rows, TUNESERVE, f"http://127.0.0.1:{port}/v1/embeddings", seconds)
    finally:
        server.stop()
    port = free_port()
    env = {**os.environ, "BASELINE_THREADS": str(cores)}
    cmd = [sys.executable, "-m", "uvicorn", "bench.baseline_embed_app:app", "--host",
           "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    server = Server(cmd, env, f"http://127.0.0.1:{port}/docs", logs / "embed-baseline.log")
    try:
        grid(rows, BASELINE, f"http://127.0.0.1:{port}/v1/embeddings", seconds)
    finally:
        server.stop()
    return rows


def report(rows: list[dict]) -> None:
    columns = [("server", "{server}"), ("texts/request", "{per_request}"),
               ("concurrency", "{concurrency}"), ("requests/s", "{requests_per_s:.1f}"),
               ("sequences/s", "{seqs_per_s:.1f}"), ("p50 ms", "{p50_ms:.1f}"),
               ("p95 ms", "{p95_ms:.1f}"), ("errors", "{errors}")]  # fmt: skip
    print(markdown_table(columns, rows))
    at = {(r["server"], r["per_request"], r["concurrency"]): r for r in rows}
    for k, c in GRID:
        mine, theirs = at[(TUNESERVE, k, c)], at[(BASELINE, k, c)]
        print(
            f"{k} text(s), concurrency {c}: {mine['seqs_per_s'] / theirs['seqs_per_s']:.2f}x "
            f"the baseline's sequences/s; p50 {mine['p50_ms']:.1f} vs {theirs['p50_ms']:.1f} ms"
        )
    panels = []
    for k in (1, 8):
        points = {
            s: sorted((r["concurrency"], r["seqs_per_s"]) for r in rows
                      if r["server"] == s and r["per_request"] == k)
            for s in (TUNESERVE, BASELINE)
        }  # fmt: skip
        panels.append((f"sequences/s, {k} text{'s' if k > 1 else ''} a request", points))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    line_charts(
        out / "embeddings.svg", "/v1/embeddings: tuneserve vs sentence-transformers", panels
    )
    print(f"plot: {out / 'embeddings.svg'}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path(".tuneserve"))
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args(argv)
    home = args.home.resolve()
    ensure_base(home)
    logs = home / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    report(run(home, args.seconds, logs))


if __name__ == "__main__":
    main()
