"""retention.py: what a crash left behind is finished or removed at the next start, and an
ended job's run folder goes; on SQLite and PostgreSQL."""

import io
import os
import time

from testdata import UPLOAD_LIMITS, classification_file

from service import files, retention
from service.db import File


def _age(path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_sweep_finishes_an_upload_a_crash_cut_short_and_removes_what_nothing_records(
    db, tmp_path
):
    home = tmp_path
    text = classification_file(tmp_path / "t.jsonl", rows=4).read_bytes()
    kept = files.store(db, home, io.BytesIO(text), "t.jsonl", "fine-tune", limits=UPLOAD_LIMITS)
    root = home / "files"
    # a crash after the record, before the move: the upload is still under .incoming-<id>
    moved = files.store(db, home, io.BytesIO(text), "u.jsonl", "fine-tune", limits=UPLOAD_LIMITS)
    (root / moved.id).rename(root / f".incoming-{moved.id}")
    # a crash before the record: an old .incoming- folder nothing names, and a fresh one
    (root / ".incoming-file-old").mkdir()
    _age(root / ".incoming-file-old", 7200)
    (root / ".incoming-file-new").mkdir()
    # a folder nothing records (old), a record whose content is gone (old)
    (root / "file-stray").mkdir()
    _age(root / "file-stray", 7200)
    gone = files.store(db, home, io.BytesIO(text), "g.jsonl", "fine-tune", limits=UPLOAD_LIMITS)
    (root / gone.id / "g.jsonl").unlink()
    with db.session() as s:
        s.get(File, gone.seq).created_at -= 7200
    # leftovers of an export and a preparation
    (home / "models" / ".staging-x-1234").mkdir(parents=True)
    _age(home / "models" / ".staging-x-1234", 7200)

    done = retention.sweep(db, home, older_than_s=3600)
    assert f"finished the upload {moved.id}" in done
    assert (root / moved.id / "u.jsonl").is_file() and files.get(db, moved.id)
    assert not (root / ".incoming-file-old").exists() and (root / ".incoming-file-new").exists()
    assert not (root / "file-stray").exists() and (root / kept.id).exists()
    assert [f.id for f in files.listing(db)[0]] == [moved.id, kept.id]  # `gone` is marked deleted
    assert not (home / "models" / ".staging-x-1234").exists()
    assert retention.sweep(db, home, older_than_s=3600) == []  # nothing left to do


def test_a_sweep_removes_old_leftovers_of_runs_and_the_folders_of_ended_jobs(db, store, tmp_path):
    from service.jobs import store as jobs
    from service.jobs.spec import JobDefaults
    from service.registry import Registry
    from service.schemas.jobs import CreateJobRequest

    home = tmp_path
    text = classification_file(tmp_path / "t.jsonl", rows=8).read_bytes()
    f = files.store(db, home, io.BytesIO(text), "t.jsonl", "fine-tune", limits=UPLOAD_LIMITS)
    req = CreateJobRequest(model="base", training_file=f.id)
    base = Registry(store, "base").resolve("base")
    ended, running = (jobs.create(db, req, base, defaults=JobDefaults()) for _ in range(2))
    jobs.cancel(db, ended.id)
    for job in (ended, running):
        (home / "runs" / job.id / "inputs").mkdir(parents=True)
    # a preparation a crash cut short (old, and one under way), an old retired model
    old_prep, new_prep = (
        home / "runs" / running.id / ".prep-a1",
        home / "runs" / running.id / ".prep-b2",
    )
    old_prep.mkdir()
    new_prep.mkdir()
    _age(old_prep, 7200)
    (home / "models" / ".retired-x-1").mkdir(parents=True)
    _age(home / "models" / ".retired-x-1", 7200)

    done = retention.sweep(db, home, older_than_s=3600)
    assert f"removed runs/{ended.id} (its job had ended)" in done
    assert not (home / "runs" / ended.id).exists()
    assert (home / "runs" / running.id / "inputs").is_dir()  # it may still need them
    assert not old_prep.exists() and new_prep.exists()
    assert not (home / "models" / ".retired-x-1").exists()
    assert retention.sweep(db, home, older_than_s=3600) == []
