"""Uploaded datasets: checked for their format before they are accepted, stored under the
artifact root, recorded in the database.

A file is stored only once its whole content has passed the same validator training uses, so
a job never starts on data that would fail halfway. Errors name the file and the line.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select

from service.db import Database, File, Job, now, page
from service.errors import Conflict, InvalidRequest, NotFound, TooLarge
from training import data
from training.config import PURPOSES

ACTIVE = ("validating_files", "queued", "running")  # a job in these may still read its files
_CHUNK = 1 << 20


def new_id() -> str:
    return "file-" + secrets.token_hex(12)


def safe_name(filename: str | None) -> str:
    name = Path(filename or "upload").name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "upload"
    return name[:200]


def _inspect(path: Path, purpose: str) -> tuple[str, int, list[str] | None]:
    """(format, rows, labels) of a stored file, or InvalidRequest naming the lines at fault."""
    try:
        if purpose == "pretrain":
            return "corpus", len(data.read_corpus(path)), None
        kind = data.sniff_format(path)
        if kind == "classification":
            rows = data.read_classification(path)
            return kind, len(rows.texts), rows.label_names
        if kind == "squad":
            return kind, len(data.read_squad(path)), None
    except data.DataError as exc:
        raise InvalidRequest(str(exc), param="file") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"{path.name}: is not UTF-8 text; save it as UTF-8", param="file"
        ) from exc
    raise InvalidRequest(
        f"{path.name}: a fine-tune file must be classification JSON Lines "
        '({"text": ..., "label": ...} a line) or SQuAD v1.1 JSON; for raw text to pretrain '
        'on, upload it with purpose "pretrain"',
        param="file",
    )


def store(
    db: Database,
    home: Path,
    src: BinaryIO,
    filename: str | None,
    purpose: str,
    *,
    max_bytes: int,
    tenant: str | None = None,
) -> File:
    """Copy an upload under home/files/<id>/, validate it, record it. Nothing is kept on error."""
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {list(PURPOSES)}, not {purpose!r}", param="purpose"
        )
    file_id = new_id()
    root = home / "files"
    staging = root / f".incoming-{file_id}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        path = staging / safe_name(filename)
        digest, size = hashlib.sha256(), 0
        with path.open("wb") as out:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(
                        f"the file is larger than the limit of {max_bytes} bytes "
                        "(setting TUNESERVE_MAX_UPLOAD_BYTES)",
                        param="file",
                    )
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise InvalidRequest(f"{path.name}: the file is empty", param="file")
        fmt, rows, labels = _inspect(path, purpose)
        final = root / file_id
        staging.rename(final)
        record = File(
            id=file_id,
            tenant=tenant,
            filename=Path(filename or path.name).name[:512],
            purpose=purpose,
            bytes=size,
            sha256=digest.hexdigest(),
            format=fmt,
            rows=rows,
            labels=labels,
            path=str(final / path.name),
            created_at=now(),
        )
        try:
            with db.session() as s:
                s.add(record)
        except Exception:
            shutil.rmtree(final, ignore_errors=True)
            raise
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def get(db: Database, file_id: str, tenant: str | None = None) -> File:
    with db.session() as s:
        f = s.scalar(select(File).where(File.id == file_id, File.deleted.is_(False)))
    if f is None or (tenant is not None and f.tenant != tenant):
        raise NotFound(f"no file {file_id!r}", param="file_id")
    return f


def listing(
    db: Database,
    *,
    tenant: str | None = None,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> tuple[list[File], bool]:
    """Newest first; `after` is the id of the last file of the previous page."""
    q = select(File).where(File.deleted.is_(False))
    if tenant is not None:
        q = q.where(File.tenant == tenant)
    if purpose:
        q = q.where(File.purpose == purpose)
    with db.session() as s:
        return page(s, q, File, limit, after)


def delete(db: Database, file_id: str, tenant: str | None = None) -> None:
    """Remove a file no unfinished job uses; its content goes, its record stays (marked)."""
    f = get(db, file_id, tenant)
    with db.session() as s:
        job = s.scalar(
            select(Job).where(
                (Job.training_file == file_id) | (Job.validation_file == file_id),
                Job.status.in_(ACTIVE),
            )
        )
        if job is not None:
            raise Conflict(
                f"file {file_id!r} is used by job {job.id} ({job.status}); "
                "cancel the job or wait for it to finish",
                param="file_id",
            )
        row = s.scalar(select(File).where(File.id == file_id))
        assert row is not None
        row.deleted = True
    shutil.rmtree(Path(f.path).parent, ignore_errors=True)
