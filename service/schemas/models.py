"""/v1/models: what a model serves and where it came from."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Endpoint = Literal["text-classification", "extractive-qa", "embeddings", "fill-mask"]


class Serving(BaseModel):
    precision: str = Field(description="fp32, int8 (CPU) or fp16 (GPU)")
    device: str = Field(description="cpu or cuda")
    reason: str = Field(description="why this precision: its metric against the budget")


class ModelView(BaseModel):
    id: str
    object: Literal["model"] = "model"
    task: str = Field(description="what the model's head computes")
    endpoints: list[Endpoint] = Field(
        description="what it serves: /v1/classify, /v1/qa, /v1/embeddings, /v1/fill-mask (an "
        "encoder that kept its masked-LM head)"
    )
    zero_shot: bool = Field(description="a base encoder: classify needs `labels`")
    base: str | None
    labels: list[str]
    precision: str
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="validation metrics of the checkpoint it was exported from",
    )
    baseline: dict[str, float] = Field(
        default_factory=dict,
        description="its base's zero-shot scores on the same validation data: what "
        "fine-tuning bought is `metrics` minus these",
    )
    head_only: bool = Field(
        False,
        description="a head of a few kilobytes served through its `base`'s encoder pass, "
        "and askable with other variants of that base in one request",
    )
    method: Literal["full", "head"] | None = Field(
        None,
        description="a classifier: `full` (every weight trained) or `head` (a head of a few "
        "kilobytes on its base, which serves it)",
    )
    created_at: datetime
    serving: Serving | None = Field(
        None,
        description="what a model replica serves for it on the hardware the replicas are "
        "given: the precision, the device, and why (head-only variants ride on their base)",
    )
    export: dict | None = Field(
        None,
        description="the export's parity report: each ONNX graph (fp32, int8, fp16) against "
        "PyTorch on the same inputs (max_abs_diff, cosines, validation_metric, fill_mask_top1)",
    )
    job: dict | None = Field(
        None,
        description="for a model a job made: the job id, its base, the training data's sha256",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelView]


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: Literal[True] = True
