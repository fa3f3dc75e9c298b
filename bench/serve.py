"""Service throughput and latency: tuneserve vs a plain FastAPI + transformers service.

    python bench/serve.py --home .tuneserve --model sst2-8k [--seconds 8]

Starts each server on 127.0.0.1 in turn, by PID, and stops it after: tuneserve in two replica
shapes (2 replicas x 1 ONNX Runtime thread, 1 replica x 2 threads) and the baseline
(bench/baseline_app.py: uvicorn, `transformers.pipeline`, PyTorch, the same fine-tuned
model). A bounded async load generator sends `/v1/classify` requests at concurrency 1, 8 and
32 with 1 and 8 texts a request, for `--seconds` each, and reports requests/s, sequences/s and
p50/p95/p99 latency. Last, 20 variants of the model under round-robin traffic against one
variant, on the first shape. Prints markdown tables; `--json` writes the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from training import artifacts

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
REPO = Path(__file__).resolve().parents[1]


def texts() -> list[str]:
    path = DATASETS / "sst2" / "validation.jsonl"
    if path.is_file():
        return [json.loads(line)["text"] for line in path.open()]
    from training.export import PARITY_TEXTS

    return PARITY_TEXTS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ok(url: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready after {timeout_s}s")


class Server:
    """A server process we start and stop by its PID."""

    def __init__(self, cmd: list[str], env: dict, ready_url: str, log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO
        )
        try:
            wait_ok(ready_url)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: the load generator shares the
    machine with the servers it measures, so each request should cost it as little CPU as
    possible (an HTTP client library costs several times more per request)."""

    def __init__(self, url: str):
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        self.host, _, port = hostport.partition(":")
        self.port, self.path = int(port or 80), "/" + path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    # idle keep-alive connections the server had closed, found when reused and sent again on
    # a new connection (as HTTP clients do: nothing of the request had been answered)
    reconnects = 0

    async def post(self, body: bytes) -> tuple[int, bytes]:
        reused = self.writer is not None
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (self.path.encode(), self.host.encode(), self.port, len(body), body)
        )
        try:
            first = await self.reader.readline()
        except ConnectionError:
            first = b""
        if not first and reused:  # closed while idle (the server's keep_alive_timeout_s)
            self.close()
            Connection.reconnects += 1
            return await self.post(body)
        status = int(first.split()[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts = []
            while size := int((await self.reader.readline()).strip(), 16):
                parts.append(await self.reader.readexactly(size + 2))
            await self.reader.readline()
            data = b"".join(p[:-2] for p in parts)
        else:
            data = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(
    url: str,
    models: list[str],
    per_request: int,
    concurrency: int,
    seconds: float,
    pool: list[str],
    extra: dict | None = None,
) -> dict:
    rng = random.Random(concurrency * 100 + per_request)
    latencies: list[float] = []
    errors = 0
    counter = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors, counter
        conn = Connection(url)
        try:
            while time.monotonic() < deadline:
                model = models[counter % len(models)]
                counter += 1
                body = json.dumps(
                    {"model": model, "inputs": rng.sample(pool, per_request), **(extra or {})}
                )
                t = time.perf_counter()
                try:
                    status, _ = await conn.post(body.encode())
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    conn.close()
                    status = 0
                if status == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1
        finally:
            conn.close()

    warm = Connection(url)
    first = {"model": models[0], "inputs": pool[:per_request], **(extra or {})}
    await warm.post(json.dumps(first).encode())
    warm.close()
    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 2 else [float("nan")] * 99
    return {
        "requests_per_s": len(latencies) / elapsed,
        "seqs_per_s": len(latencies) * per_request / elapsed,
        "p50_ms": q[49] * 1000,
        "p95_ms": q[94] * 1000,
        "p99_ms": q[98] * 1000,
        "requests": len(latencies),
        "errors": errors,
    }


def variants(home: Path, model: str, n: int) -> list[str]:
    """n copies of `model` under new ids, sharing its files by symlink."""
    src = artifacts.model_dir(home, model)
    manifest = artifacts.read_manifest(src)
    ids = []
    for i in range(n):
        vid = f"{model}-variant-{i:02d}"
        dst = artifacts.model_dir(home, vid)
        if not dst.exists():
            with artifacts.staged_model_dir(home, vid) as stage:
                for sub in ("tokenizer", "onnx", "hf"):
                    (stage / sub).symlink_to(src / sub, target_is_directory=True)
                artifacts.write_manifest(stage, manifest.model_copy(update={"id": vid}))
        ids.append(vid)
    return ids


def table(rows: list[dict]) -> str:
    out = [
        "| server | texts/request | concurrency | requests/s | sequences/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['server']} | {r['per_request']} | {r['concurrency']} | {r['requests_per_s']:.1f} | "
            f"{r['seqs_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |"
        )
    return "\n".join(out)


PALETTE = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e"]


def plot(rows: list[dict], path: Path, title: str) -> None:
    """An SVG of requests/s and p50 latency against concurrency, one line per server, for 1
    and 8 texts a request (hand-written SVG: no plotting library to install)."""
    servers = [s for s in dict.fromkeys(r["server"] for r in rows) if "round-robin" not in s]
    panels = [
        (k, metric, label)
        for k in (1, 8)
        for metric, label in (("requests_per_s", "requests/s"), ("p50_ms", "p50 latency, ms"))
    ]
    w, h, pad = 330, 230, 48
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{2 * h + 50 + 16 * len(servers)}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{w}" y="18" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for i, (k, metric, label) in enumerate(panels):
        x0, y0 = (i % 2) * w, 30 + (i // 2) * h
        points = {
            s: sorted(
                (r["concurrency"], r[metric])
                for r in rows
                if r["server"] == s and r["per_request"] == k
            )
            for s in servers
        }
        top = max((v for pts in points.values() for _, v in pts), default=1) * 1.1 or 1
        concurrencies = sorted({c for pts in points.values() for c, _ in pts})

        def px(c, _c=concurrencies, _x0=x0):
            return _x0 + pad + (w - pad - 35) * _c.index(c) / max(1, len(_c) - 1)

        def py(v, _y0=y0, _top=top):
            return _y0 + h - pad + 10 - (h - pad - 20) * v / _top

        out.append(
            f'<text x="{x0 + w / 2}" y="{y0 + 12}" text-anchor="middle">{label}, '
            f"{k} text{'s' if k > 1 else ''} a request</text>"
        )
        base_y = py(0)
        out.append(
            f'<line x1="{x0 + pad}" y1="{base_y}" x2="{x0 + w - 35}" y2="{base_y}" stroke="#444"/>'
        )
        out.append(
            f'<line x1="{x0 + pad}" y1="{base_y}" x2="{x0 + pad}" y2="{py(top)}" stroke="#444"/>'
        )
        for frac in (0, 0.5, 1):
            v = top / 1.1 * frac
            out.append(f'<text x="{x0 + pad - 4}" y="{py(v) + 4}" text-anchor="end">{v:.0f}</text>')
        for c in concurrencies:
            out.append(f'<text x="{px(c)}" y="{base_y + 14}" text-anchor="middle">c={c}</text>')
        for j, pts in enumerate(points.values()):
            color = PALETTE[j % len(PALETTE)]
            line = " ".join(f"{px(c):.1f},{py(v):.1f}" for c, v in pts)
            out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
            for c, v in pts:
                out.append(f'<circle cx="{px(c):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
    for j, s in enumerate(servers):
        y, x = 2 * h + 50 + 16 * j, pad
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{PALETTE[j]}"/>')
        out.append(f'<text x="{x + 14}" y="{y}">{s}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path(".tuneserve"))
    p.add_argument("--model", required=True, help="a fine-tuned text-classification model id")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--variants", type=int, default=20)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    home = args.home.resolve()
    manifest = artifacts.read_manifest(artifacts.model_dir(home, args.model))
    assert manifest.task == "text-classification", "--model must be a fine-tuned classifier"
    pool = texts()
    grid = [(k, c) for k in (1, 8) for c in (1, 8, 32)]
    cores = os.cpu_count() or 2
    logs = home / "bench"
    logs.mkdir(exist_ok=True)
    variant_ids = variants(home, args.model, args.variants)
    rows: list[dict] = []

    def run_grid(name: str, url: str) -> None:
        for k, c in grid:
            r = asyncio.run(load(url, [args.model], k, c, args.seconds, pool))
            rows.append({"server": name, "per_request": k, "concurrency": c, **r})
            print(
                f"{name} k={k} c={c}: {r['requests_per_s']:.1f} req/s p50 {r['p50_ms']:.1f} ms",
                flush=True,
            )

    shapes = [("tuneserve 2x1 thread", cores, 1), ("tuneserve 1x2 threads", 1, cores)]
    for i, (name, replicas, threads) in enumerate(shapes):
        port = free_port()
        env = {
            **os.environ,
            "TUNESERVE_HOME": str(home),
            "TUNESERVE_PORT": str(port),
            "TUNESERVE_MODEL_REPLICAS": str(replicas),
            "TUNESERVE_ORT_THREADS": str(threads),
            "TUNESERVE_MODEL_REPLICA_CPUS": str(cores / replicas),
            "TUNESERVE_MAX_MODELS_PER_REPLICA": str(args.variants + 4),
        }
        server = Server(
            [sys.executable, "-m", "service.cli", "run"],
            env,
            f"http://127.0.0.1:{port}/readyz",
            logs / f"serve-{i}.log",
        )
        try:
            url = f"http://127.0.0.1:{port}/v1/classify"
            run_grid(name, url)
            if i == 0:
                # 20 variants round-robin at concurrency 32, 1 text: warm every variant first
                asyncio.run(load(url, variant_ids, 1, 4, max(2.0, args.variants * 0.3), pool))
                for label, models in (
                    ("1 variant", [args.model]),
                    (f"{args.variants} variants", variant_ids),
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

    port = free_port()
    env = {
        **os.environ,
        "BASELINE_MODEL": str(artifacts.model_dir(home, args.model)),
        "BASELINE_THREADS": str(cores),
    }
    server = Server(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.baseline_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env,
        f"http://127.0.0.1:{port}/docs",
        logs / "baseline.log",
    )
    try:
        run_grid(
            "baseline: FastAPI + transformers pipeline", f"http://127.0.0.1:{port}/v1/classify"
        )
    finally:
        server.stop()

    print(
        f"\nmodel {args.model} ({manifest.precision}), {args.seconds:.0f} s a point, {cores} cores\n"
    )
    print(table(rows))
    base = {
        (r["per_request"], r["concurrency"]): r for r in rows if r["server"].startswith("baseline")
    }
    for name, *_ in shapes:
        mine = {(r["per_request"], r["concurrency"]): r for r in rows if r["server"] == name}
        c32, c1 = mine[(1, 32)], mine[(1, 1)]
        print(
            f"\n{name}: concurrency 32, 1 text: {c32['requests_per_s'] / base[(1, 32)]['requests_per_s']:.2f}x "
            f"the baseline's requests/s; concurrency 1: p50 {c1['p50_ms']:.1f} ms vs {base[(1, 1)]['p50_ms']:.1f} ms"
        )
    one = next(r for r in rows if r["server"].endswith("1 variant round-robin"))
    many = next(r for r in rows if r["server"].endswith("variants round-robin"))
    print(
        f"{args.variants} variants round-robin: {many['requests_per_s'] / one['requests_per_s']:.2f}x "
        "the one-variant throughput"
    )
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    svg = results / "serve.svg"
    plot(rows, svg, f"tuneserve vs a FastAPI + transformers baseline, {cores} cores")
    print(f"plot: {svg}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
