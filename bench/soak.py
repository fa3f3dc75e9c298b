"""Soak: steady load at a share of the measured capacity, for a set time.

    python bench/soak.py --home .tuneserve --model base [--minutes 10] [--share 0.8]

Starts tuneserve on 127.0.0.1 (by PID, stopped after), measures its capacity (requests/s at
concurrency 32, 1 text a request, the median of three 8-second runs), then sends requests at
`share` of it, open loop: a request leaves on schedule whether or not earlier ones have
returned (at most 256 in flight). Every window it prints requests/s, errors, p50/p99 and
the resident memory of the service's processes. At the end: the errors (must be 0), RSS growth from the first window to the last
(must be under 10%), and, over 6 windows or more, the p99 of the last third of the windows
against the first third (must not double). Exits 1 if any of these fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import Connection, Server, free_port, load, texts, tree_rss
from training import artifacts


async def steady(
    url: str, model: str, rate: float, seconds: float, window_s: float, pid: int, extra: dict
):
    pool = texts()
    rng = random.Random(0)
    windows: list[dict] = []
    current: dict = {"lat": [], "errors": 0}
    in_flight = asyncio.Semaphore(256)
    free: list[Connection] = []

    async def one() -> None:
        async with in_flight:
            conn = free.pop() if free else Connection(url)
            body = json.dumps({"model": model, "inputs": [rng.choice(pool)], **extra}).encode()
            t = time.perf_counter()
            try:
                status, _ = await conn.post(body)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                conn.close()
                status = 0
            bucket = current
            if status == 200:
                bucket["lat"].append(time.perf_counter() - t)
                free.append(conn)
            else:
                bucket["errors"] += 1
                conn.close()

    start = time.monotonic()
    next_window = start + window_s
    tasks: set[asyncio.Task] = set()
    n = 0
    while (now := time.monotonic()) < start + seconds:
        due = start + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        if time.monotonic() >= next_window:
            done, current = current, {"lat": [], "errors": 0}
            windows.append(summarize(done, window_s, tree_rss(pid)))
            w = windows[-1]
            print(
                f"  t={time.monotonic() - start:5.0f}s {w['requests_per_s']:6.1f} req/s "
                f"errors {w['errors']} p50 {w['p50_ms']:.1f} ms p99 {w['p99_ms']:.1f} ms "
                f"rss {w['rss_mb']:.0f} MB",
                flush=True,
            )
            next_window += window_s
    await asyncio.gather(*tasks)
    return windows


def summarize(bucket: dict, window_s: float, rss: int) -> dict:
    lat = bucket["lat"]
    q = statistics.quantiles(lat, n=100) if len(lat) > 2 else [float("nan")] * 99
    return {
        "requests_per_s": len(lat) / window_s,
        "errors": bucket["errors"],
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "rss_mb": rss / 2**20,
    }


def judge(windows: list[dict]) -> tuple[bool, list[str]]:
    """Whether a soak passed, and why: no errors, RSS grown less than 10% from the first window
    to the last, and (judged where there are 6 windows or more) the p99 of the last third of
    the windows no more than twice that of the first third, past the first window, which holds
    the warm-up."""
    errors = sum(w["errors"] for w in windows)
    first, last = windows[0], windows[-1]
    growth = (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"]
    p99s = [w["p99_ms"] for w in windows]
    lines = [
        f"soak: {len(windows)} windows, {errors} errors; p99 first {first['p99_ms']:.1f} ms, "
        f"last {last['p99_ms']:.1f} ms, max {max(p99s):.1f} ms; RSS {first['rss_mb']:.0f} -> "
        f"{last['rss_mb']:.0f} MB ({growth:+.1%})"
    ]
    stable = True
    if len(windows) >= 6:
        third = len(windows) // 3
        early = statistics.median(p99s[1 : 1 + third])
        late = statistics.median(p99s[-third:])
        stable = late <= 2 * early
        lines.append(
            f"p99 median of the first third {early:.1f} ms, of the last third {late:.1f} ms"
        )
    else:
        lines.append(f"p99 stability not judged: {len(windows)} windows, fewer than 6")
    return errors == 0 and growth < 0.10 and stable, lines


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path(".tuneserve"))
    p.add_argument(
        "--model",
        required=True,
        help="a text-classification model, or an encoder (zero-shot, labels positive/negative)",
    )
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--share", type=float, default=0.8, help="of the measured capacity")
    p.add_argument("--window", type=float, default=30.0, help="seconds a reported window")
    p.add_argument(
        "--capacity-s", type=float, default=8.0, help="seconds each of the 3 capacity runs"
    )
    return p.parse_args()


def main() -> int:
    args = _args()
    home = args.home.resolve()
    manifest = artifacts.read_manifest(artifacts.model_dir(home, args.model))
    # a base encoder classifies zero-shot: it needs candidate labels
    extra = {"labels": ["positive", "negative"]} if manifest.task == "feature-extraction" else {}
    port = free_port()
    env = {**os.environ, "TUNESERVE_HOME": str(home), "TUNESERVE_PORT": str(port)}
    (home / "bench").mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "service.cli", "run"]
    server = Server(cmd, env, f"http://127.0.0.1:{port}/readyz", home / "bench" / "soak.log")
    try:
        url = f"http://127.0.0.1:{port}/v1/classify"
        # the median of three short measurements: one can land in a lull of a shared machine
        runs = [
            asyncio.run(load(url, [args.model], 1, 32, args.capacity_s, texts(), extra))
            for _ in range(3)
        ]
        capacity = statistics.median(r["requests_per_s"] for r in runs)
        rate, seconds = capacity * args.share, args.minutes * 60
        print(
            f"capacity {capacity:.1f} req/s at concurrency 32; soaking at {rate:.1f} req/s "
            f"({args.share:.0%}) for {seconds:.0f} s",
            flush=True,
        )
        window = min(args.window, seconds / 2)
        windows = asyncio.run(
            steady(url, args.model, rate, seconds, window, server.proc.pid, extra)
        )
    finally:
        server.stop()
    ok, lines = judge(windows)
    print("\n" + "\n".join(lines))
    print(
        f"idle keep-alive connections found closed by the server and reopened: {Connection.reconnects}"
    )
    print("PASS" if ok else "FAIL: errors, RSS grew 10% or more, or p99 more than doubled")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
