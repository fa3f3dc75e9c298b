"""Uploaded datasets: checked for their format before they are accepted, stored under the
artifact root, recorded in the database.

A file is stored only once its whole content has passed the same validator training uses, so
a job never starts on data that would fail halfway. Errors name the file and the line.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select

from service.db import Database, File, Job, lock_tenant, now
from service.errors import Conflict, InvalidRequest, NotFound, RateLimited, TooLarge
from service.paging import page
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


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be and cost (the settings)."""

    max_bytes: int  # the file as sent
    data: data.Limits  # decompressed size and line length, while it is read
    check_timeout_s: float = 600
    check_memory_bytes: int = 2**30
    tenant_bytes: int | None = None  # what one tenant's files may hold, together
    tenant_files: int | None = None


def check(path: Path, purpose: str, limits: UploadLimits) -> tuple[str, int, list[str] | None]:
    """(format, rows, labels) of an uploaded file, checked whole by `python -m
    training.data.check` in a process of its own: its memory capped, its CPU at a lower
    priority, its time bounded; outside the ingress's event loop and its GIL, so inference
    goes on while a large upload is read. InvalidRequest names the lines at fault."""
    cmd = [
        sys.executable, "-m", "training.data.check", str(path), purpose,
        "--memory-bytes", str(limits.check_memory_bytes),
    ]  # fmt: skip
    if limits.data.max_decompressed_bytes:
        cmd += ["--max-decompressed-bytes", str(limits.data.max_decompressed_bytes)]
    if limits.data.max_line_chars:
        cmd += ["--max-line-chars", str(limits.data.max_line_chars)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limits.check_timeout_s)
    except subprocess.TimeoutExpired:
        raise InvalidRequest(
            f"{path.name}: checking it took longer than {limits.check_timeout_s:.0f} s "
            "(setting TUNESERVE_VALIDATION_TIMEOUT_S)",
            param="file",
        ) from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):  # killed, out of memory before it could answer
        raise InvalidRequest(
            f"{path.name}: it could not be checked within the memory a check may use",
            param="file",
        ) from None
    if not answer["ok"]:
        raise InvalidRequest(answer["message"], param="file")
    return answer["format"], answer["rows"], answer["labels"]


def _receive(src: BinaryIO, path: Path, max_bytes: int) -> tuple[int, str]:
    """Copy an upload to disk as it comes; (size, sha256)."""
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
    return size, digest.hexdigest()


def _within_quota(db: Database, s, tenant: str, size: int, limits: UploadLimits) -> None:
    """Under the tenant's lock: its files, this one included, stay within its quota."""
    lock_tenant(db, s, tenant)
    count, total = s.execute(
        select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(
            File.tenant == tenant, File.deleted.is_(False)
        )
    ).one()
    if limits.tenant_files is not None and count + 1 > limits.tenant_files:
        raise RateLimited(
            f"tenant {tenant!r} has {count} files, the most it may keep "
            "(setting TUNESERVE_MAX_TENANT_FILES); delete some first",
            param="file",
        )
    if limits.tenant_bytes is not None and total + size > limits.tenant_bytes:
        raise TooLarge(
            f"tenant {tenant!r} keeps {total} bytes of files; this one would pass its quota "
            f"of {limits.tenant_bytes} (setting TUNESERVE_MAX_TENANT_BYTES)",
            param="file",
        )


def store(
    db: Database,
    home: Path,
    src: BinaryIO,
    filename: str | None,
    purpose: str,
    *,
    limits: UploadLimits,
    tenant: str | None = None,
) -> File:
    """Receive an upload under home/files/.incoming-<id>/, check it, record it, then move it
    into place. Nothing is kept on error; a crash between the record and the move is finished
    by `sweep` at the next start."""
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
        size, sha = _receive(src, path, limits.max_bytes)
        fmt, rows, labels = check(path, purpose, limits)
        final = root / file_id
        record = File(
            id=file_id,
            tenant=tenant,
            filename=Path(filename or path.name).name[:512],
            purpose=purpose,
            bytes=size,
            sha256=sha,
            format=fmt,
            rows=rows,
            labels=labels,
            path=str(final / path.name),
            created_at=now(),
        )
        with db.session() as s:
            if tenant is not None:
                _within_quota(db, s, tenant, size, limits)
            s.add(record)
        staging.rename(final)
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
