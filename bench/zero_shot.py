"""Zero-shot accuracy of the base encoder on real sentiment data, fp32 against int8.

    python bench/zero_shot.py [--home .tuneserve]

Labels negative/positive on ../shared/datasets/sst2/validation.jsonl and
movie_sentiment/test.jsonl, through the same runtime code the service uses, for the default
template and two others, at each exported precision. The rule for `base`: serve int8 only if it
stays within 1 point of fp32 with the default template. Skips with a message when the datasets
are absent (they are not part of the project).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from service.inference.models import DEFAULT_TEMPLATE, EncoderModel
from service.inference.postprocess import zero_shot_scores
from service.inference.session import Session
from service.settings import Settings
from training import artifacts
from training.encoders import ensure_base
from training.onnx import quantize_int8

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = {
    "SST-2 validation": "sst2/validation.jsonl",
    "movie_sentiment test": "movie_sentiment/test.jsonl",
}
LABELS = ["negative", "positive"]
TEMPLATES = [DEFAULT_TEMPLATE, "{}", "This text is {}."]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=None)
    args = p.parse_args()
    missing = [rel for rel in SETS.values() if not (DATASETS / rel).is_file()]
    if missing:
        print(f"skipped: {DATASETS} lacks {missing} (the shared datasets are not shipped)")
        return 0
    home = Settings(**({"home": args.home} if args.home else {})).home
    ensure_base(home)
    folder = artifacts.model_dir(home, "base")
    manifest = artifacts.read_manifest(folder)
    alt = folder / "onnx" / "bench.int8-matmul-only.onnx"
    if not alt.exists():
        quantize_int8(folder / manifest.onnx_file("fp32"), alt, attention=False)
    variants = {
        "fp32": manifest.model_copy(update={"precision": "fp32"}),
        "int8 (served)": manifest.model_copy(update={"precision": "int8"}),
        "int8 matmul-only": manifest.model_copy(
            update={
                "precision": "int8",
                "files": {**manifest.files, "onnx_int8": str(alt.relative_to(folder))},
            }
        ),
    }
    data = {}
    for name, rel in SETS.items():
        with (DATASETS / rel).open() as f:
            rows = [json.loads(line) for line in f]
        data[name] = ([r["text"] for r in rows], np.array([LABELS.index(r["label"]) for r in rows]))

    results: dict[tuple[str, str, str], float] = {}
    for vname, m in variants.items():
        model = EncoderModel(Session(folder, m))
        for dname, (texts, y) in data.items():
            emb = model.embed(texts)
            for tpl in TEMPLATES:
                lab = model.embed([tpl.replace("{}", label) for label in LABELS])
                results[(vname, dname, tpl)] = float(
                    (zero_shot_scores(emb, lab).argmax(1) == y).mean()
                )

    report(results, data, variants, manifest.precision)
    return 0


def report(results: dict, data: dict, variants: dict, served: str) -> None:
    print(
        f"Zero-shot accuracy, labels {LABELS} ({', '.join(f'{k}: {len(v[1])} rows' for k, v in data.items())})\n"
    )
    head = "| precision | template | " + " | ".join(data) + " |"
    print(head + "\n|---|---|" + "---:|" * len(data))
    for vname in variants:
        for tpl in TEMPLATES:
            cells = " | ".join(f"{100 * results[(vname, d, tpl)]:.1f}%" for d in data)
            print(
                f"| {vname} | `{tpl}`{' (default)' if tpl == DEFAULT_TEMPLATE else ''} | {cells} |"
            )
    worst = max(
        results[("fp32", d, DEFAULT_TEMPLATE)] - results[("int8 (served)", d, DEFAULT_TEMPLATE)]
        for d in data
    )
    verdict = "within" if worst <= 0.01 else "NOT within"
    print(
        f"\nserved int8 vs fp32, default template: worst drop {100 * worst:.1f} points: {verdict} 1 point "
        f"(manifest serves {served})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
