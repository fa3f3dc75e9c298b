"""What one request costs the service, before and after direct ingress: CPU seconds a
request across every process of `tuneserve run` (Ray's included), through Serve's proxy actor
(before: still running under direct ingress, on a port of its own) and straight to the
ingress replica (after), each under `wrk` at 32 connections with one text a request; and a
profile of the ingress replica (py-spy, sampling) for each, as a table of where its time
goes.

    python bench/request_cost.py [--home .tuneserve] [--seconds 15] [--model base]

With `--compare NAME=V1,V2,...`: instead, one switch alone. The service is started once for
each value of the environment variable NAME, in the order given (alternate them: A,B,A,B),
and measured with direct ingress at 32 connections, with 1 and with 8 texts a request. For
example the tokenizer's thread pool (`TUNESERVE_TOKENIZER_THREADS=1,16`: the default is the
replica's ONNX Runtime threads, 1; the pool works across the texts of a batch).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import Server, free_port, tree, tree_cpu_s, wrk
from bench.report import markdown_table


def pid_named(root: int, name: str) -> int:
    for p in tree(root):
        try:
            if name in Path(f"/proc/{p}/cmdline").read_text():
                return p
        except OSError:
            continue
    raise RuntimeError(f"no process {name!r} under {root}")


def profile(pid: int, seconds: float, out: Path) -> list[dict]:
    """py-spy's samples of `pid` for `seconds`, folded by the function on top (its own time)
    and by our modules on the stack (time spent under them)."""
    subprocess.run(
        [str(Path(sys.executable).parent / "py-spy"), "record",
         "--pid", str(pid), "--duration", f"{seconds:.0f}", "--rate", "250", "--format", "raw",
         "--output", str(out), "--nonblocking"],
        check=True, capture_output=True,
    )  # fmt: skip
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        own[re.sub(r" \(.*?/site-packages/", " (", frames[-1])] += n
    return [{"function": f, "share": 100 * n / total} for f, n in own.most_common(12)]


def measure(url: str, service: int, body: dict, seconds: float) -> dict:
    cpu = tree_cpu_s(service)
    r = wrk(url, body, 32, seconds)
    used = tree_cpu_s(service) - cpu
    return {**r, "cpu_ms": 1000 * used / (r["requests_per_s"] * seconds)}


def start(home: Path, logs: Path, **env: str) -> tuple[Server, int]:
    port = free_port()
    env = {**os.environ, "TUNESERVE_HOME": str(home), "TUNESERVE_PORT": str(port), **env}
    server = Server([sys.executable, "-m", "service.cli", "run"], env,
                    f"http://127.0.0.1:{port}/readyz", logs / "request-cost.log")  # fmt: skip
    return server, port


def request(model: str, texts: int) -> dict:
    sentences = ["the film was a delight from start to finish", "a tedious, overlong mess",
                 "I would watch it again tomorrow", "the plot makes no sense at all"]  # fmt: skip
    body: dict = {"model": model, "inputs": [sentences[i % 4] for i in range(texts)]}
    if model == "base":
        body["labels"] = ["positive", "negative"]
    return body


def compare(args, home: Path, logs: Path) -> None:
    name, _, values = args.compare.partition("=")
    rows = []
    for value in values.split(","):
        server, port = start(home, logs, **{name: value})
        try:
            url = f"http://127.0.0.1:{port}/v1/classify"
            for texts in (1, 8):
                wrk(url, request(args.model, texts), 32, 3)  # warm
                r = measure(url, server.proc.pid, request(args.model, texts), args.seconds)
                rows.append({"value": value, "texts": texts, **r,
                             "sequences_per_s": r["requests_per_s"] * texts})  # fmt: skip
        finally:
            server.stop()
    print(markdown_table([(name, "{value}"), ("texts/request", "{texts}"),
                          ("requests/s", "{requests_per_s:.1f}"), ("sequences/s", "{sequences_per_s:.1f}"),
                          ("p50 ms", "{p50_ms:.1f}"), ("CPU ms a request, all processes", "{cpu_ms:.2f}")],
                         rows))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path(".tuneserve"))
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--model", default="base")
    p.add_argument("--compare", help="NAME=V1,V2,...: an environment variable's values")
    args = p.parse_args()
    home = args.home.resolve()
    logs = home / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    if args.compare:
        return compare(args, home, logs)
    server, port = start(home, logs)
    body = request(args.model, 1)
    try:
        time.sleep(3)
        found = re.search(r"HTTP port: (\d+)", (logs / "request-cost.log").read_text())
        assert found, "no proxy port in the service's log"
        ingress = pid_named(server.proc.pid, "ServeReplica:tuneserve:ingress")
        rows, tables = [], {}
        for name, url_port in (("through the proxy", found.group(1)), ("direct ingress", port)):
            url = f"http://127.0.0.1:{url_port}/v1/classify"
            rows.append({"path": name, **measure(url, server.proc.pid, body, args.seconds)})
            # the profile is taken under the same load, from a second wrk run
            load = threading.Thread(target=wrk, args=(url, body, 32, args.seconds))
            load.start()
            tables[name] = profile(ingress, args.seconds - 2, logs / f"profile-{url_port}.txt")
            load.join()
    finally:
        server.stop()
    print(markdown_table([("path", "{path}"), ("requests/s", "{requests_per_s:.1f}"),
                          ("p50 ms", "{p50_ms:.1f}"), ("CPU ms a request, all processes", "{cpu_ms:.2f}")],
                         rows))  # fmt: skip
    for name, table in tables.items():
        print(f"\nthe ingress replica, {name}: where its samples were (own time)\n")
        print(markdown_table([("function", "{function}"), ("% of samples", "{share:.1f}")], table))


if __name__ == "__main__":
    main()
