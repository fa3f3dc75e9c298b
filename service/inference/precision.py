"""Which graph of a model a replica serves, and on what: the fastest precision its hardware
runs (int8 on CPU, fp16 on a GPU) when that graph stays within the accuracy budget against
fp32, else fp32; and ONNX Runtime's CUDA provider where onnxruntime-gpu sees a GPU.

The budget is read from what the export measured (the manifest's parity report): a fine-tuned
model's metric through each graph (points of accuracy or F1; a classifier's on its held-out
rows and a sample of its training rows, `gate_metric`, else on the validation data), an
encoder's cosine to PyTorch's embeddings (its minimum over the parity sentences). A manifest written before
these were recorded is served as its export chose.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

from training.artifacts import Manifest, Precision

log = logging.getLogger("ray.serve")

Device = Literal["auto", "cpu", "cuda"]
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
FASTEST: dict[str, Precision] = {"cpu": "int8", "cuda": "fp16"}


@dataclass(frozen=True)
class Serving:
    """What a replica serves for a model: its precision, where it runs, and why."""

    precision: Precision
    device: str  # cpu or cuda
    reason: str

    def providers(self) -> list[str]:
        return [CUDA, CPU] if self.device == "cuda" else [CPU]


def device_for(wanted: Device, available: list[str] | None = None) -> str:
    """`cuda` when asked for (or `auto`) and ONNX Runtime has the CUDA provider and a GPU is
    visible to this process; else `cpu`, saying why when a GPU was asked for."""
    if wanted == "cpu":
        return "cpu"
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if CUDA in available and visible not in ("", "-1"):
        return "cuda"
    if wanted == "cuda" or CUDA in available:
        log.warning(
            "serving on CPU: %s (ONNX Runtime providers %s, CUDA_VISIBLE_DEVICES=%r)",
            "no CUDA provider" if CUDA not in available else "no GPU visible to this replica",
            available,
            visible,
        )
    return "cpu"


def choose(manifest: Manifest, device: str, *, budget: float, min_cosine: float) -> Serving:
    """The precision to serve on `device`: its fastest if within `budget` points of fp32's
    validation metric (fine-tuned models) or at least `min_cosine` to PyTorch (encoders)."""
    fast = FASTEST[device]
    parity = manifest.parity
    if f"onnx_{fast}" not in manifest.files:
        return Serving("fp32", device, f"no {fast} graph was exported")
    verdict = parity.verdict(fast, budget) if parity else None
    if verdict is not None:
        within, reason = verdict
        return Serving(fast if within else "fp32", device, reason)
    cosine = parity.min_cosine if parity else {}
    if fast in cosine and not (parity and parity.validation_metric):
        shown = f"{fast} embeddings' minimum cosine to PyTorch's is {cosine[fast]:.4f}"
        if cosine[fast] >= min_cosine:
            return Serving(fast, device, f"{shown}, at least {min_cosine:g}")
        return Serving("fp32", device, f"{shown}, below {min_cosine:g}")
    if device == "cpu":  # measured before graphs carried their metrics: as the export chose
        return Serving(manifest.precision, device, "as chosen at export")
    return Serving("fp32", device, f"the {fast} graph has no recorded metric")
