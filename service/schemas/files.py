"""/v1/files: the OpenAI file object, plus what validation found in the file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from service.db import File


class FileView(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None
    format: str
    rows: int
    labels: list[str] | None
    sha256: str

    @classmethod
    def of(cls, f: File) -> FileView:
        return cls(
            id=f.id,
            bytes=f.bytes,
            created_at=f.created_at,
            filename=f.filename,
            purpose=f.purpose,
            format=f.format,
            rows=f.rows,
            labels=f.labels,
            sha256=f.sha256,
        )


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: Literal[True] = True
