"""What is kept, and for how long: a job's run folder (its prepared data, with the raw texts,
its initial weights and checkpoints) goes when the job has ended; what a crash left half
done is finished or removed when the job runner starts (`sweep`)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from sqlalchemy import select, update

from service.db import Database, File, Job
from service.schemas.jobs import TERMINAL

log = logging.getLogger("ray.serve")


def remove_run(home: Path, job_id: str) -> None:
    """An ended job's run folder: nothing of it is needed once it cannot resume."""
    shutil.rmtree(Path(home) / "runs" / job_id, ignore_errors=True)


def _old(path: Path, older_than_s: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > older_than_s
    except OSError:
        return False


def sweep(db: Database, home: Path, older_than_s: float) -> list[str]:
    """Finish or remove what a crash left behind; returns what it did, for the log."""
    done = _sweep_files(db, home / "files", older_than_s)
    for pattern in ("models/.staging-*", "models/.retired-*", "runs/*/.prep-*"):
        for leftover in home.glob(pattern):
            if _old(leftover, older_than_s):
                shutil.rmtree(leftover, ignore_errors=True)
                done.append(f"removed {leftover.relative_to(home)}")
    with db.session() as s:
        ended = set(
            s.scalars(select(Job.id).where(Job.status.in_(TERMINAL), Job.settled.is_(True)))
        )
    for run in home.glob("runs/ftjob-*"):
        if run.name in ended:
            remove_run(home, run.name)
            done.append(f"removed runs/{run.name} (its job had ended)")
    for line in done:
        log.info("sweep: %s", line)
    return done


def _sweep_files(db: Database, root: Path, older_than_s: float) -> list[str]:
    """An upload is recorded, then moved into place: a crash between the two is finished
    here; a folder nothing records, or a record whose folder is gone, is not kept."""
    if not root.is_dir():
        return []
    with db.session() as s:
        rows = {f.id: f for f in s.scalars(select(File).where(File.deleted.is_(False)))}
    done = []
    for incoming in root.glob(".incoming-*"):
        file_id = incoming.name.removeprefix(".incoming-")
        if file_id in rows and not (root / file_id).exists():
            incoming.rename(root / file_id)
            done.append(f"finished the upload {file_id}")
        elif _old(incoming, older_than_s):
            shutil.rmtree(incoming, ignore_errors=True)
            done.append(f"removed an unfinished upload {file_id}")
    # (only old ones: an upload in flight is recorded a moment before it is moved)
    for folder in root.iterdir():
        if (
            not folder.name.startswith(".")
            and folder.name not in rows
            and _old(folder, older_than_s)
        ):
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"removed files/{folder.name} (no record)")
    cutoff = time.time() - older_than_s
    gone = [
        fid
        for fid, f in rows.items()
        if f.created_at < cutoff
        and not Path(f.path).is_file()
        and not (root / f".incoming-{fid}").exists()
    ]
    if gone:
        with db.session() as s:
            s.execute(update(File).where(File.id.in_(gone)).values(deleted=True))
        done += [f"marked {fid} deleted (its content was gone)" for fid in gone]
    return done
