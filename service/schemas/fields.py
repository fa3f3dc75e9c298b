"""Field types every request shares, with their hard ceilings, and the request base class."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict, StringConstraints

# hard ceilings; the settings (max_inputs, max_text_chars, max_labels) set the limits
MAX_INPUTS = 1024
MAX_TEXT_CHARS = 100_000
MIN_LABELS, MAX_LABELS = 2, 256
MAX_LABEL_CHARS = 200

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
# stripped of surrounding white space, so it must hold something else (the pattern says so)
Label = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_LABEL_CHARS, pattern=r"\S"
    ),
]
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


def after(pattern: str, example: str):
    """The `after` query parameter of a list: the id of the last item of the previous page."""
    return Query(
        pattern=pattern,
        description="the id of the last item of the previous page (its `last_id`)",
        examples=[example],
    )


class Request(BaseModel):
    """A request body: unknown fields are refused (a misspelt field is not silently ignored)."""

    model_config = ConfigDict(extra="forbid")
