"""One page of any list: the shape every list of the API has."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first; `after` = `last_id` gets the next page."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, data: list, has_more: bool) -> Page:
        first = getattr(data[0], "id", None) if data else None
        last = getattr(data[-1], "id", None) if data else None
        return cls(data=data, has_more=has_more, first_id=first, last_id=last)
