"""Many variants of one base: full fine-tunes against head-only variants, in one run.

    python bench/variants.py --home .tuneserve --model <a fine-tuned classifier> [--seconds 8]

Starts tuneserve on 127.0.0.1 (by PID, stopped after; one model replica with every core) and
sends `/v1/classify` requests of 1 text at concurrency 32 for `--seconds` each, every scenario
`--rounds` times in alternation:
- 100 and 1,000 head-only variants of `base` round-robin (random heads written as a head job
  writes them, each checked against the base graph; every variant warmed first);
- 1 model: `--model` alone;
- 20 full variants round-robin (copies of `--model`, its files shared by symlink).
Also: the model replica's RSS with the base alone and with 1,000 heads loaded, a head-only
variant's size on disk, and the first request to 50 never-used head-only variants against a
second request to each (p50). Prints a table, writes bench/results/variants.json and an SVG.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import REPO, Connection, Server, free_port, load, texts
from bench.report import line_charts, markdown_table
from bench.serve import variants as full_variants
from service.inference.models import EncoderModel
from service.inference.session import Session
from training import artifacts
from training.head_run import write_head
from training.heads import Head

RESULTS = REPO / "bench" / "results"


def head_variants(home: Path, n: int, start: int = 0) -> list[str]:
    """n head-only variants of `base` (2-6 labels, random weights), as a head job writes them."""
    folder = artifacts.model_dir(home, "base")
    base = artifacts.read_manifest(folder)
    sha = EncoderModel(Session(folder, base)).graph_sha256
    dim = int(base.hidden_size or 384)
    ids = []
    for i in range(start, start + n):
        vid = f"headvar-{i:04d}"
        if not artifacts.model_dir(home, vid).exists():
            rng = np.random.default_rng(i)
            labels = [f"label-{j}" for j in range(2 + i % 5)]
            head = Head(
                rng.normal(size=(len(labels), dim)).astype(np.float32),
                np.zeros(len(labels), dtype=np.float32),
            )
            manifest = artifacts.Manifest(
                id=vid, task="text-classification", method="head", base=base.id, labels=labels,
                base_sha256=sha, files={"head": artifacts.HEAD_FILE},
                max_seq_length=base.max_seq_length, hidden_size=base.hidden_size,
            )  # fmt: skip
            write_head(home, manifest, head, replace=False)
        ids.append(vid)
    return ids


def replica_rss() -> int:
    """Resident bytes of the model replica process(es) (Ray names them in their cmdline)."""
    total = 0
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"ServeReplica:tuneserve:models" not in f.read():
                    continue
            with open(f"/proc/{entry}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


async def one_by_one(url: str, models: list[str], text: str) -> list[float]:
    """Latency of one request to each model in turn, on one connection."""
    conn, out = Connection(url), []
    try:
        for m in models:
            t = time.perf_counter()
            status, body = await conn.post(json.dumps({"model": m, "inputs": [text]}).encode())
            assert status == 200, body
            out.append(1000 * (time.perf_counter() - t))
    finally:
        conn.close()
    return out


def scenario(url: str, models: list[str], seconds: float) -> dict:
    pool = texts()
    asyncio.run(one_by_one(url, models, pool[2]))  # every variant loaded before the clock runs
    asyncio.run(load(url, models, 1, 8, 2.0, pool))
    return asyncio.run(load(url, models, 1, 32, seconds, pool))


def measure(args, url: str, heads: list[str], fresh: list[str]) -> tuple[list[dict], dict]:
    """Each scenario `--rounds` times, the scenarios alternating (a slow patch of the machine
    falls on all of them); requests/s and p50 are the means over rounds, p99 the worst."""
    pool = texts()
    asyncio.run(one_by_one(url, heads[:1], pool[0]))  # the base loaded, and one head
    facts = {"rss_base_mib": replica_rss() / 2**20}
    scenarios = {
        "100 head-only variants": heads[:100],
        "1,000 head-only variants": heads,
        "1 model": [args.model],
        "20 full variants": full_variants(args.home, args.model, 20),
    }
    runs: dict[str, list[dict]] = {name: [] for name in scenarios}
    for i in range(args.rounds):
        for name, models in scenarios.items():
            r = scenario(url, models, args.seconds)
            runs[name].append(r)
            print(f"round {i + 1}, {name}: {r['requests_per_s']:.1f} req/s", flush=True)
            if i == 0 and name.startswith("1,000"):
                facts["rss_1000_heads_mib"] = replica_rss() / 2**20
                cold = asyncio.run(one_by_one(url, fresh, pool[1]))
                warm = asyncio.run(one_by_one(url, fresh, pool[1]))
                facts.update(
                    cold_p50_ms=statistics.median(cold), warm_p50_ms=statistics.median(warm)
                )
    rows = [
        {
            "scenario": name,
            "variants": len(scenarios[name]),
            "requests_per_s": statistics.mean(r["requests_per_s"] for r in rs),
            "p50_ms": statistics.mean(r["p50_ms"] for r in rs),
            "p99_ms": max(r["p99_ms"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "rounds": [r["requests_per_s"] for r in rs],
        }
        for name, rs in runs.items()
    ]
    return rows, facts


def plot(rows: list[dict], cores: int) -> None:
    """requests/s and p50 by variants; both lines start at the one model."""
    one = next(r for r in rows if r["scenario"] == "1 model")
    panels = []
    for label, key in (("requests/s", "requests_per_s"), ("p50 ms", "p50_ms")):
        series = {
            kind: [(1, one[key])] + [(r["variants"], r[key]) for r in rows if kind in r["scenario"]]
            for kind in ("head-only variants", "full variants")
        }
        panels.append((label, series))
    title = f"by variants of one base, 1 text a request, concurrency 32, {cores} cores"
    line_charts(RESULTS / "variants.svg", title, panels)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path(".tuneserve"))
    p.add_argument("--model", required=True, help="a fine-tuned (full) text-classification model")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=3, help="times each scenario runs, alternating")
    args = p.parse_args(argv)
    args.home = args.home.resolve()
    heads = head_variants(args.home, 1000)
    fresh = head_variants(args.home, 50, start=1000)
    disk = sum(f.stat().st_size for f in artifacts.model_dir(args.home, heads[0]).iterdir())
    port, cores = free_port(), os.cpu_count() or 2
    env = {
        **os.environ,
        "TUNESERVE_HOME": str(args.home),
        "TUNESERVE_PORT": str(port),
        "TUNESERVE_MODEL_REPLICAS": "1",
        "TUNESERVE_ORT_THREADS": str(cores),
        "TUNESERVE_MODEL_REPLICA_CPUS": str(cores),
        "TUNESERVE_MAX_MODELS_PER_REPLICA": "24",
    }
    log = args.home / "bench" / "variants-service.log"
    log.parent.mkdir(exist_ok=True)
    server = Server(
        [sys.executable, "-m", "service.cli", "run"], env, f"http://127.0.0.1:{port}/readyz", log
    )
    try:
        rows, facts = measure(args, f"http://127.0.0.1:{port}/v1/classify", heads, fresh)
    finally:
        server.stop()
    one = next(r for r in rows if r["scenario"] == "1 model")["requests_per_s"]
    for r in rows:
        r["vs_one_model"] = r["requests_per_s"] / one
    print()
    print(
        markdown_table(
            [
                ("scenario", "{scenario}"),
                ("requests/s", "{requests_per_s:.1f}"),
                ("vs 1 model", "{vs_one_model:.2f}x"),
                ("p50 ms", "{p50_ms:.1f}"),
                ("p99 ms", "{p99_ms:.1f}"),
                ("errors", "{errors}"),
            ],
            rows,
        )
    )
    facts["head_variant_bytes_on_disk"] = disk
    print("\n" + "\n".join(f"{k}: {v:.1f}" for k, v in facts.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "variants.json").write_text(json.dumps({"rows": rows, "facts": facts}, indent=1))
    plot(rows, cores)
    print(f"wrote {RESULTS / 'variants.json'} and {RESULTS / 'variants.svg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
