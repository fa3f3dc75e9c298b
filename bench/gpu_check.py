"""The GPU path end to end, for a machine with a CUDA GPU and the project installed with the
`gpu` extra (onnxruntime-gpu):

    make gpu-check            (or: python bench/gpu_check.py [--home DIR] [--steps 20])

1. trains a classifier from `base` for a few steps on one GPU worker with bf16 (Ray Train),
   on generated sentences; 2. exports it (fp32, int8 and fp16 graphs, each with its
   validation metric); 3. loads it as a model replica does with `device="cuda"` and checks that
   the fp16 graph is served on ONNX Runtime's CUDA provider, and classifies; 4. times the fp16
   graph on CUDA against the same model in PyTorch fp32 eager on the same GPU, at batch 32 and
   128 tokens (the target: 3x or more), and prints a table. Exits non-zero when a step fails.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.cli.local_ray import local_ray_env
from training import artifacts
from training.encoders import ensure_base

BATCH, TOKENS = 32, 128
WORDS = {"positive": ["wonderful", "great", "loved", "superb"], "negative": ["dull", "awful", "boring", "mess"]}  # fmt: skip


def data(path: Path, rows: int = 256) -> Path:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(rows):
            label = "positive" if i % 2 else "negative"
            text = f"the film was {rng.choice(WORDS[label])} and the cast was {rng.choice(WORDS[label])}"
            f.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def train(home: Path, steps: int) -> str:
    local_ray_env()
    import ray

    from training.config import FinetuneSpec
    from training.run import run

    spec = FinetuneSpec(
        run_id="gpu-check",
        task="text-classification",
        method="full",
        train_file=data(home / "gpu-check.jsonl"),
        hyperparameters={"max_steps": steps, "batch_size": 16, "max_seq_length": TOKENS},
        scaling={"num_workers": 1, "use_gpu": True, "mixed_precision": "bf16"},
    )
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        return run(spec, home, replace_model=True)["model"]
    finally:
        ray.shutdown()


def timed(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def benchmark(folder: Path, session) -> tuple[float, float]:
    """ms per batch: PyTorch fp32 eager on CUDA, then the served fp16 graph on CUDA."""
    import torch
    from transformers import AutoModel

    from training.tasks.classification import HEAD_STATE, PooledClassifier

    manifest = artifacts.read_manifest(folder)
    encoder = AutoModel.from_pretrained(str(folder / "hf"), add_pooling_layer=False)
    model = PooledClassifier(encoder, len(manifest.labels))
    model.head.load_state_dict(torch.load(folder / "hf" / HEAD_STATE))
    model = model.cuda().eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, size=(BATCH, TOKENS), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}  # fmt: skip
    tensors = {k: torch.from_numpy(v).cuda() for k, v in feed.items()}

    def eager():
        with torch.no_grad():
            model(**tensors)
        torch.cuda.synchronize()

    names = {i.name for i in session.get_inputs()}
    return timed(eager), timed(
        lambda: session.run(None, {k: v for k, v in feed.items() if k in names})
    )


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--home", type=Path)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("no CUDA provider: install the project with the `gpu` extra on a GPU machine")
        return 2
    home = args.home or Path(tempfile.mkdtemp(prefix="tuneserve-gpu-"))
    ensure_base(home)
    model_id = train(home, args.steps)
    from service.inference.models import load_model

    folder = artifacts.model_dir(home, model_id)
    served = load_model(folder, device="cuda")
    serving = served.session.serving
    print(f"served: {serving.precision} on {serving.device} ({serving.reason})")
    print(served.classify(["a wonderful film", "a dull mess"]))
    eager_ms, onnx_ms = benchmark(folder, served.session.session)
    metric = artifacts.read_manifest(folder).parity.validation_metric
    print(
        f"\n| graph | ms per batch of {BATCH} x {TOKENS} tokens | speed-up | validation accuracy |"
    )
    print("|---|---:|---:|---:|")
    print(
        f"| PyTorch fp32 eager, CUDA | {eager_ms:.2f} | 1.00x | {metric.get('fp32', float('nan')):.2f} |"
    )
    print(f"| ONNX Runtime {serving.precision}, CUDA | {onnx_ms:.2f} | {eager_ms / onnx_ms:.2f}x | {metric.get(serving.precision, float('nan')):.2f} |")  # fmt: skip
    ok = serving.device == "cuda" and serving.precision == "fp16"
    print(
        f"\ntarget: fp16 on CUDA and >= 3x: {'met' if ok and eager_ms / onnx_ms >= 3 else 'missed'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
