"""Uploads (service/files.py) on SQLite and PostgreSQL: checked whole, stored, listed."""

import io

import pytest
from testdata import classification_file

from service import files
from service.errors import InvalidRequest, TooLarge


def _upload(db, home, text: str, name="train.jsonl", purpose="fine-tune", max_bytes=10**6):
    return files.store(db, home, io.BytesIO(text.encode()), name, purpose, max_bytes=max_bytes)


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
