"""One pager for every list of the API: newest first, after the row whose public id the
client gives (`after`), looked up within the caller's own list."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.errors import NotFound


def page(s: Session, query, model, limit: int, after: str | None = None) -> tuple[list, bool]:
    """One page of `query` (rows of `model`), newest first, after the row whose public id is
    `after`; returns (rows, has_more). Every list of the API pages here. The `after` row is
    looked up through `query` itself, so a row the caller may not see is as unknown as one
    that does not exist."""
    if after is not None:
        query = query.where(model.seq < _cursor(s, query, model, after))
    rows = list(s.scalars(query.order_by(model.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def _cursor(s: Session, query, model, after: str) -> int:
    prefix = getattr(model, "public_prefix", None)
    if prefix is None:  # rows with an id of their own
        seq = s.scalar(query.with_only_columns(model.seq).where(model.id == after))
    else:  # rows whose public id is a prefix and their seq
        n = after.removeprefix(prefix)
        ok = after.startswith(prefix) and n.isdigit()
        seq = (
            s.scalar(query.with_only_columns(model.seq).where(model.seq == int(n))) if ok else None
        )
    if seq is None:  # unknown, or in a list the caller may not see: the same answer
        raise NotFound(f"`after`: no {after!r} in this list", param="after")
    return seq
