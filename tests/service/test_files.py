"""Uploads (service/files.py) on SQLite and PostgreSQL: checked whole, stored, listed."""

import dataclasses
import io

import pytest
from testdata import UPLOAD_LIMITS, classification_file

from service import files
from service.errors import InvalidRequest, TooLarge
from training.data import Limits


def _upload(
    db, home, text: str | bytes, name="train.jsonl", purpose="fine-tune", tenant=None, **limits
):
    body = text.encode() if isinstance(text, str) else text
    upload_limits = dataclasses.replace(UPLOAD_LIMITS, **limits)
    return files.store(
        db, home, io.BytesIO(body), name, purpose, limits=upload_limits, tenant=tenant
    )


def test_an_upload_is_checked_whole_and_nothing_bad_is_kept(db, tmp_path):
    good = classification_file(tmp_path / "good.jsonl", rows=10).read_text()
    f = _upload(db, tmp_path, good)
    assert (f.format, f.rows, f.labels) == ("classification", 10, ["negative", "positive"])
    assert files.get(db, f.id).sha256 == f.sha256

    bad = good + '{"text": "no label here"}\n'
    with pytest.raises(InvalidRequest, match=r"train\.jsonl line 11: \"label\" is missing"):
        _upload(db, tmp_path, bad)
    with pytest.raises(TooLarge, match="limit of 100 bytes"):
        _upload(db, tmp_path, good, max_bytes=100)
    with pytest.raises(InvalidRequest, match="purpose must be one of"):
        _upload(db, tmp_path, good, purpose="fun")
    with pytest.raises(InvalidRequest, match="must be classification JSON Lines"):
        _upload(db, tmp_path, "just some words\n")
    # only the good file is recorded, and only its folder is on disk
    rows, more = files.listing(db)
    assert [r.id for r in rows] == [f.id] and not more
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == [f.id]


def test_file_listing_pages_newest_first(db, tmp_path):
    text = classification_file(tmp_path / "t.jsonl", rows=4).read_text()
    made = [_upload(db, tmp_path, text).id for _ in range(5)]
    page1, more1 = files.listing(db, limit=3)
    page2, more2 = files.listing(db, limit=3, after=page1[-1].id)
    assert [f.id for f in page1 + page2] == made[::-1]
    assert (more1, more2) == (True, False)


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=9)


def test_a_compressed_file_is_bounded_once_decompressed_and_line_by_line(db, tmp_path):
    """A 16 MB line in a 16 KB gzip, and a gzip that grows past the decompressed limit: each
    refused by the check's own process, quickly, naming why; the service never holds them."""
    import time

    line = _gzip(b'{"text": "' + b"a" * 16_000_000 + b'", "label": "x"}\n')
    assert len(line) < 50_000
    start = time.monotonic()
    with pytest.raises(InvalidRequest, match="line 1: is longer than 1000 characters"):
        _upload(db, tmp_path, line, data=Limits(2**30, 1000))
    bomb = _gzip(b"word " * 4_000_000)  # 20 MB of text in a few KB
    with pytest.raises(InvalidRequest, match="larger than 1000000 bytes once decompressed"):
        _upload(db, tmp_path, bomb, "c.txt.gz", "pretrain", data=Limits(10**6, 10**6))
    assert time.monotonic() - start < 20


def test_a_check_that_needs_too_much_memory_is_refused_not_fatal(db, tmp_path):
    """One JSON string of 40 MB cannot be checked in 64 MiB: the check's process fails, the
    upload is refused, and this process is none the worse."""
    squad = b'{"data": [{"paragraphs": [{"context": "' + b"x" * 40_000_000 + b'"}]}]}'
    with pytest.raises(InvalidRequest, match="could not be checked within the memory|too large"):
        _upload(db, tmp_path, squad, "q.json", max_bytes=10**8, check_memory_bytes=64 * 2**20)


def test_a_tenants_files_are_held_to_its_quota(db, tmp_path):
    from service.errors import RateLimited

    text = classification_file(tmp_path / "t.jsonl", rows=4).read_text()
    size = len(text.encode())
    _upload(db, tmp_path, text, tenant="acme", tenant_files=2, tenant_bytes=3 * size)
    _upload(db, tmp_path, text, tenant="acme", tenant_files=2, tenant_bytes=3 * size)
    with pytest.raises(RateLimited, match="has 2 files, the most it may keep"):
        _upload(db, tmp_path, text, tenant="acme", tenant_files=2)
    with pytest.raises(TooLarge, match="would pass its quota"):
        _upload(db, tmp_path, text, tenant="acme", tenant_files=10, tenant_bytes=2 * size + 1)
    # another tenant's quota is its own; nothing refused was kept
    _upload(db, tmp_path, text, tenant="globex", tenant_files=1)
    assert len(files.listing(db, tenant="acme")[0]) == 2
    assert len(list((tmp_path / "files").iterdir())) == 3
