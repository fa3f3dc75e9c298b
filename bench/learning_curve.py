"""What fine-tuning buys, by amount of data: `base` zero-shot, the head method and the full
method, on four real classification sets.

    python bench/learning_curve.py [--home .tuneserve] [--sizes 8 32 128 512 2048]
        [--seeds 3] [--full-seeds 1] [--no-full]

For SST-2 (its validation split as the test set: it has no test split), TREC questions, SMS
spam and movie sentiment: training sets of N rows a label (every row of a label that has
fewer) drawn from each set's train split, nested (each seed's 8 rows are in its 32), and
accuracy on the test split of
- zero-shot: `base` with the label names through the zero-shot template, as the service does;
- head: training/head_run.py's method (cross-validated strength, fitted on the rows);
- full: a real run (training/run.py, Ray Train, early stopping, export), scored through
  the exported graph the service would serve; under 128 rows a label it first asks
  cross-validation whether training pays (training/cv.py) and makes a head variant where
  it does not (the "full: chosen" column says "head"), scored through base's vectors.
All three see the same rows and the same test set; the head embeds with `base`'s served graph.
Prints a table (mean over seeds, and the spread), writes bench/results/learning_curve.json and
an SVG plot, and says at which size the full method first beats the head on every set (the
crossover `"auto"` uses: training/config.py HEAD_BELOW_ROWS_PER_CLASS). Skips with a message
when ../shared/datasets is absent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import line_charts, markdown_table
from service.cli.local_ray import local_ray_env
from service.inference.models import load_model
from service.settings import Settings
from training import artifacts
from training.artifacts import HEAD_FILE
from training.baseline import label_sentences
from training.config import FinetuneSpec, auto_epochs
from training.data import ClassificationData, read_classification
from training.embed import Embedder
from training.encoders import ensure_base
from training.heads import L2_GRID, Head, choose_and_fit, prototype_head

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results"
SETS = {
    "SST-2": ("sst2/train.jsonl", "sst2/validation.jsonl"),
    "TREC": ("trec_questions/train.jsonl", "trec_questions/test.jsonl"),
    "SMS spam": ("sms_spam/train.jsonl", "sms_spam/test.jsonl"),
    "movie sentiment": ("movie_sentiment/train.jsonl", "movie_sentiment/test.jsonl"),
}


def draw(pool: ClassificationData, n: int, seed: int) -> list[int]:
    """Row indices: the first n of each label in a seeded order (nested across sizes)."""
    rng = np.random.default_rng(seed)
    labels = np.array(pool.labels)
    rows: list[int] = []
    for label in pool.label_names:
        rows.extend(int(i) for i in rng.permutation(np.flatnonzero(labels == label))[:n])
    return sorted(rows)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(100 * (pred == gold).mean())


class Curve:
    """One set: its pool, test data, and embeddings computed once."""

    def __init__(self, name: str, home: Path, embed: Embedder):
        train_rel, test_rel = SETS[name]
        self.name, self.home, self.embed = name, home, embed
        self.pool = read_classification(DATASETS / train_rel)
        self.test = read_classification(DATASETS / test_rel)
        self.labels = self.pool.label_names
        index = {label: i for i, label in enumerate(self.labels)}
        self.y_pool = np.array([index[x] for x in self.pool.labels])
        self.y_test = np.array([index[x] for x in self.test.labels])
        self.x_test = embed(self.test.texts)
        self.start = prototype_head(embed(label_sentences(self.labels)))
        self._x: dict[int, np.ndarray] = {}

    def zero_shot(self) -> float:
        return accuracy(self.start.predict(self.x_test), self.y_test)

    def vectors(self, rows: list[int]) -> np.ndarray:
        missing = [i for i in rows if i not in self._x]
        for i, v in zip(missing, self.embed([self.pool.texts[i] for i in missing]), strict=True):
            self._x[i] = v
        return np.stack([self._x[i] for i in rows])

    def head(self, rows: list[int], seed: int) -> tuple[float, float]:
        x, y = self.vectors(rows), self.y_pool[rows]
        started = time.perf_counter()
        head = choose_and_fit(x, y, self.start, L2_GRID, seed).head
        fit_s = time.perf_counter() - started
        return accuracy(head.predict(self.x_test), self.y_test), fit_s

    def full(self, rows: list[int], seed: int, work: Path) -> tuple[float, float, str]:
        """Accuracy, wall seconds, and what cross-validation decided: "full" (training paid
        out of fold), "head" (it did not: a head variant), "" (no cross-validation)."""
        from training.run import run

        run_id = f"lc-{self.name.replace(' ', '-').lower()}-{len(rows)}-{seed}"
        train = work / f"{run_id}.jsonl"
        with train.open("w") as f:
            for i in rows:
                f.write(json.dumps({"text": self.pool.texts[i], "label": self.pool.labels[i]}))
                f.write("\n")
        spec = FinetuneSpec(
            run_id=run_id,
            task="text-classification",
            method="full",
            train_file=train,
            hyperparameters={"epochs": auto_epochs("text-classification", len(rows)), "seed": seed},
            scaling={"cpus_per_worker": 2},
        )
        started = time.perf_counter()
        try:
            summary = run(spec, self.home, replace_model=True)
            wall = time.perf_counter() - started
            choice = self.home / "runs" / run_id / "cv" / "choice.json"
            how = "full" if choice.is_file() else ""
            folder = artifacts.model_dir(self.home, run_id)
            index = {label: i for i, label in enumerate(self.labels)}
            if summary["method"] == "head":  # served through base's graph: the same vectors
                manifest = artifacts.read_manifest(folder)
                head = Head.load(folder / manifest.files.get("head", HEAD_FILE))
                pred = np.array([index[manifest.labels[j]] for j in head.predict(self.x_test)])
                return accuracy(pred, self.y_test), wall, "head"
            results = load_model(folder, threads=2).classify(self.test.texts)
            pred = np.array([index[r["label"]] for r in results])
            return accuracy(pred, self.y_test), wall, how
        finally:
            artifacts.remove_model_dir(self.home, run_id)
            shutil.rmtree(self.home / "runs" / run_id, ignore_errors=True)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--sizes", nargs="+", type=int, default=[8, 32, 128, 512, 2048])
    p.add_argument("--seeds", type=int, default=3, help="draws for zero-shot and head")
    p.add_argument("--full-seeds", type=int, default=1, help="draws for the full method")
    p.add_argument("--no-full", action="store_true", help="skip the full method (minutes)")
    p.add_argument("--out", type=Path, default=RESULTS / "learning_curve.json")
    return p.parse_args()


def measure(curve: Curve, args, work: Path) -> list[dict]:
    rows_out = []
    zero = curve.zero_shot()
    for n in args.sizes:
        head, full, fit_s, full_s, how = [], [], [], [], []
        for seed in range(args.seeds):
            rows = draw(curve.pool, n, seed)
            acc, secs = curve.head(rows, seed)
            head.append(acc)
            fit_s.append(secs)
            if not args.no_full and seed < args.full_seeds:
                acc, secs, ended = curve.full(rows, seed, work)
                full.append(acc)
                full_s.append(secs)
                how.append(ended)
        row = {
            "set": curve.name,
            "per_label": n,
            "rows": len(draw(curve.pool, n, 0)),
            "zero_shot": zero,
            "head": statistics.mean(head),
            "head_sd": statistics.pstdev(head),
            "head_fit_s": statistics.mean(fit_s),
            "full": statistics.mean(full) if full else float("nan"),
            "full_sd": statistics.pstdev(full) if len(full) > 1 else 0.0,
            "full_s": statistics.mean(full_s) if full_s else float("nan"),
            "full_how": ", ".join(h for h in how if h),
        }
        print(json.dumps(row), flush=True)
        rows_out.append(row)
    return rows_out


def crossover(rows: list[dict]) -> int | None:
    """The smallest size a label at which full beats head on every set (and at every larger
    size measured)."""
    sizes = sorted({r["per_label"] for r in rows})
    for i, n in enumerate(sizes):
        later = [r for r in rows if r["per_label"] in sizes[i:]]
        if later and all(r["full"] > r["head"] for r in later):
            return n
    return None


def main() -> int:
    args = _args()
    missing = [p for name in args.sets for p in SETS[name] if not (DATASETS / p).is_file()]
    if missing:
        print(f"skipped: {DATASETS} lacks {missing} (the shared datasets are not shipped)")
        return 0
    local_ray_env()
    home = Settings(**({"home": args.home} if args.home else {})).home
    ensure_base(home)
    embed = Embedder(home, "base")
    work = home / "runs" / "learning-curve-data"
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        for name in args.sets:
            rows += measure(Curve(name, home, embed), args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        markdown_table(
            [
                ("set", "{set}"),
                ("rows a label", "{per_label}"),
                ("rows", "{rows}"),
                ("zero-shot %", "{zero_shot:.1f}"),
                ("head %", "{head:.1f} ± {head_sd:.1f}"),
                ("full %", "{full:.1f}"),
                ("head fit s", "{head_fit_s:.2f}"),
                ("full run s", "{full_s:.0f}"),
                ("full: chosen", "{full_how}"),
            ],
            rows,
        )
    )
    cross = crossover(rows) if not args.no_full else None
    print(f"\nfull beats head on every set from {cross} rows a label" if cross else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "crossover": cross}, indent=1))
    panels = [
        (
            name,
            {
                method: [
                    (r["per_label"], r[key]) for r in rows if r["set"] == name and r[key] == r[key]
                ]
                for method, key in (("zero-shot", "zero_shot"), ("head", "head"), ("full", "full"))
            },
        )
        for name in args.sets
    ]
    line_charts(args.out.with_suffix(".svg"), "test accuracy (%) by rows a label", panels)
    print(f"wrote {args.out} and {args.out.with_suffix('.svg')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
