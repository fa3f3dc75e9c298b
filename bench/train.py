"""Training throughput: a plain single-process PyTorch loop vs TorchTrainer, 1 and 2 workers.

    python bench/train.py [--home .tuneserve] [--steps 60] [--rows 2000]

Same model (the base encoder with a classification head), same data (SST-2 rows if
../shared/datasets is there, else generated sentences), same batch size, sequence length,
optimizer and number of steps. Samples/s counts training steps only (not evaluation, not
checkpoints), measured the same way in all three. Both runs use every core: the plain loop and
the 1-worker run with 2 torch threads, each of 2 workers with 1. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from service.cli.local_ray import local_ray_env
from service.settings import Settings
from training import artifacts
from training.config import FinetuneSpec
from training.encoders import ensure_base
from training.tasks import ClassificationTask, load_tokenizer

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def data_file(out: Path, rows: int) -> Path:
    src = DATASETS / "sst2" / "train.jsonl"
    if src.is_file():
        with src.open() as f:
            lines = [next(f) for _ in range(rows)]
    else:
        rng = random.Random(0)
        words = [
            "good",
            "bad",
            "film",
            "plot",
            "actor",
            "boring",
            "great",
            "dull",
            "moving",
            "story",
        ]
        lines = [
            json.dumps({"text": " ".join(rng.choices(words, k=12)), "label": str(i % 2)}) + "\n"
            for i in range(rows)
        ]
    out.write_text("".join(lines))
    return out


def plain_loop(spec: FinetuneSpec, home: Path, threads: int) -> float:
    """The same model, batches and optimizer as the Ray loop, without Ray."""
    from training.prepare import read_data

    torch.set_num_threads(threads)
    torch.manual_seed(spec.hyperparameters.seed)
    hp = spec.hyperparameters
    base = artifacts.model_dir(home, spec.base_model)
    tok = load_tokenizer(base / "tokenizer", hp.max_seq_length)
    train, _ = read_data(spec)
    task = ClassificationTask(spec, tok, train.label_names)
    model = task.build_model(base / "hf").train()
    feats = task.features(train.texts, train.labels)
    loader = DataLoader(feats, batch_size=hp.batch_size, shuffle=True, collate_fn=task.collate)
    opt = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
    samples, seconds, step = 0, 0.0, 0
    while step < hp.max_steps:
        for batch in loader:
            t = time.monotonic()
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            seconds += time.monotonic() - t
            samples += len(batch["input_ids"])
            step += 1
            if step >= hp.max_steps:
                break
    return samples / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    args = p.parse_args()
    home = Settings(**({"home": args.home} if args.home else {})).home
    ensure_base(home)
    cores = os.cpu_count() or 2
    work = home / "bench"
    work.mkdir(exist_ok=True)
    train_file = data_file(work / "train.jsonl", args.rows)

    def spec(run_id: str, workers: int) -> FinetuneSpec:
        return FinetuneSpec(
            run_id=run_id,
            task="text-classification",
            train_file=train_file,
            export=False,
            validation_split=0.05,
            hyperparameters={
                "batch_size": args.batch_size,
                "max_seq_length": args.max_length,
                "max_steps": args.steps,
                "log_every_steps": 1000,
                "warmup_ratio": 0,
            },
            scaling={"num_workers": workers, "cpus_per_worker": cores / workers},
        )

    tmp = local_ray_env()  # before anything imports ray
    rows = [("plain PyTorch loop", 1, plain_loop(spec("plain", 1), home, cores))]
    import ray

    from training.run import run

    ray.init(num_cpus=cores, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        for workers in (1, 2):
            run_id = f"bench-{workers}w-{int(time.time())}"
            summary = run(spec(run_id, workers), home)
            rows.append(
                (
                    f"TorchTrainer, {workers} worker{'s' if workers > 1 else ''}",
                    workers,
                    summary["final"]["train_samples_per_s"],
                )
            )
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{args.steps} steps, batch {args.batch_size}/worker, length {args.max_length}, {cores} cores\n"
    )
    print("| loop | workers | samples/s | vs plain |\n|---|---:|---:|---:|")
    for name, workers, rate in rows:
        print(f"| {name} | {workers} | {rate:.1f} | {rate / rows[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
