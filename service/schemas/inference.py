"""/v1/classify and /v1/qa: requests and responses."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from service.schemas.fields import (
    MAX_INPUTS,
    MAX_LABEL_CHARS,
    MAX_LABELS,
    MAX_TEXT_CHARS,
    MIN_LABELS,
    Label,
    ModelId,
    Request,
    Text,
)

MODEL_FIELD = Field(
    None,
    description="the model to use: `base` or a fine-tuned model id. A client that cannot set "
    "it may leave it out and send the `serve-multiplexed-model-id` header instead",
    examples=["base"],
)
_TEXT_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}
# one text, or a list of texts (a text is a list of one: see ClassifyRequest._one_text)
Texts = Annotated[
    list[Text],
    Field(min_length=1, max_length=MAX_INPUTS),
    WithJsonSchema(
        {
            "anyOf": [
                _TEXT_SCHEMA,
                {"type": "array", "items": _TEXT_SCHEMA, "minItems": 1, "maxItems": MAX_INPUTS},
            ]
        }
    ),
]


def _model_required(schema: dict) -> None:
    """The schema requires `model` in the body; the server also takes it from the header."""
    schema["required"] = sorted({*schema.get("required", []), "model"})


def _not_null(v: object) -> object:
    """Optional fields may be left out, not sent as null: the schema says what type they are."""
    if v is None:
        raise ValueError("must not be null; leave the field out instead")
    return v


MAX_MODELS = 64  # models in one classify request (head-only variants of one base)


class ClassifyRequest(Request):
    model_config = ConfigDict(json_schema_extra=_model_required)

    model: (
        ModelId
        | Annotated[
            list[ModelId],
            Field(min_length=1, max_length=MAX_MODELS, json_schema_extra={"uniqueItems": True}),
        ]
        | SkipJsonSchema[None]
    ) = Field(
        None,
        description="the model to use: `base` or a fine-tuned model id; or a list of head-only "
        "variants of one base (and that base, zero-shot with `labels`), each answering every "
        "input from one encoder pass. A client that cannot set it may leave it out and send the "
        "`serve-multiplexed-model-id` header instead",
        examples=["base"],
    )
    inputs: Texts = Field(..., description="a text, or a list of texts", examples=[["I loved it"]])
    labels: Annotated[list[Label], Field(min_length=MIN_LABELS, max_length=MAX_LABELS)] | None = (
        Field(
            None,
            description="candidate labels for zero-shot classification with a base encoder",
            examples=[["positive", "negative"]],
            json_schema_extra={"uniqueItems": True},  # the rule _unique enforces
        )
    )
    template: Annotated[str, StringConstraints(min_length=2, max_length=MAX_LABEL_CHARS)] | None = (
        Field(
            None,
            description="zero-shot only: the sentence each label is put into, `{}` marking the "
            'label; default "The tone is {}."',
            examples=["The sentiment of this review is {}."],
            # the rule _has_slot enforces, for the schema (the validator words the error)
            json_schema_extra={"pattern": r"\{\}"},
        )
    )

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_text(cls, v: object) -> object:
        # a single text is a list of one; validating one list type keeps the errors plain
        return [v] if isinstance(v, str) else v

    model_not_null = field_validator("model", mode="before")(_not_null)

    @field_validator("template")
    @classmethod
    def _has_slot(cls, v: str | None) -> str | None:
        if v is not None and "{}" not in v:
            raise ValueError('template must contain "{}" where the label goes')
        return v

    @field_validator("model")
    @classmethod
    def _unique_models(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(set(v)) < len(v):
            raise ValueError("each model once: the list repeats one")
        return v

    @field_validator("labels")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            repeated = sorted({x for x in v if v.count(x) > 1})
            if repeated:
                raise ValueError(f"labels must be unique; repeated: {repeated}")
        return v


class ClassifyResult(BaseModel):
    label: str
    score: float
    scores: dict[str, float]


class ClassifyResponse(BaseModel):
    model: str
    results: list[ClassifyResult]


class ClassifyManyResponse(BaseModel):
    """The answer to a list of models: each model's results for every input, in the order
    the models were named."""

    object: Literal["list"] = "list"
    data: list[ClassifyResponse]


class QAPair(Request):
    question: Text
    context: Text


def _qa_schema(schema: dict) -> None:
    """The schema states the rule `_one_form` enforces: one question and its context, or a
    list of pairs, never both; and `model` is required in the body (as for classify)."""
    _model_required(schema)
    schema["oneOf"] = [
        {"required": ["question", "context"], "not": {"required": ["inputs"]}},
        {
            "required": ["inputs"],
            "not": {"anyOf": [{"required": ["question"]}, {"required": ["context"]}]},
        },
    ]


class QARequest(Request):
    model_config = ConfigDict(json_schema_extra=_qa_schema)

    model: ModelId | SkipJsonSchema[None] = MODEL_FIELD
    question: Text | SkipJsonSchema[None] = Field(None, description="one question (with `context`)")
    context: Text | SkipJsonSchema[None] = Field(None, description="the text to find the answer in")
    inputs: (
        Annotated[list[QAPair], Field(min_length=1, max_length=MAX_INPUTS)] | SkipJsonSchema[None]
    ) = Field(None, description="instead of question/context: a list of pairs")

    fields_not_null = field_validator("model", "question", "context", "inputs", mode="before")(
        _not_null
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

    def pairs(self) -> list[tuple[str, str]]:
        if self.inputs is not None:
            return [(p.question, p.context) for p in self.inputs]
        return [(self.question or "", self.context or "")]


class QAResult(BaseModel):
    answer: str
    start: int = Field(description="offset of the answer in the context: context[start:end]")
    end: int
    score: float


class QAResponse(BaseModel):
    model: str
    results: list[QAResult]
