"""Small labelled data written by the tests themselves (no shared datasets needed)."""

import json
import random
from pathlib import Path

import numpy as np

from service.files import UploadLimits
from training import artifacts
from training.data import Limits

POSITIVE = ["wonderful", "loved", "happy", "great", "minute"]
NEGATIVE = ["dull", "tedious", "mess", "sad", "angry"]


def classification_file(path: Path, rows: int = 96, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(rows):
            label = "positive" if i % 2 else "negative"
            words = rng.sample(POSITIVE if i % 2 else NEGATIVE, 3) + rng.sample(
                ["the", "film", "was", "it"], 2
            )
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


CITIES = [("eiffel tower", "paris"), ("great wall", "china"), ("mount fuji", "japan")]


def squad_file(path: Path, copies: int = 8) -> Path:
    paragraphs = []
    for k in range(copies):
        for thing, place in CITIES:
            context = (
                f"the {thing} stands in {place} . refunds are issued within five working days ."
            )
            start = context.index(place)
            paragraphs.append(
                {
                    "context": context,
                    "qas": [
                        {
                            "id": f"{thing}-{k}",
                            "question": f"where is the {thing}",
                            "answers": [{"text": place, "answer_start": start}],
                        }
                    ],
                }
            )
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def corpus_file(path: Path, lines: int = 200) -> Path:
    from conftest import TINY_CORPUS

    path.write_text("\n".join(TINY_CORPUS[i % len(TINY_CORPUS)] for i in range(lines)) + "\n")
    return path


def copy_model(store: Path, src_id: str, new_id: str, *, link: bool) -> Path:
    """`src_id`'s model folder under another id: its files linked (cheap) or copied (to be
    broken without harming the original)."""
    import shutil

    from training import artifacts

    src = artifacts.model_dir(store, src_id)
    manifest = artifacts.read_manifest(src)
    with artifacts.staged_model_dir(store, new_id) as stage:
        for sub in ("tokenizer", "onnx", "hf"):
            if not (src / sub).exists():
                continue
            if link:
                (stage / sub).symlink_to(src / sub, target_is_directory=True)
            else:
                shutil.copytree(src / sub, stage / sub)
        artifacts.write_manifest(stage, manifest.model_copy(update={"id": new_id}))
    return artifacts.model_dir(store, new_id)


# what the tests' uploads may be: a megabyte, read with the service's default line limit
UPLOAD_LIMITS = UploadLimits(max_bytes=10**6, data=Limits(2**30, 1_000_000))


def write_head_variant(home: Path, head_id: str, labels: list[str], seed: int, **manifest):
    """A head-only variant of `home`'s `base` with a random head, written as a head job writes
    it, checked against base's graph unless `base_sha256` says otherwise; returns its Head."""
    from service.inference.models import EncoderModel
    from service.inference.session import Session
    from training.head_run import write_head
    from training.heads import Head

    folder = artifacts.model_dir(home, "base")
    base = artifacts.read_manifest(folder)
    rng = np.random.default_rng(seed)
    head = Head(rng.normal(size=(len(labels), base.hidden_size)).astype(np.float32),
                rng.normal(size=len(labels)).astype(np.float32))  # fmt: skip
    if "base_sha256" not in manifest:
        manifest["base_sha256"] = EncoderModel(Session(folder, base)).graph_sha256
    written = artifacts.Manifest(
        id=head_id, task="text-classification", method="head", base="base", labels=labels,
        files={"head": artifacts.HEAD_FILE}, **manifest,
    )  # fmt: skip
    write_head(home, written, head, replace=True)
    return head


def write_fill_mask_encoder(home: Path, model_id: str, hf_dir: Path, seed: int = 0):
    """`hf_dir`'s encoder with a masked-LM head (random, seeded) exported into `home` as a
    pretraining run exports it: an encoder that also fills masks. Returns the PyTorch model."""
    import torch
    from transformers import AutoModelForMaskedLM

    from training.export import export_encoder
    from training.fill_mask_graph import export_fill_mask

    torch.manual_seed(seed)
    mlm = AutoModelForMaskedLM.from_pretrained(str(hf_dir), attn_implementation="eager").eval()
    export_encoder(hf_dir, home, model_id, max_seq_length=64, replace=True,
                   extra=lambda out, tok: export_fill_mask(mlm, out, tok, 64))  # fmt: skip
    return mlm
