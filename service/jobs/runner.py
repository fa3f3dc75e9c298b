"""The queue: one runner (a single Serve replica) moves jobs along on every `tick()`:

    validating_files -> queued -> running -> succeeded | failed
                 \\________\\__________\\___> cancelled   (on request)

Every step is a conditional update from the state it expects, so the API and the runner never
overwrite each other. The runner keeps nothing it needs in memory: a runner restarted at any
moment picks up from the database, finds each job's Ray Job by its submission id, and submits
again (under the same run name, so Ray Train resumes from the last checkpoint) a job Ray no
longer knows because the cluster was replaced.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from sqlalchemy import func, select, update

from service.db import Database, File, Job, Model, changed, now
from service.jobs import follow
from service.jobs.ray_jobs import RayJobs
from service.jobs.store import add_event, run_dir
from training import artifacts
from training.data import file_sha256

log = logging.getLogger("ray.serve")


class JobRunner:
    """Moves jobs along; `tick()` is one pass. Run one of these per service."""

    def __init__(self, db: Database, home: Path, ray_jobs: RayJobs, *, max_running: int = 1):
        self.db, self.home, self.ray, self.max_running = db, Path(home), ray_jobs, max_running

    def tick(self) -> None:
        self._validate_files()
        with self.db.session() as s:
            following = list(
                s.scalars(
                    select(Job)
                    .where(
                        (Job.status == "running")
                        | ((Job.status == "cancelled") & Job.settled.is_(False))
                    )
                    .order_by(Job.seq)
                )
            )
        for job in following:
            try:
                self._follow(job)
            except Exception:  # one job's trouble must not stall the others
                log.exception("following job %s failed; retrying next tick", job.id)
        self._start_queued()

    def _validate_files(self) -> None:
        """validating_files -> queued, or failed when a file is gone or changed on disk."""
        with self.db.session() as s:
            for job in list(s.scalars(select(Job).where(Job.status == "validating_files"))):
                problem = None
                for fid in filter(None, (job.training_file, job.validation_file)):
                    f = s.scalar(select(File).where(File.id == fid))
                    if f is None or f.deleted or not Path(f.path).is_file():
                        problem = f"file {fid} is gone (deleted before the job started)"
                    elif file_sha256(f.path) != f.sha256:
                        problem = f"file {fid} changed on disk since it was uploaded"
                if problem:
                    error = {
                        "code": "invalid_training_file",
                        "message": problem,
                        "param": "training_file",
                    }
                    self._finish(s, job, "failed", error=error)
                    continue
                moved = changed(
                    s,
                    update(Job)
                    .where(Job.id == job.id, Job.status == "validating_files")
                    .values(status="queued"),
                )
                if moved:
                    add_event(s, job.id, "Files validated; the job is queued", key="status:queued")

    def _start_queued(self) -> None:
        """queued -> running, oldest first, up to `max_running` at once."""
        with self.db.session() as s:
            running = (
                s.scalar(select(func.count()).select_from(Job).where(Job.status == "running")) or 0
            )
            queued = list(
                s.scalars(
                    select(Job)
                    .where(Job.status == "queued")
                    .order_by(Job.seq)
                    .limit(max(0, self.max_running - running))
                )
            )
        for job in queued:
            self._submit(job)

    def _submit(self, job: Job, *, resubmit: bool = False) -> None:
        attempt = job.attempt + 1 if (resubmit or job.ray_job_id is None) else job.attempt
        sub_id = f"{job.id}-{attempt}"
        # the id is written before submitting: a runner that dies in between finds the Ray
        # Job under this id on its next tick instead of starting a second one
        with self.db.session() as s:
            changed(
                s,
                update(Job)
                .where(Job.id == job.id)
                .values(attempt=attempt, ray_job_id=sub_id, log_offset=0),
            )
        folder = run_dir(self.home, job.id)
        folder.mkdir(parents=True, exist_ok=True)
        spec_path = folder / "spec.json"
        spec_path.write_text(json.dumps(job.spec, indent=2))
        metadata = {"tuneserve_job": job.id, "attempt": str(attempt)}
        if not self.ray.submit(sub_id, spec_path, self.home, metadata):
            return
        with self.db.session() as s:
            if resubmit:
                add_event(
                    s,
                    job.id,
                    f"Ray no longer knew the job's run; submitted again as {sub_id}, resuming "
                    "from its last checkpoint",
                    key=f"resubmit:{attempt}",
                    level="warn",
                )
                return
            moved = s.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == "queued")
                .values(status="running", started_at=now())
            )
            if moved:
                add_event(s, job.id, f"Training started (Ray job {sub_id})", key="status:running")

    def _follow(self, job: Job) -> None:
        """running -> succeeded | failed; a cancelled job's Ray Job is stopped, then settled."""
        assert job.ray_job_id
        state = self.ray.state(job.ray_job_id)
        if state is None:
            if job.status == "cancelled":
                self._settle_cancelled(job)
            else:
                self._submit(job, resubmit=True)
            return
        logs = self.ray.logs(job.ray_job_id)
        follow.record(self.db, job, logs)
        if job.status == "cancelled":
            if state.status in ("PENDING", "RUNNING"):
                self.ray.stop(job.ray_job_id)
            else:
                self._settle_cancelled(job)
        elif state.status == "SUCCEEDED":
            self._succeeded(job)
        elif state.status in ("FAILED", "STOPPED"):
            stopped = {
                "code": "stopped",
                "message": "the Ray job was stopped outside tuneserve",
                "param": None,
            }
            error = (
                stopped
                if state.status == "STOPPED"
                else follow.failure_reason(logs, state.exit_code)
            )
            with self.db.session() as s:
                current = s.scalar(select(Job).where(Job.id == job.id))
                if current is not None and current.status == "running":
                    self._finish(s, current, "failed", error=error)

    def _succeeded(self, job: Job) -> None:
        """Register the job's model (owned by the job's tenant), then mark the job done."""
        manifest = artifacts.read_manifest(artifacts.model_dir(self.home, job.output_model))
        with self.db.session() as s:
            current = s.scalar(select(Job).where(Job.id == job.id))
            if current is None or current.status != "running":
                return
            if not s.scalar(
                select(func.count()).select_from(Model).where(Model.id == job.output_model)
            ):
                s.add(
                    Model(
                        id=job.output_model,
                        tenant=job.tenant,
                        task=manifest.task,
                        base_model=job.model,
                        job_id=job.id,
                        dataset_sha256=s.scalar(
                            select(File.sha256).where(File.id == job.training_file)
                        ),
                        spec=job.spec,
                        metrics=manifest.metrics,
                        export_report=manifest.parity.model_dump() if manifest.parity else None,
                        precision=manifest.precision,
                        created_at=now(),
                    )
                )
            self._finish(s, current, "succeeded", fine_tuned_model=job.output_model)

    def _finish(self, s, job: Job, status: str, **values) -> None:
        moved = changed(
            s,
            update(Job)
            .where(Job.id == job.id, Job.status == job.status)
            .values(status=status, finished_at=now(), settled=True, **values),
        )
        if not moved:
            return
        if status == "succeeded":
            message = f"The job succeeded: {values.get('fine_tuned_model')} is served"
            add_event(s, job.id, message, key="status:succeeded")
        else:
            message = f"The job failed: {(values.get('error') or {}).get('message', '')}"
            add_event(s, job.id, message, key="status:failed", level="error")

    def _settle_cancelled(self, job: Job) -> None:
        """A cancelled job's Ray Job has ended: make sure nothing of it is served."""
        folder = artifacts.model_dir(self.home, job.output_model)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job.id).values(settled=True))
