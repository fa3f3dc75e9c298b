"""What the service benchmarks share: servers started and stopped by PID, a lean keep-alive
HTTP client on asyncio streams, a closed-loop load generator, the memory of a process tree."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
REPO = Path(__file__).resolve().parents[1]


def texts() -> list[str]:
    """Real sentences (SST-2 validation) where the shared datasets are, else our own."""
    path = DATASETS / "sst2" / "validation.jsonl"
    if path.is_file():
        return [json.loads(line)["text"] for line in path.open()]
    from training.export import PARITY_TEXTS

    return PARITY_TEXTS


def free_port() -> int:
    """A port for a service under test (see service.cli.local_ray.free_service_port)."""
    from service.cli.local_ray import free_service_port

    return free_service_port()


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
    field: str = "inputs",
) -> dict:
    """Closed-loop load: `concurrency` clients, each sending the next request when the last
    is answered, for `seconds`; `per_request` texts from `pool` under `field` (`input` for
    /v1/embeddings)."""
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
                    {"model": model, field: rng.sample(pool, per_request), **(extra or {})}
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
    first = {"model": models[0], field: pool[:per_request], **(extra or {})}
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


def tree(pid: int) -> list[int]:
    """A process and all its descendants (the service's Ray processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and its descendants have used so far."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


def wrk(url: str, body: dict, connections: int, seconds: float) -> dict:
    """The same POST, over and over, from `wrk` (a C load generator: little CPU taken from
    the server's cores); its requests/s and latency percentiles. Needs Debian's `wrk`."""
    import shutil
    import tempfile

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package `wrk`)")
    script = (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", lua.name, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    def ms(label: str) -> float:
        value = next(line.split()[1] for line in out.splitlines() if line.strip().startswith(label))
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        unit = next(u for u in ("us", "ms", "s") if value.endswith(u))
        return float(value[: -len(unit)]) * scale[unit]

    errors = sum(int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line)
    rps = float(next(line.split()[1] for line in out.splitlines() if "Requests/sec" in line))
    return {"requests_per_s": rps, "p50_ms": ms("50%"), "p99_ms": ms("99%"), "errors": errors}
