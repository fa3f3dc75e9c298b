"""The queue: one runner (a single Serve replica) moves jobs along on every `tick()`:

    validating_files -> queued -> running -> succeeded | failed
                 \\________\\__________\\___> cancelled   (on request)

Every step is a conditional update from the state it expects, so the API and the runner never
overwrite each other, and a job is submitted only while it is still queued. The runner keeps
nothing it needs in memory: a runner restarted at any moment picks up from the database,
finds each job's Ray Job by its submission id, and submits again (under the same run name, so
Ray Train resumes from the last checkpoint) a job Ray no longer knows because the cluster was
replaced. Free slots go to the tenants with the fewest jobs running, oldest job first.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, update

from service import retention
from service.db import Database, File, Job, changed, now
from service.jobs import follow
from service.jobs.ray_jobs import JobState, RayJobs
from service.jobs.store import add_event, register_model, run_dir
from training import artifacts
from training.data import file_sha256

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class RunnerLimits:
    max_running: int = 1
    min_event_interval_s: float = 2.0  # progress recorded at most this often
    max_follow_errors: int = 10  # ticks in a row a job may fail to be followed
    ray_log_poll_s: float = 10.0  # Ray Train's own lines, read this often
    sweep_after_s: float = 3600.0


class JobRunner:
    """Moves jobs along; `tick()` is one pass. Run one of these per service."""

    def __init__(
        self, db: Database, home: Path, ray_jobs: RayJobs, limits: RunnerLimits = RunnerLimits()
    ):
        self.db, self.home, self.ray, self.limits = db, Path(home), ray_jobs, limits
        self._swept = False
        self._ray_log_read: dict[str, float] = {}  # job id -> when its Ray log was last read

    def tick(self) -> None:
        if not self._swept:  # what a crash left behind, once a start
            retention.sweep(self.db, self.home, self.limits.sweep_after_s)
            self._swept = True
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
                if job.follow_errors:
                    self._set(job, follow_errors=0)
            except Exception as exc:  # one job's trouble must not stall the others
                self._follow_failed(job, exc)
        self._start_queued()

    def _set(self, job: Job, **values) -> None:
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job.id).values(**values))

    def _follow_failed(self, job: Job, exc: Exception) -> None:
        """A job that cannot be followed tick after tick fails, saying why."""
        errors = job.follow_errors + 1
        log.warning("following job %s failed (%d in a row): %r", job.id, errors, exc)
        if errors < self.limits.max_follow_errors:
            self._set(job, follow_errors=errors)
            return
        if job.status == "cancelled":  # a cancel that cannot be wound down is given up
            self._settle_cancelled(job)
            return
        reason = follow.without_paths(f"{type(exc).__name__}: {exc}")[:1000]
        error = {
            "code": "follow_failed",
            "message": f"tuneserve could not follow the job: {reason}",
            "param": None,
        }
        with self.db.session() as s:
            self._finish(s, job, "failed", error=error)
        self._stop_quietly(job)

    def _stop_quietly(self, job: Job) -> None:
        try:
            if job.ray_job_id and (state := self.ray.state(job.ray_job_id)) and not state.terminal:
                self.ray.stop(job.ray_job_id)
        except Exception as exc:
            log.warning("stopping the Ray job of %s failed: %r", job.id, exc)

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
                elif changed(
                    s,
                    update(Job)
                    .where(Job.id == job.id, Job.status == "validating_files")
                    .values(status="queued"),
                ):
                    add_event(s, job.id, "Files validated; the job is queued", key="status:queued")

    def _start_queued(self) -> None:
        """queued -> running, up to `max_running` at once: each free slot to the tenant with
        the fewest jobs running and, of those, the one served longest ago (round robin); its
        oldest job first. One tenant's queue never holds every slot while others wait."""
        with self.db.session() as s:
            running = Counter(s.scalars(select(Job.tenant).where(Job.status == "running")))
            queued = list(s.scalars(select(Job).where(Job.status == "queued").order_by(Job.seq)))
            served = dict(
                s.execute(select(Job.tenant, func.max(Job.started_at)).group_by(Job.tenant)).all()
            )
        for _ in range(max(0, self.limits.max_running - sum(running.values()))):
            if not queued:
                return
            job = min(queued, key=lambda j: (running[j.tenant], served.get(j.tenant) or 0, j.seq))
            queued.remove(job)
            running[job.tenant] += 1
            served[job.tenant] = now()
            self._submit(job)

    def _submit(self, job: Job, *, resubmit: bool = False) -> None:
        attempt = job.attempt + 1 if (resubmit or job.ray_job_id is None) else job.attempt
        sub_id = f"{job.id}-{attempt}"
        # claimed before submitting, and only while the job is still where it was: a cancel
        # in between wins, and a runner that dies after the claim finds the Ray Job by its id
        with self.db.session() as s:
            claimed = changed(
                s,
                update(Job)
                .where(Job.id == job.id, Job.status == ("running" if resubmit else "queued"))
                .values(attempt=attempt, ray_job_id=sub_id, log_offset=0),
            )
        if not claimed:
            return
        folder = run_dir(self.home, job.id)
        folder.mkdir(parents=True, exist_ok=True)
        spec_path = folder / "spec.json"
        spec_path.write_text(json.dumps(job.spec, indent=2))
        metadata = {"tuneserve_job": job.id, "attempt": str(attempt)}
        if not self.ray.submit(sub_id, spec_path, self.home, metadata, folder / "events"):
            return
        with self.db.session() as s:
            if resubmit:
                message = f"Ray no longer knew the job's run; submitted again as {sub_id}, resuming from its last checkpoint"
                add_event(s, job.id, message, key=f"resubmit:{attempt}", level="warn")
            elif changed(
                s,
                update(Job)
                .where(Job.id == job.id, Job.status == "queued")
                .values(status="running", started_at=now()),
            ):
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
        self._read_events(job, state)
        if job.status == "cancelled":
            if state.terminal:
                self._settle_cancelled(job)
            else:
                self.ray.stop(job.ray_job_id)
        elif state.status == "SUCCEEDED":
            self._succeeded(job)
        elif state.status in ("FAILED", "STOPPED"):
            self._failed(job, state)

    def _read_events(self, job: Job, state: JobState) -> None:
        """The run's new events; Ray Train's lines from the Ray Job's log every so often (and
        at the end), only what it added."""
        assert job.ray_job_id
        new, offsets = follow.read_new(
            run_dir(self.home, job.id) / "events", job.follow_offsets or {}
        )
        log_offset = None
        if (
            state.terminal
            or time.monotonic() - self._ray_log_read.get(job.id, 0) > self.limits.ray_log_poll_s
        ):
            self._ray_log_read[job.id] = time.monotonic()
            logs = self.ray.logs(job.ray_job_id)
            end = logs.rfind("\n", job.log_offset) + 1
            if end > job.log_offset:
                new = follow.ray_messages(logs[job.log_offset : end]) + new
                log_offset = end
        if new or offsets != (job.follow_offsets or {}) or log_offset is not None:
            follow.record(self.db, job, new, offsets=offsets, log_offset=log_offset,
                          min_interval_s=self.limits.min_event_interval_s)  # fmt: skip

    def _failed(self, job: Job, state: JobState) -> None:
        assert job.ray_job_id
        if state.status == "STOPPED":
            error = {
                "code": "stopped",
                "message": "the Ray job was stopped outside tuneserve",
                "param": None,
            }
        else:
            logs = self.ray.logs(job.ray_job_id)
            error = follow.failure_reason(
                run_dir(self.home, job.id) / "events", logs, state.exit_code
            )
        with self.db.session() as s:
            current = s.scalar(select(Job).where(Job.id == job.id))
            if current is not None and current.status == "running":
                self._finish(s, current, "failed", error=error)
        retention.remove_run(self.home, job.id)

    def _succeeded(self, job: Job) -> None:
        """Register the job's model (owned by the job's tenant), then mark the job done."""
        manifest = artifacts.read_manifest(artifacts.model_dir(self.home, job.output_model))
        with self.db.session() as s:
            current = s.scalar(select(Job).where(Job.id == job.id))
            if current is None or current.status != "running":
                return
            # the model's row only with the move to `succeeded`: a cancel that came first
            # wins, and leaves no row behind for a model it removes
            if self._finish(s, current, "succeeded", fine_tuned_model=job.output_model):
                register_model(s, job, manifest)
        retention.remove_run(self.home, job.id)

    def _finish(self, s, job: Job, status: str, **values) -> bool:
        """Move the job from the status it was read in; False when something moved it first."""
        moved = changed(
            s,
            update(Job)
            .where(Job.id == job.id, Job.status == job.status)
            .values(status=status, finished_at=now(), settled=True, **values),
        )
        if not moved:
            return False
        if status == "succeeded":
            message = f"The job succeeded: {values.get('fine_tuned_model')} is served"
            add_event(s, job.id, message, key="status:succeeded")
        else:
            message = f"The job failed: {(values.get('error') or {}).get('message', '')}"
            add_event(s, job.id, message, key="status:failed", level="error")
        return True

    def _settle_cancelled(self, job: Job) -> None:
        """A cancelled job's Ray Job has ended: nothing of it is served, nothing of it kept."""
        artifacts.remove_model_dir(self.home, job.output_model)
        self._set(job, settled=True)
        retention.remove_run(self.home, job.id)
