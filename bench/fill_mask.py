"""What continued pretraining changed: the same masked sentences filled before and after a
masked-LM job on a corpus (Moby-Dick by default).

    python bench/fill_mask.py [--home .tuneserve] [--steps 150] [--corpus FILE]

"Before" is where the job starts: `base` (all-MiniLM-L6-v2) with a masked-LM head as the
run initializes it (the model ships without one: the decoder is tied to the word embeddings,
the transform layer is new), exported the way a run exports. "After" is the job's model, a
150-step run (about one pass over Moby-Dick at 128 tokens, batch 16, lr 1e-4). Both are
served by the same runtime code as /v1/fill-mask. Prints a table and saves it under
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from service.cli.local_ray import local_ray_env
from service.settings import Settings
from training import artifacts
from training.encoders import ensure_base

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
OUT = Path(__file__).resolve().parent / "results"
# our own sentences about the book's world (not lines of the corpus), one mask each
SENTENCES = [
    "Call me [MASK].",
    "The captain of the Pequod was [MASK].",
    "The harpooneer threw his [MASK] at the whale.",
    "Ahab lost his [MASK] to the white whale.",
    "The ship sailed from [MASK] on a cold December morning.",
    "The sailors climbed the [MASK] to look for whales.",
    "The great white [MASK] rose out of the sea.",
    "They boiled the blubber to make [MASK].",
]


def before_model(home: Path, model_id: str, seed: int) -> None:
    """`base` with the masked-LM head a run starts from, exported as a run exports it."""
    import torch
    from transformers import AutoModelForMaskedLM

    from training.export import export_encoder
    from training.fill_mask_graph import export_fill_mask

    hf = artifacts.model_dir(home, "base") / artifacts.HF_DIR
    torch.manual_seed(seed)
    mlm = AutoModelForMaskedLM.from_pretrained(str(hf), attn_implementation="eager").eval()
    tok_dir = artifacts.model_dir(home, "base") / artifacts.TOKENIZER_DIR
    for f in tok_dir.iterdir():  # the export reads the tokenizer from the weights' folder
        (hf / f.name).write_bytes(f.read_bytes())
    export_encoder(hf, home, model_id, max_seq_length=128, replace=True,
                   extra=lambda out, tok: export_fill_mask(mlm, out, tok, 128))  # fmt: skip


def pretrain(home: Path, corpus: Path, run_id: str, steps: int) -> dict:
    local_ray_env()
    import ray

    from training.config import PretrainSpec
    from training.run import run

    spec = PretrainSpec(
        run_id=run_id,
        train_file=corpus,
        hyperparameters={
            "batch_size": 16,
            "max_seq_length": 128,
            "max_steps": steps,
            "learning_rate": 1e-4,
            "log_every_steps": 50,
        },
    )
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        t = time.perf_counter()
        summary = run(spec, home, replace_model=True)
        summary["seconds"] = time.perf_counter() - t
        return summary
    finally:
        ray.shutdown()


def fills(home: Path, model_id: str) -> list[list[tuple[str, float]]]:
    from service.inference.models import load_model
    from service.inference.requests import FillMaskItem

    model = load_model(artifacts.model_dir(home, model_id))
    (out,) = model.fill_mask_many([FillMaskItem(SENTENCES, 3)])
    return [[(c["token_str"], c["score"]) for c in masks[0]] for masks in out]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--corpus", type=Path, default=DATASETS / "corpus" / "moby_dick.txt.gz")
    p.add_argument("--run-id", default="moby-mlm")
    args = p.parse_args()
    if not args.corpus.is_file():
        raise SystemExit(f"{args.corpus} is absent: pass --corpus (one document a line)")
    home = Settings(**({"home": args.home} if args.home else {})).home
    ensure_base(home)
    before_model(home, f"{args.run_id}-start", seed=42)
    summary = pretrain(home, args.corpus, args.run_id, args.steps)
    before, after = fills(home, f"{args.run_id}-start"), fills(home, args.run_id)
    shown = lambda xs: ", ".join(f"{t} {s:.2f}" for t, s in xs)  # noqa: E731
    lines = [
        f"{args.steps} steps on {args.corpus.name} in {summary['seconds']:.0f} s; held-out "
        f"masked accuracy {summary['metrics'].get('masked_accuracy', 0):.3f}, perplexity "
        f"{summary['metrics'].get('perplexity', 0):.0f}",
        "",
        "| sentence | before: top 3 | after: top 3 |",
        "|---|---|---|",
        *(
            f"| {s} | {shown(b)} | {shown(a)} |"
            for s, b, a in zip(SENTENCES, before, after, strict=True)
        ),
    ]
    print("\n".join(lines))
    OUT.mkdir(exist_ok=True)
    (OUT / "fill_mask.md").write_text("\n".join(lines) + "\n")
    (OUT / "fill_mask.json").write_text(
        json.dumps({"before": before, "after": after, "summary": str(summary)}, indent=1)
    )


if __name__ == "__main__":
    main()
