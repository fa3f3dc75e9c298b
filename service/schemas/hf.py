"""/hf/models/{model}: the payloads `huggingface_hub.InferenceClient` sends (its "hf-inference"
provider, given our URL as the model), bounded like every request here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from service.schemas.fields import MAX_INPUTS, MAX_LABEL_CHARS, MIN_LABELS, Label, Request, Text
from service.schemas.fields import MAX_LABELS as MAX_LABELS_CEILING
from service.schemas.fill_mask import Filled
from service.schemas.inference import QAResult


class QAInputs(Request):
    question: Text
    context: Text


class HFParameters(Request):
    """Every task's parameters; each task refuses those it cannot honour, naming them."""

    # text classification
    top_k: int | None = Field(None, ge=1, le=MAX_LABELS_CEILING)
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None
    # zero-shot classification
    candidate_labels: (
        Annotated[
            list[Label],
            Field(
                min_length=MIN_LABELS,
                max_length=MAX_LABELS_CEILING,
                json_schema_extra={"uniqueItems": True},
            ),
        ]
        | None
    ) = None
    multi_label: bool | None = None
    hypothesis_template: (
        Annotated[str, Field(min_length=2, max_length=MAX_LABEL_CHARS, pattern=r"\{\}")] | None
    ) = None
    # question answering
    align_to_words: bool | None = None
    doc_stride: int | None = Field(None, ge=0, le=4096)
    handle_impossible_answer: bool | None = None
    max_answer_len: int | None = Field(None, ge=1, le=4096)
    max_question_len: int | None = Field(None, ge=1, le=4096)
    max_seq_len: int | None = Field(None, ge=1, le=4096)
    # fill-mask
    targets: Annotated[list[Label], Field(max_length=MAX_LABELS_CEILING)] | None = None


class HFRequest(Request):
    """`inputs` and task `parameters`; feature extraction sends its parameters at the root."""

    inputs: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] | QAInputs
    parameters: HFParameters | None = None
    normalize: bool | None = None
    prompt_name: Annotated[str, Field(max_length=128)] | None = None
    truncate: bool | None = None
    truncation_direction: Literal["left", "right", "Left", "Right"] | None = None
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] | None = None


class HFLabelScore(BaseModel):
    label: str
    score: float


# What the route answers, by the task the payload and the model make (each shape as the
# InferenceClient parses it): text classification, a ranked list a text; zero-shot, a ranked
# list (a list of them for several texts); question answering, one answer; feature
# extraction, a vector a text; fill-mask, a mask's candidates (a list of them for several
# masks, and again for several texts)
HFResponse = (
    list[list[HFLabelScore]]
    | list[HFLabelScore]
    | QAResult
    | list[list[float]]
    | list[Filled]
    | list[list[Filled]]
    | list[list[list[Filled]]]
)
