"""Export: a trained PyTorch model in, a served-ready model folder out.

One sequence of steps for every model (`_export`): save the weights and the tokenizer,
PyTorch -> ONNX (dynamic batch and sequence axes) -> ONNX Runtime's transformer optimizer
(fused attention, layer norm, GELU) -> int8 dynamic quantization -> outputs compared with
PyTorch's -> the precision to serve -> the manifest. An encoder is judged by the cosine of its
embeddings to PyTorch's, a fine-tuned model by its validation metric through ONNX Runtime.
The folder is built under a temporary name and renamed into place (artifacts). Serving only
reads what this writes.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import onnx
import torch
from transformers import AutoConfig, AutoModel, PreTrainedModel

from training import artifacts
from training import onnx as steps
from training.artifacts import Manifest, ParityReport, Precision
from training.parity_texts import PARITY_TEXTS
from training.tasks.base import mean_pooled

log = logging.getLogger(__name__)

OPSET = 17
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


class MeanPooledEncoder(torch.nn.Module):
    """An encoder whose output is the mean of its token states, L2-normalized.

    This is sentence-transformers' Transformer -> Pooling(mean) -> Normalize, inside the graph,
    so the runtime gets one small [batch, hidden] tensor instead of every token state.
    """

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return mean_pooled(hidden, attention_mask)


class HeadOutputs(torch.nn.Module):
    """A fine-tuned HF model whose outputs are plain tensors: logits, or start/end logits."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return tuple(getattr(out, n) for n in self.names)


def load_encoder(hf_dir: str | Path) -> PreTrainedModel:
    """The encoder of an HF checkpoint, in eval mode, with the attention ORT can fuse."""
    model = AutoModel.from_pretrained(str(hf_dir), attn_implementation="eager")
    model.eval()
    return model


def to_onnx(
    module: torch.nn.Module,
    path: Path,
    output_names: list[str],
    *,
    axes: dict[int, str] | None = None,
) -> Path:
    """TorchScript-export `module` with dynamic batch and sequence axes; the outputs' dynamic
    `axes` are their first, the batch, unless given."""
    names = steps.INPUT_NAMES
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic.update({name: dict(axes or {0: "batch"}) for name in output_names})
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module,
            dummy,
            str(path),
            input_names=names,
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


# (the ONNX Runtime session of each precision, the parity report) -> the precision to serve
ChoosePrecision = Callable[[dict[str, object], ParityReport], Precision]
# (the staged folder, its tokenizer folder) -> more graphs' files by role, parity fields
ExtraGraphs = Callable[[Path, Path], tuple[dict[str, str], dict[str, dict[str, float]]]]


class Saveable(Protocol):
    """A Hugging Face model, or a module built on one (training/tasks PooledClassifier)."""

    config: Any

    def save_pretrained(self, save_directory: str, /) -> Any: ...


def _export(
    module: torch.nn.Module,
    hf_model: Saveable,
    tokenizer_src: Path,
    home: str | Path,
    manifest: Manifest,
    output_names: list[str],
    choose: ChoosePrecision,
    *,
    quantize_attention: bool = True,
    replace: bool = False,
    extra: ExtraGraphs | None = None,
) -> Manifest:
    """The steps every export takes, into a staged model folder; returns the manifest. Every
    precision's graph is written (fp32, int8 for CPUs, fp16 for GPUs) with its parity; the
    precision recorded is the one a CPU serves (a replica chooses again for its hardware:
    service/inference/precision.py)."""
    config = hf_model.config
    with artifacts.staged_model_dir(home, manifest.id, replace=replace) as out:
        hf_model.save_pretrained(str(out / artifacts.HF_DIR))
        tok_out = out / artifacts.TOKENIZER_DIR
        tok_out.mkdir()
        for name in TOKENIZER_FILES:
            if (tokenizer_src / name).is_file():
                shutil.copy2(tokenizer_src / name, tok_out / name)
        raw = to_onnx(module, out / artifacts.ONNX_DIR / "raw.onnx", output_names)
        graphs = _graphs(raw, out, config, quantize_attention)
        feed = steps.encode(steps.load_tokenizer(tok_out, manifest.max_seq_length), PARITY_TEXTS)
        reference = reference_outputs(module, feed)
        report = ParityReport(samples=len(PARITY_TEXTS))
        sessions: dict[str, object] = {}
        for precision, path in graphs.items():
            sessions[precision] = steps.session(path)
            for key, value in steps.compare(reference, sessions[precision], feed).items():
                getattr(report, key)[precision] = value
        files, more = extra(out, tok_out) if extra else ({}, {})
        report = report.model_copy(update=more)
        manifest = manifest.model_copy(
            update={
                "files": {
                    "tokenizer": artifacts.TOKENIZER_DIR,
                    "hf": artifacts.HF_DIR,
                    **{f"onnx_{p}": artifacts.ONNX_FILES[p] for p in graphs},
                    **files,
                },
                "precision": choose(sessions, report),
                "parity": report,
                "hidden_size": config.hidden_size,
            }
        )
        artifacts.write_manifest(out, manifest)
    return manifest


def export_encoder(
    hf_src: str | Path,
    home: str | Path,
    model_id: str,
    *,
    source: str | None = None,
    max_seq_length: int = 256,
    min_int8_cosine: float = 0.95,
    quantize_attention: bool = True,
    replace: bool = False,
    extra: ExtraGraphs | None = None,
    **manifest_fields,
) -> Manifest:
    """Import an HF encoder (weights and tokenizer in `hf_src`) as a `feature-extraction`
    model. int8 is served unless its embeddings drift from PyTorch's (min cosine below
    `min_int8_cosine`). `extra` writes more graphs into the folder (a masked-LM head's)."""
    hf_src = Path(hf_src)
    config = AutoConfig.from_pretrained(str(hf_src))
    encoder = load_encoder(hf_src)

    def choose(_sessions, report: ParityReport) -> Precision:
        if report.min_cosine["int8"] >= min_int8_cosine:
            return "int8"
        log.warning(
            "int8 min cosine %.4f < %.2f: serving fp32", report.min_cosine["int8"], min_int8_cosine
        )
        return "fp32"

    manifest = Manifest(
        id=model_id,
        task="feature-extraction",
        source=source or str(hf_src),
        max_seq_length=min(max_seq_length, config.max_position_embeddings),
        **manifest_fields,
    )
    return _export(
        MeanPooledEncoder(encoder).eval(),
        encoder,
        hf_src,
        home,
        manifest,
        ["sentence_embedding"],
        choose,
        quantize_attention=quantize_attention,
        replace=replace,
        extra=extra,
    )


def export_finetuned(
    model: torch.nn.Module,
    output_names: tuple[str, ...],
    tokenizer_dir: Path,
    home: str | Path,
    manifest: Manifest,
    *,
    validate: Callable[[object], float],
    gate: tuple[Callable[[object], float], int, int] | None = None,
    max_metric_drop: float = 1.0,
    replace: bool = False,
) -> Manifest:
    """Export a fine-tuned classifier or QA model. `validate(session) -> float` scores an ONNX
    Runtime session on the validation data (accuracy or F1 in percent); `gate`, (a scorer,
    its rows, the held-out ones among them), on more labelled rows when the validation data
    is small. int8 is served only when it scores within `max_metric_drop` points of fp32
    (ParityReport.verdict)."""

    def choose(sessions: dict[str, object], report: ParityReport) -> Precision:
        report.validation_metric = {p: float(validate(s)) for p, s in sessions.items()}
        if gate is not None:
            score, report.gate_rows, report.validation_rows = gate
            report.gate_metric = {p: float(score(s)) for p, s in sessions.items()}
        verdict = report.verdict("int8", max_metric_drop)
        return "int8" if verdict and verdict[0] else "fp32"

    module = HeadOutputs(model.eval(), output_names).eval()
    return _export(
        module,
        cast(Saveable, model),
        tokenizer_dir,
        home,
        manifest,
        list(output_names),
        choose,
        replace=replace,
    )


def _graphs(raw: Path, out: Path, config: Any, quantize_attention: bool) -> dict[str, Path]:
    """The raw graph fused (fp32), then quantized (int8, for CPUs) and halved (fp16, GPUs)."""
    fp32 = steps.optimize(
        raw,
        out / artifacts.ONNX_FILES["fp32"],
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    raw.unlink()
    return {
        "fp32": fp32,
        "int8": steps.quantize_int8(
            fp32, out / artifacts.ONNX_FILES["int8"], attention=quantize_attention
        ),
        "fp16": steps.to_fp16(fp32, out / artifacts.ONNX_FILES["fp16"]),
    }


def reference_outputs(module: torch.nn.Module, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A module's outputs on a feed, as arrays (what a graph is compared with)."""
    with torch.no_grad():
        out = module(*(torch.from_numpy(feed[n]) for n in steps.INPUT_NAMES))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
