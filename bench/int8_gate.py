"""What int8 does to a fine-tuned classifier, on new sentences, against what the export's
precision gate sees.

    python bench/int8_gate.py [--home .tuneserve] [--sizes 32 256] [--sets SST-2 TREC ...]

For each set and size: a full-method run on N rows a label of the train split
(training/run.py, "auto" epochs, no cross-validation, so a full model is always made), then
its fp32 and int8 graphs. Prints a table: the held-out split's accuracy and the precision
gate's (as the export measured them, in batches: what it decided on), the precision served
and the run's wall time; then each text scored alone (a batch's companions move int8's
activation scales) on the rows the run was given (held out and trained on) and on the
set's test split (new sentences), and how often the two graphs agree on the test split.
Skips with a message when ../shared/datasets
is absent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.learning_curve import DATASETS, SETS, draw
from bench.report import markdown_table
from service.cli.local_ray import local_ray_env
from service.inference.models import load_model
from service.settings import Settings
from training import artifacts
from training.config import FinetuneSpec, auto_epochs
from training.data import read_classification
from training.encoders import ensure_base


def _labels(model, texts: list[str]) -> list[str]:
    return [model.classify([t])[0]["label"] for t in texts]


def measure(home: Path, work: Path, name: str, per_label: int) -> dict:
    from training.run import run

    train_rel, test_rel = SETS[name]
    pool, test = read_classification(DATASETS / train_rel), read_classification(DATASETS / test_rel)
    rows = draw(pool, per_label, 0)
    run_id = f"gate-{name.replace(' ', '-').lower()}-{per_label}"
    train = work / f"{run_id}.jsonl"
    train.write_text(
        "".join(json.dumps({"text": pool.texts[i], "label": pool.labels[i]}) + "\n" for i in rows)
    )
    hp = {"epochs": auto_epochs("text-classification", len(rows)), "seed": 0, "cv_folds": 0}
    spec = FinetuneSpec(run_id=run_id, task="text-classification", method="full", train_file=train,
                        hyperparameters=hp, scaling={"cpus_per_worker": 2})  # fmt: skip
    started = time.perf_counter()
    try:
        run(spec, home, replace_model=True)
        run_s = time.perf_counter() - started
        folder = artifacts.model_dir(home, run_id)
        manifest = artifacts.read_manifest(folder)
        parity = manifest.parity
        assert parity is not None
        # budgets that force each precision
        fp32, int8 = load_model(folder, budget=-1e9), load_model(folder, budget=1e9)
        given = [pool.texts[i] for i in rows], np.array([pool.labels[i] for i in rows])
        out = {"set": name, "per_label": per_label, "rows": len(rows), "run_s": run_s,
               "val_fp32": parity.validation_metric["fp32"], "val_int8": parity.validation_metric["int8"],
               "export_gate_fp32": parity.gate_metric["fp32"], "export_gate_int8": parity.gate_metric["int8"],
               "export_gate_rows": parity.gate_rows, "precision": manifest.precision}  # fmt: skip
        for part, (texts, gold) in {
            "given": given,
            "test": (test.texts, np.array(test.labels)),
        }.items():
            a, b = np.array(_labels(fp32, texts)), np.array(_labels(int8, texts))
            out |= {f"{part}_fp32": 100 * float((a == gold).mean()),
                    f"{part}_int8": 100 * float((b == gold).mean()),
                    f"{part}_agree": 100 * float((a == b).mean()), f"{part}_n": len(texts)}  # fmt: skip
        return out
    finally:
        artifacts.remove_model_dir(home, run_id)
        shutil.rmtree(home / "runs" / run_id, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 256])
    args = p.parse_args()
    if not DATASETS.is_dir():
        print(f"skipped: {DATASETS} is absent (the shared datasets are not shipped)")
        return 0
    local_ray_env()
    home = Settings(**({"home": args.home} if args.home else {})).home
    ensure_base(home)
    work = home / "runs" / "int8-gate-data"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for name in args.sets:
            for n in args.sizes:
                rows.append(measure(home, work, name, n))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pair = "{%s_fp32:.1f} / {%s_int8:.1f}"
    print(markdown_table([
        ("set", "{set}"), ("rows a label", "{per_label}"), ("rows", "{rows}"),
        ("held-out % fp32 / int8", pair % ("val", "val")),
        ("gate % fp32 / int8", pair % ("export_gate", "export_gate")), ("gate rows", "{export_gate_rows}"),
        ("served", "{precision}"), ("run s", "{run_s:.0f}"),
        ("given rows alone % fp32 / int8", pair % ("given", "given")),
        ("test % fp32 / int8", pair % ("test", "test")), ("test rows", "{test_n}"),
        ("test agreement %", "{test_agree:.1f}"),
    ], rows))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
