"""Service throughput and latency: tuneserve vs a plain FastAPI + transformers service.

    python bench/serve.py --home .tuneserve --model sst2-8k [--seconds 8]

Starts each server on 127.0.0.1 in turn, by PID, and stops it after: tuneserve in two replica
shapes (2 replicas x 1 ONNX Runtime thread, 1 replica x 2 threads) and the baseline
(bench/baseline_app.py: uvicorn, `transformers.pipeline`, PyTorch, the same fine-tuned
model). A bounded async load generator sends `/v1/classify` requests at concurrency 1, 8 and
32 with 1 and 8 texts a request, for `--seconds` each, and reports requests/s, sequences/s and
p50/p95/p99 latency; `wrk` (Debian's C load generator, which takes little of the cores the
servers share) sends the same one-text request at concurrency 1 and 32 to each server. The
model alone (one ONNX Runtime thread, one text a call, in this process, times the cores) is
the ceiling the service's throughput is compared with. Last, 20 variants of the model under round-robin traffic against one
variant, on the first shape. Prints markdown tables; `--json` writes the rows.
`--many-variants` adds head-only variants by the hundred and thousand (bench/variants.py, its
own server: one replica, so that its RSS can be read); `--embeddings` adds /v1/embeddings
against a plain sentence-transformers service (bench/embeddings.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import REPO, Server, free_port, load, texts, wrk
from bench.report import line_charts, markdown_table
from training import artifacts

GRID = [(k, c) for k in (1, 8) for c in (1, 8, 32)]
BASELINE = "baseline: FastAPI + transformers pipeline"


def variants(home: Path, model: str, n: int) -> list[str]:
    """n copies of `model` under new ids, sharing its files by symlink."""
    src = artifacts.model_dir(home, model)
    manifest = artifacts.read_manifest(src)
    ids = []
    for i in range(n):
        vid = f"{model}-variant-{i:02d}"
        if not artifacts.model_dir(home, vid).exists():
            with artifacts.staged_model_dir(home, vid) as stage:
                for sub in ("tokenizer", "onnx", "hf"):
                    (stage / sub).symlink_to(src / sub, target_is_directory=True)
                artifacts.write_manifest(stage, manifest.model_copy(update={"id": vid}))
        ids.append(vid)
    return ids


def table(rows: list[dict]) -> str:
    columns = [
        ("server", "{server}"),
        ("texts/request", "{per_request}"),
        ("concurrency", "{concurrency}"),
        ("requests/s", "{requests_per_s:.1f}"),
        ("sequences/s", "{seqs_per_s:.1f}"),
        ("p50 ms", "{p50_ms:.1f}"),
        ("p95 ms", "{p95_ms:.1f}"),
        ("p99 ms", "{p99_ms:.1f}"),
        ("errors", "{errors}"),
    ]
    return markdown_table(columns, rows)


def run_grid(rows: list[dict], name: str, url: str, model: str, seconds: float) -> None:
    """The Python client's grid, then `wrk` at concurrency 1 and 32 with one text."""
    pool = texts()
    for c in (1, 32):
        r = wrk(url, {"model": model, "inputs": [pool[0]]}, c, seconds)
        rows.append({"server": f"{name} (wrk)", "per_request": 1, "concurrency": c,
                     "seqs_per_s": r["requests_per_s"], "p95_ms": float("nan"), **r})  # fmt: skip
        print(f"{name} wrk c={c}: {r['requests_per_s']:.1f} req/s", flush=True)
    for k, c in GRID:
        r = asyncio.run(load(url, [model], k, c, seconds, pool))
        rows.append({"server": name, "per_request": k, "concurrency": c, **r})
        print(
            f"{name} k={k} c={c}: {r['requests_per_s']:.1f} req/s p50 {r['p50_ms']:.1f} ms",
            flush=True,
        )


def tuneserve(
    rows: list[dict], args, shape: tuple[str, int, int], variant_ids: list[str] | None
) -> None:
    """The grid against tuneserve in one replica shape; with `variant_ids`, also one variant
    against all of them round-robin at concurrency 32."""
    name, replicas, threads = shape
    port, cores = free_port(), os.cpu_count() or 2
    env = {
        **os.environ,
        "TUNESERVE_HOME": str(args.home),
        "TUNESERVE_PORT": str(port),
        "TUNESERVE_MODEL_REPLICAS": str(replicas),
        "TUNESERVE_ORT_THREADS": str(threads),
        "TUNESERVE_MODEL_REPLICA_CPUS": str(cores / replicas),
        "TUNESERVE_MAX_MODELS_PER_REPLICA": str(args.variants + 4),
    }
    cmd = [sys.executable, "-m", "service.cli", "run"]
    server = Server(
        cmd, env, f"http://127.0.0.1:{port}/readyz", args.logs / f"serve-{replicas}x{threads}.log"
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/classify"
        run_grid(rows, name, url, args.model, args.seconds)
        if variant_ids:
            pool = texts()  # warm every variant first
            asyncio.run(load(url, variant_ids, 1, 4, max(2.0, len(variant_ids) * 0.3), pool))
            for label, models in (
                ("1 variant", [args.model]),
                (f"{len(variant_ids)} variants", variant_ids),
            ):
                r = asyncio.run(load(url, models, 1, 32, args.seconds, pool))
                rows.append(
                    {
                        "server": f"{name}, {label} round-robin",
                        "per_request": 1,
                        "concurrency": 32,
                        **r,
                    }
                )
    finally:
        server.stop()


def baseline(rows: list[dict], args) -> None:
    port, cores = free_port(), os.cpu_count() or 2
    env = {
        **os.environ,
        "BASELINE_MODEL": str(artifacts.model_dir(args.home, args.model)),
        "BASELINE_THREADS": str(cores),
    }
    cmd = [sys.executable, "-m", "uvicorn", "bench.baseline_app:app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]  # fmt: skip
    server = Server(cmd, env, f"http://127.0.0.1:{port}/docs", args.logs / "baseline.log")
    try:
        run_grid(rows, BASELINE, f"http://127.0.0.1:{port}/v1/classify", args.model, args.seconds)
    finally:
        server.stop()


def replicas_alone(home: Path, model: str, seconds: float) -> float:
    """Sequences/s of the model in this process, one ONNX Runtime thread, one text a call:
    what a replica could do with no service around it."""
    import time

    from service.inference.models import load_model

    runtime, pool = load_model(artifacts.model_dir(home, model), threads=1), texts()
    done, deadline = 0, time.monotonic() + seconds
    start = time.monotonic()
    while time.monotonic() < deadline:
        runtime.classify([pool[done % len(pool)]])
        done += 1
    return done / (time.monotonic() - start)


def summary(rows: list[dict], shapes: list[tuple[str, int, int]], ceiling: float) -> None:
    for client in ("", " (wrk)"):
        base = {
            (r["per_request"], r["concurrency"]): r
            for r in rows
            if r["server"] == BASELINE + client
        }
        for name, *_ in shapes:
            mine = {
                (r["per_request"], r["concurrency"]): r
                for r in rows
                if r["server"] == name + client
            }
            c32, c1 = mine[(1, 32)], mine[(1, 1)]
            print(
                f"{name}{client}: concurrency 32, 1 text: {c32['requests_per_s'] / base[(1, 32)]['requests_per_s']:.2f}x "
                f"the baseline's requests/s, {c32['requests_per_s'] / ceiling:.0%} of the replicas alone "
                f"({ceiling:.0f}/s); concurrency 1: p50 {c1['p50_ms']:.1f} ms vs {base[(1, 1)]['p50_ms']:.1f} ms"
            )
    one = next(r for r in rows if r["server"].endswith("1 variant round-robin"))
    many = next(r for r in rows if r["server"].endswith("variants round-robin"))
    print(
        f"variants round-robin: {many['requests_per_s'] / one['requests_per_s']:.2f}x the one-variant throughput"
    )


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Requests/s and p50 latency against concurrency, a line per server, for 1 and 8 texts."""
    servers = [
        s
        for s in dict.fromkeys(r["server"] for r in rows)
        if "round-robin" not in s and "wrk" not in s
    ]
    panels = []
    for k in (1, 8):
        for metric, label in (("requests_per_s", "requests/s"), ("p50_ms", "p50 latency, ms")):
            points = {
                s: sorted(
                    (r["concurrency"], r[metric])
                    for r in rows
                    if r["server"] == s and r["per_request"] == k
                )
                for s in servers
            }
            panels.append((f"{label}, {k} text{'s' if k > 1 else ''} a request", points))
    line_charts(path, title, panels)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path(".tuneserve"))
    p.add_argument("--model", required=True, help="a fine-tuned text-classification model id")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--variants", type=int, default=20)
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--many-variants",
        action="store_true",
        help="then the many-variants section: 100 and 1,000 head-only variants (bench/variants.py)",
    )
    p.add_argument(
        "--embeddings",
        action="store_true",
        help="then /v1/embeddings against a plain sentence-transformers service (bench/embeddings.py)",
    )
    args = p.parse_args()
    args.home = args.home.resolve()
    manifest = artifacts.read_manifest(artifacts.model_dir(args.home, args.model))
    assert manifest.task == "text-classification", "--model must be a fine-tuned classifier"
    args.logs = args.home / "bench"
    args.logs.mkdir(exist_ok=True)
    cores = os.cpu_count() or 2
    shapes = [("tuneserve 2x1 thread", cores, 1), ("tuneserve 1x2 threads", 1, cores)]
    rows: list[dict] = []
    ceiling = replicas_alone(args.home, args.model, args.seconds) * cores  # one per core
    print(f"the model alone: {ceiling / cores:.1f} sequences/s a core", flush=True)
    for i, shape in enumerate(shapes):
        tuneserve(
            rows, args, shape, variants(args.home, args.model, args.variants) if i == 0 else None
        )
    baseline(rows, args)
    print(
        f"\nmodel {args.model} ({manifest.precision}), {args.seconds:.0f} s a point, {cores} cores\n"
    )
    print(table(rows))
    summary(rows, shapes, ceiling)
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    plot(
        rows,
        results / "serve.svg",
        f"tuneserve vs a FastAPI + transformers baseline, {cores} cores",
    )
    print(f"plot: {results / 'serve.svg'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.embeddings:
        from bench import embeddings

        embeddings.main(["--home", str(args.home), "--seconds", str(args.seconds)])
    if args.many_variants:
        from bench import variants as many  # it imports this module

        many.main(["--home", str(args.home), "--model", args.model, "--seconds", str(args.seconds)])


if __name__ == "__main__":
    main()
