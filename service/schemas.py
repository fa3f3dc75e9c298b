"""HTTP request and response models. Limits are declared on the fields, so that a request
over a limit is refused at the edge with a 422 naming the field, before any model runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

# hard ceilings; the settings (max_inputs, max_text_chars, max_labels) set the limits
MAX_INPUTS = 1024
MAX_TEXT_CHARS = 100_000
MIN_LABELS, MAX_LABELS = 2, 256
MAX_LABEL_CHARS = 200

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
Label = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_LABEL_CHARS)
]
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=128)]

MODEL_FIELD = Field(
    None,
    description="the model to use: `base` or a fine-tuned model id; may instead be given in "
    "the `serve-multiplexed-model-id` header (the body wins)",
    examples=["base"],
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifyRequest(_Request):
    model: ModelId | None = MODEL_FIELD
    inputs: Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        ..., description=f"a text, or a list of 1-{MAX_INPUTS} texts", examples=[["I loved it"]]
    )
    labels: Annotated[list[Label], Field(min_length=MIN_LABELS, max_length=MAX_LABELS)] | None = (
        Field(
            None,
            description="candidate labels for zero-shot classification with a base encoder",
            examples=[["positive", "negative"]],
        )
    )

    template: Annotated[str, StringConstraints(min_length=2, max_length=MAX_LABEL_CHARS)] | None = (
        Field(
            None,
            description="zero-shot only: the sentence each label is put into, `{}` marking the "
            'label; default "This text is {}."',
            examples=["The sentiment of this review is {}."],
        )
    )

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_text(cls, v: object) -> object:
        # a single text is a list of one; validating one list type keeps the errors plain
        return [v] if isinstance(v, str) else v

    @field_validator("template")
    @classmethod
    def _has_slot(cls, v: str | None) -> str | None:
        if v is not None and "{}" not in v:
            raise ValueError('template must contain "{}" where the label goes')
        return v

    @field_validator("labels")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            seen: set[str] = set()
            dupes = [x for x in v if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
            if dupes:
                raise ValueError(f"labels must be unique; repeated: {sorted(set(dupes))}")
        return v

    def texts(self) -> list[str]:
        return list(self.inputs)


class ClassifyResult(BaseModel):
    label: str
    score: float
    scores: dict[str, float]


class ClassifyResponse(BaseModel):
    model: str
    results: list[ClassifyResult]


class QAPair(_Request):
    question: Text
    context: Text


class QARequest(_Request):
    model: ModelId | None = MODEL_FIELD
    question: Text | None = Field(None, description="one question (with `context`)")
    context: Text | None = Field(None, description="the text to find the answer in")
    inputs: Annotated[list[QAPair], Field(min_length=1, max_length=MAX_INPUTS)] | None = Field(
        None, description=f"instead of question/context: a list of 1-{MAX_INPUTS} pairs"
    )

    @model_validator(mode="after")
    def _one_form(self) -> QARequest:
        single = self.question is not None or self.context is not None
        if single and self.inputs is not None:
            raise ValueError("give either `question` and `context`, or `inputs`, not both")
        if not single and self.inputs is None:
            raise ValueError("give `question` and `context`, or `inputs`: a list of pairs")
        if single and (self.question is None or self.context is None):
            missing = "context" if self.context is None else "question"
            raise ValueError(f"`{missing}` is missing: a question needs both question and context")
        return self

    def pairs(self) -> list[QAPair]:
        if self.inputs is not None:
            return list(self.inputs)
        return [QAPair(question=self.question or "", context=self.context or "")]


class QAResult(BaseModel):
    answer: str
    start: int = Field(description="offset of the answer in the context: context[start:end]")
    end: int
    score: float


class QAResponse(BaseModel):
    model: str
    results: list[QAResult]


Endpoint = Literal["text-classification", "extractive-qa"]


class ModelView(BaseModel):
    id: str
    object: Literal["model"] = "model"
    task: str = Field(description="what the model's head computes")
    endpoints: list[Endpoint] = Field(description="the tasks it serves: /v1/classify, /v1/qa")
    zero_shot: bool = Field(description="a base encoder: classify needs `labels`")
    base: str | None
    labels: list[str]
    precision: str
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="validation metrics of the checkpoint it was exported from",
    )
    created_at: datetime
    job: dict | None = Field(
        None,
        description="for a model a job made: the job id, its base, the training data's sha256",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelView]


# ---------------------------------------------------------------------------- the job API
# Shaped like OpenAI's fine-tuning API, so that its SDK works unmodified against ours.

Auto = Literal["auto"]


class JobHyperparameters(BaseModel):
    """OpenAI's three (each a number or "auto"), plus any field of training's Hyperparameters
    (max_seq_length, warmup_ratio, doc_stride, ...), checked when the job is created."""

    model_config = ConfigDict(extra="allow")

    n_epochs: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=4096)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"


class JobScaling(_Request):
    num_workers: int | None = Field(None, ge=1, le=1024)
    # unset: the service's default (TUNESERVE_JOB_USE_GPU)
    use_gpu: bool | None = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"


class JobMethod(BaseModel):
    """OpenAI's newer form: {"type": "supervised", "supervised": {"hyperparameters": {...}}}."""

    model_config = ConfigDict(extra="allow")
    type: Literal["supervised"] = "supervised"
    supervised: dict | None = None


JobTask = Literal["text-classification", "extractive-qa", "masked-lm"]


class CreateJobRequest(_Request):
    model: ModelId = Field(
        description="the encoder to start from: `base`, a masked-lm job's model, or `scratch` "
        "(masked-lm only)",
        examples=["base"],
    )
    training_file: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    validation_file: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    task: JobTask | None = Field(
        None, description="inferred from the training file's format when absent"
    )
    hyperparameters: JobHyperparameters | None = None
    method: JobMethod | None = None
    suffix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,40}$")] | None = Field(
        None, description="part of the model's id: ft:<base>:<suffix>:<short id>"
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, Annotated[str, StringConstraints(max_length=512)]] | None = Field(
        None, max_length=16
    )
    scaling: JobScaling | None = Field(None, description="workers and GPUs for this job")
    integrations: list | None = Field(None, description="accepted for compatibility; ignored")

    def requested_hyperparameters(self) -> dict:
        if self.hyperparameters is not None:
            return self.hyperparameters.model_dump()
        supervised = (self.method.supervised or {}) if self.method else {}
        return JobHyperparameters(**(supervised.get("hyperparameters") or {})).model_dump()


class ApiKeyRequest(_Request):
    tenant: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] = (
        Field(..., description="the tenant the key acts for", examples=["acme"])
    )


class ErrorDetail(BaseModel):
    type: str = Field(..., examples=["validation_error"])
    message: str = Field(..., examples=["inputs: at most 64 inputs a request"])
    param: str | None = Field(None, examples=["inputs"])


class ErrorBody(BaseModel):
    """The one error body of every 4xx and 5xx."""

    error: ErrorDetail


# every route documents it, so that a client (and a schema fuzzer) can rely on its shape
ERROR_RESPONSES: dict = {
    "4XX": {"model": ErrorBody, "description": "the request cannot be served as it is"},
    "5XX": {"model": ErrorBody, "description": "the service cannot serve it now"},
}
