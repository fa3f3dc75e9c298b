"""A head job against a full job, through the job API, on the same 1,000 labelled rows.

    python bench/head_job.py [--home .tuneserve] [--rows 1000]

Starts tuneserve on 127.0.0.1 (by PID, stopped after), uploads SST-2 training rows (500 a
label; generated sentences where ../shared/datasets is absent) with the openai SDK, and runs
one job with `training_method: head`, then one with `full`, each with nothing else set. Wall
time is from the create call to the job's `succeeded` (the job, not the fit: queueing, Ray
Jobs, embedding, export); the report is each job's validation score beside `base` zero-shot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import DATASETS, Server, free_port
from bench.report import markdown_table


def training_rows(path: Path, rows: int) -> Path:
    src = DATASETS / "sst2" / "train.jsonl"
    picked: dict[str, list[str]] = {"negative": [], "positive": []}
    if src.is_file():
        for line in src.open():
            row = json.loads(line)
            if len(picked[row["label"]]) < rows // 2:
                picked[row["label"]].append(row["text"])
    else:
        for i in range(rows // 2):
            picked["negative"].append(f"a dull tedious mess, part {i}")
            picked["positive"].append(f"a wonderful film i loved, part {i}")
    with path.open("w") as f:
        for a, b in zip(picked["negative"], picked["positive"], strict=False):
            f.write(json.dumps({"text": a, "label": "negative"}) + "\n")
            f.write(json.dumps({"text": b, "label": "positive"}) + "\n")
    return path


def run_job(client, file_id: str, method: str) -> dict:
    started = time.perf_counter()
    job = client.fine_tuning.jobs.create(
        model="base", training_file=file_id, extra_body={"training_method": method}
    )
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    wall = time.perf_counter() - started
    if job.status != "succeeded":
        raise RuntimeError(f"{method} job {job.id} {job.status}: {job.error}")
    report = (job.model_extra or {}).get("report") or {}
    return {
        "method": method,
        "wall_s": wall,
        "accuracy": 100 * report["metrics"]["accuracy"],
        "zero_shot": 100 * report["baseline"]["accuracy"],
        "model": job.fine_tuned_model,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path(".tuneserve"))
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--methods", nargs="+", default=["head", "full"])
    args = p.parse_args()
    from openai import OpenAI

    port = free_port()
    env = {**os.environ, "TUNESERVE_HOME": str(args.home.resolve()), "TUNESERVE_PORT": str(port)}
    logs = Path(tempfile.mkdtemp(prefix="head-job-"))
    server = Server(
        [sys.executable, "-m", "service.cli", "run"],
        env,
        f"http://127.0.0.1:{port}/readyz",
        logs / "service.log",
    )
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        data = training_rows(logs / "train.jsonl", args.rows)
        file_id = client.files.create(file=data.open("rb"), purpose="fine-tune").id
        rows = [run_job(client, file_id, method) for method in args.methods]
    finally:
        server.stop()
    print(
        markdown_table(
            [
                ("method", "{method}"),
                ("job wall s", "{wall_s:.1f}"),
                ("validation accuracy %", "{accuracy:.1f}"),
                ("base zero-shot %", "{zero_shot:.1f}"),
            ],
            rows,
        )
    )
    print(f"(service log: {logs / 'service.log'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
