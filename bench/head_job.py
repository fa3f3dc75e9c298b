"""A head job against a full job, through the job API, on the same 1,000 labelled rows; or
(--qa) an extractive-QA job on squad_new_wiki with nothing set but the files and the task.

    python bench/head_job.py [--home .tuneserve] [--rows 1000]
    python bench/head_job.py --qa

Starts tuneserve on 127.0.0.1 (by PID, stopped after), uploads SST-2 training rows (500 a
label; generated sentences where ../shared/datasets is absent) with the openai SDK, and runs
one job with `training_method: head`, then one with `full`, each with nothing else set. Wall
time is from the create call to the job's `succeeded` (the job, not the fit: queueing, Ray
Jobs, embedding, export); the report is each job's validation score beside `base` zero-shot.
The service runs with its model replica holding no CPU and a job worker holding both cores
(TUNESERVE_MODEL_REPLICA_CPUS=0, TUNESERVE_JOB_CPUS_PER_WORKER=2), as a training box would.
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


def run_job(client, **create) -> dict:
    """Create a job, wait for it to end, and return its wall time and report."""
    started = time.perf_counter()
    job = client.fine_tuning.jobs.create(model="base", **create)
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    wall = time.perf_counter() - started
    if job.status != "succeeded":
        raise RuntimeError(f"job {job.id} {job.status}: {job.error}")
    extra = job.model_extra or {}
    report = extra.get("report") or {}
    key = "accuracy" if "accuracy" in report["metrics"] else "f1"
    scale = 100 if key == "accuracy" else 1
    return {
        "method": extra.get("training_method") or job.model_extra.get("task"),
        "epochs": job.hyperparameters.n_epochs,
        "wall_s": wall,
        "metric": key,
        "score": scale * report["metrics"][key],
        "zero_shot": scale * report["baseline"][key],
        "model": job.fine_tuned_model,
    }


def qa_jobs(client) -> list[dict]:
    files = {}
    for split in ("train", "validation"):
        with (DATASETS / "squad_new_wiki" / f"{split}.json").open("rb") as f:
            files[split] = client.files.create(file=f, purpose="fine-tune").id
    job = run_job(
        client,
        training_file=files["train"],
        validation_file=files["validation"],
        extra_body={"task": "extractive-qa"},
    )
    return [job]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path(".tuneserve"))
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--methods", nargs="+", default=["head", "full"])
    p.add_argument("--qa", action="store_true", help="the QA job instead")
    args = p.parse_args()
    if args.qa and not (DATASETS / "squad_new_wiki" / "train.json").is_file():
        print(f"skipped: {DATASETS} lacks squad_new_wiki (the shared datasets are not shipped)")
        return 0
    from openai import OpenAI

    port = free_port()
    env = {
        **os.environ,
        "TUNESERVE_HOME": str(args.home.resolve()),
        "TUNESERVE_PORT": str(port),
        "TUNESERVE_MODEL_REPLICA_CPUS": "0",
        "TUNESERVE_JOB_CPUS_PER_WORKER": str(os.cpu_count() or 1),
    }
    logs = Path(tempfile.mkdtemp(prefix="head-job-"))
    server = Server(
        [sys.executable, "-m", "service.cli", "run"],
        env,
        f"http://127.0.0.1:{port}/readyz",
        logs / "service.log",
    )
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        if args.qa:
            rows = qa_jobs(client)
        else:
            data = training_rows(logs / "train.jsonl", args.rows)
            file_id = client.files.create(file=data.open("rb"), purpose="fine-tune").id
            rows = [
                run_job(client, training_file=file_id, extra_body={"training_method": m})
                for m in args.methods
            ]
    finally:
        server.stop()
    print(
        markdown_table(
            [
                ("method", "{method}"),
                ("epochs", "{epochs}"),
                ("job wall s", "{wall_s:.1f}"),
                ("validation metric", "{metric}"),
                ("the job's model", "{score:.2f}"),
                ("base zero-shot", "{zero_shot:.2f}"),
            ],
            rows,
        )
    )
    print(f"(service log: {logs / 'service.log'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
