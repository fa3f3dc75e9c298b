"""The job service: a job is validated and written to the database, run as a Ray Job
(`python -m training SPEC.json`), followed until it ends, and its model registered.

The database is the queue and the record. The API writes jobs (`create`, `cancel`); one
`JobRunner` (a single Serve replica) moves them along on every `tick()`:

    validating_files -> queued -> running -> succeeded | failed
                 \\________\\__________\\___> cancelled   (on request)

Every step is a conditional update from the state it expects, so the API and the runner never
overwrite each other. The runner keeps nothing it needs in memory: how far each job's log has
been read is stored with the events it produced, in one transaction, so a runner restarted at
any moment picks up where it stopped, records nothing twice, and finds each job's Ray Job by
its submission id. A job Ray no longer knows (the cluster was replaced) is submitted again
under the same run name, and Ray Train resumes it from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update

from service import files as files_mod
from service.db import Database, File, Job, JobCheckpoint, JobEvent, Model, newest_first, now
from service.errors import Conflict, InvalidRequest, NotFound, RateLimited
from service.registry import Registry
from service.schemas import CreateJobRequest
from training import artifacts
from training.config import SCRATCH, Hyperparameters, load_spec

log = logging.getLogger("ray.serve")

TERMINAL = ("succeeded", "failed", "cancelled")
# the format a task's training file must have
FORMAT_OF_TASK = {v: k for k, v in files_mod.TASK_OF_FORMAT.items()}
PURPOSE_OF_TASK = {
    "text-classification": "fine-tune",
    "extractive-qa": "fine-tune",
    "masked-lm": "pretrain",
}
# "auto" epochs: enough passes to see about this many examples, within [1, 10]
AUTO_EXAMPLES = 2000
SPEC_TOP_LEVEL = ("objective", "scratch_size", "vocab_size")
WORKER_START_TIMEOUT_S = 900
EXIT_BAD_INPUT = 2  # `python -m training`: the spec or the data was refused
_EVENT = '{"tuneserve_event"'


def new_job_id() -> str:
    return "ftjob-" + secrets.token_hex(12)


def auto_epochs(rows: int) -> int:
    return max(1, min(10, math.ceil(AUTO_EXAMPLES / max(rows, 1))))


# ---------------------------------------------------------------------------- the API's side


def create(
    db: Database,
    registry: Registry,
    req: CreateJobRequest,
    *,
    home: Path,
    default_workers: int = 1,
    cpus_per_worker: float = 1.0,
    use_gpu: bool = False,
    tenant: str | None = None,
    max_unfinished: int | None = None,
) -> Job:
    """Check a job request against its files and model, write it as `validating_files`.
    A tenant with `max_unfinished` jobs not finished yet gets a 429."""
    if tenant is not None and max_unfinished is not None:
        with db.session() as s:
            unfinished = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.tenant == tenant, Job.status.not_in(TERMINAL))
            )
        if unfinished >= max_unfinished:
            raise RateLimited(
                f"tenant {tenant!r} has {unfinished} unfinished jobs, the most it may have "
                f"(setting TUNESERVE_MAX_JOBS_PER_TENANT); retry when one finishes",
                param="training_file",
            )
    train = files_mod.get(db, req.training_file, tenant)
    valid = files_mod.get(db, req.validation_file, tenant) if req.validation_file else None
    task = req.task or files_mod.TASK_OF_FORMAT[train.format]
    for f, param in ((train, "training_file"), (valid, "validation_file")):
        if f is None:
            continue
        if f.format != FORMAT_OF_TASK[task]:
            raise InvalidRequest(
                f"{param} {f.id} holds {f.format} data; a {task} job needs "
                f"{FORMAT_OF_TASK[task]} data",
                param=param,
            )
        if f.purpose != PURPOSE_OF_TASK[task]:
            raise InvalidRequest(
                f"{param} {f.id} was uploaded with purpose {f.purpose!r}; a {task} job "
                f"takes files uploaded with purpose {PURPOSE_OF_TASK[task]!r}",
                param=param,
            )
    if valid is not None and train.labels and valid.labels:
        unknown = sorted(set(valid.labels) - set(train.labels))
        if unknown:
            raise InvalidRequest(
                f"validation_file has labels the training file lacks: {unknown}",
                param="validation_file",
            )

    if req.model == SCRATCH:
        if task != "masked-lm":
            raise InvalidRequest(
                "only a masked-lm job starts from `scratch`; fine-tune an encoder", param="model"
            )
        base_id = SCRATCH
    else:
        base = registry.resolve(req.model)  # 404 naming the model
        if base.manifest.task != "feature-extraction":
            raise InvalidRequest(
                f"model {req.model!r} is a {base.manifest.task} model; start from an encoder "
                "(`base` or a masked-lm job's model)",
                param="model",
            )
        base_id = base.manifest.id

    hp = req.requested_hyperparameters()
    n_epochs, batch_size, lr_mult = (
        hp.pop("n_epochs"),
        hp.pop("batch_size"),
        hp.pop("learning_rate_multiplier"),
    )
    top = {k: hp.pop(k) for k in SPEC_TOP_LEVEL if k in hp}
    defaults = Hyperparameters()
    resolved = {
        "n_epochs": auto_epochs(train.rows) if n_epochs == "auto" else n_epochs,
        "batch_size": defaults.batch_size if batch_size == "auto" else batch_size,
        "learning_rate_multiplier": 1.0 if lr_mult == "auto" else lr_mult,
    }
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    job_id = new_job_id()
    output = f"ft:{req.model}:{req.suffix or ''}:{job_id[-8:]}"
    scaling = req.scaling
    spec = {
        "run_id": job_id,
        "task": task,
        "base_model": base_id,
        "train_file": train.path,
        **({"validation_file": valid.path} if valid else {}),
        "output_model_id": output,
        "hyperparameters": {
            **hp,
            "epochs": resolved["n_epochs"],
            "batch_size": resolved["batch_size"],
            "learning_rate": defaults.learning_rate * resolved["learning_rate_multiplier"],
            "seed": seed,
        },
        "scaling": {
            "num_workers": (scaling.num_workers if scaling else None) or default_workers,
            "use_gpu": use_gpu if scaling is None or scaling.use_gpu is None else scaling.use_gpu,
            "mixed_precision": scaling.mixed_precision if scaling else "no",
            "cpus_per_worker": cpus_per_worker,
        },
        **top,
    }
    try:
        load_spec(json.dumps(spec))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(x) for x in err["loc"][1:]]
        field = loc[-1] if loc else "spec"
        param = "hyperparameters." + field if loc[:1] == ["hyperparameters"] else field
        raise InvalidRequest(f"{param}: {err['msg']}", param=param) from exc

    job = Job(
        id=job_id,
        tenant=tenant,
        model=req.model,
        task=task,
        training_file=train.id,
        validation_file=valid.id if valid else None,
        hyperparameters=resolved,
        spec=spec,
        suffix=req.suffix,
        seed=seed,
        metadata_=req.metadata,
        status="validating_files",
        output_model=output,
        created_at=now(),
        cancel_requested=False,
        attempt=0,
        log_offset=0,
        settled=False,
    )
    with db.session() as s:
        s.add(job)
        _event(s, job.id, f"Created {task} job {job.id} from {req.model}", key="created")
    return job


def get(db: Database, job_id: str, tenant: str | None = None) -> Job:
    with db.session() as s:
        job = s.scalar(select(Job).where(Job.id == job_id))
    if job is None or (tenant is not None and job.tenant != tenant):
        raise NotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id")
    return job


def listing(
    db: Database, *, tenant: str | None = None, after: str | None = None, limit: int = 20
) -> tuple[list[Job], bool]:
    q = select(Job)
    if tenant is not None:
        q = q.where(Job.tenant == tenant)
    with db.session() as s:
        cursor = None
        if after:
            cursor = s.scalar(select(Job.seq).where(Job.id == after))
            if cursor is None:
                raise InvalidRequest(f"`after`: no job {after!r}", param="after")
        return newest_first(s, q, Job, limit, cursor)


def events(
    db: Database, job: Job, *, after: str | None = None, limit: int = 20
) -> tuple[list[JobEvent], bool]:
    """Newest first, as OpenAI lists them; `after` is the last event id of the previous page."""
    q = select(JobEvent).where(JobEvent.job_id == job.id)
    cursor = _seq_of(after, "ftevent-") if after else None
    with db.session() as s:
        return newest_first(s, q, JobEvent, limit, cursor)


def checkpoints(
    db: Database, job: Job, *, after: str | None = None, limit: int = 10
) -> tuple[list[JobCheckpoint], bool]:
    q = select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)
    cursor = _seq_of(after, "ftckpt-") if after else None
    with db.session() as s:
        return newest_first(s, q, JobCheckpoint, limit, cursor)


def lineage(db: Database, model_id: str) -> dict | None:
    """Where a model a job made came from (None for a model imported or trained by hand)."""
    with db.session() as s:
        m = s.scalar(select(Model).where(Model.id == model_id))
    if m is None:
        return None
    return {
        "job_id": m.job_id,
        "base_model": m.base_model,
        "dataset_sha256": m.dataset_sha256,
        "precision": m.precision,
    }


def _seq_of(public_id: str, prefix: str) -> int:
    if not public_id.startswith(prefix) or not public_id[len(prefix) :].isdigit():
        raise InvalidRequest(f"`after` must be an id like {prefix}42", param="after")
    return int(public_id[len(prefix) :])


def model_owners(db: Database, model_ids: list[str]) -> dict[str, str | None]:
    """For each id a job makes (or made), the job's tenant. Ids no job names are absent."""
    with db.session() as s:
        rows = s.execute(
            select(Job.output_model, Job.tenant).where(Job.output_model.in_(model_ids))
        ).all()
    return {model: tenant for model, tenant in rows}


def cancel(db: Database, job_id: str, tenant: str | None = None) -> Job:
    """Mark a job cancelled at once; the runner stops its Ray Job and discards its output."""
    job = get(db, job_id, tenant)
    with db.session() as s:
        done = s.execute(
            update(Job)
            .where(Job.id == job.id, Job.status.not_in(TERMINAL))
            .values(
                status="cancelled",
                cancel_requested=True,
                finished_at=now(),
                settled=Job.ray_job_id.is_(None),  # never submitted: nothing to wind down
            )
        ).rowcount
        if done:
            _event(s, job.id, "The job was cancelled", key="status:cancelled")
    if not done:
        job = get(db, job_id, tenant)
        raise Conflict(f"job {job_id} has already {job.status}; it cannot be cancelled")
    return get(db, job_id, tenant)


# ---------------------------------------------------------------------------- views


def view(job: Job) -> dict:
    """The OpenAI fine-tuning job object, plus `task` and `spec`."""
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": job.created_at,
        "error": job.error,
        "fine_tuned_model": job.fine_tuned_model,
        "finished_at": job.finished_at,
        "hyperparameters": job.hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": job.hyperparameters}},
        "model": job.model,
        "organization_id": job.tenant or "local",
        "result_files": [],
        "seed": job.seed,
        "status": job.status,
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "integrations": None,
        "metadata": job.metadata_,
        "estimated_finish": job.estimated_finish if job.status not in TERMINAL else None,
        "suffix": job.suffix,
        "task": job.task,
        "attempt": job.attempt,
        "spec": job.spec,
    }


def event_view(e: JobEvent) -> dict:
    return {
        "id": f"ftevent-{e.seq}",
        "object": "fine_tuning.job.event",
        "created_at": e.created_at,
        "level": e.level,
        "message": e.message,
        "type": e.type,
        "data": e.data,
    }


def checkpoint_view(c: JobCheckpoint, job: Job) -> dict:
    return {
        "id": f"ftckpt-{c.seq}",
        "object": "fine_tuning.job.checkpoint",
        "created_at": c.created_at,
        "fine_tuned_model_checkpoint": f"{job.output_model}:ckpt-step-{c.step}",
        "fine_tuning_job_id": job.id,
        "metrics": c.metrics,
        "step_number": c.step,
    }


def _event(
    s,
    job_id: str,
    message: str,
    *,
    key: str,
    level: str = "info",
    type_: str = "message",
    data: dict | None = None,
) -> None:
    """Add an event unless one with this key exists (a log line Ray printed twice)."""
    exists = s.scalar(
        select(func.count())
        .select_from(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.key == key)
    )
    if not exists:
        s.add(
            JobEvent(
                job_id=job_id,
                key=key[:160],
                created_at=now(),
                level=level,
                type=type_,
                message=message,
                data=data,
            )
        )


# ---------------------------------------------------------------------------- the runner


def _fmt(metrics: dict) -> str:
    skip = {"type", "step", "epoch", "workers", "resumed_from_step", "train_samples_per_s"}
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in metrics.items()
        if k not in skip
    )


# Ray Train's own lines worth an event: what a job waiting for workers is waiting for
_RAY_LINES = [
    (re.compile(r"Requesting resources: (.+)$"), "info", "Waiting for training resources: {}"),
    (
        re.compile(r"Started training worker group of size (\d+)"),
        "info",
        "{} training worker(s) started",
    ),
    (
        re.compile(r"\[FailurePolicy\] RETRY"),
        "warn",
        "A training worker failed; Ray Train restarts the workers from the last checkpoint",
    ),
    (
        re.compile(r"worker group startup timed out"),
        "warn",
        "The training workers did not start in time (not enough free CPUs or GPUs?); "
        "Ray Train tries again",
    ),
]


def parse_events(text: str) -> list[dict]:
    """The `{"tuneserve_event": ...}` objects in a chunk of job log, in order, and messages for
    the lines of Ray Train that say what the job waits for."""
    decoder = json.JSONDecoder()
    out = []
    for line in text.splitlines():
        at = line.find(_EVENT)
        if at < 0:
            for pattern, level, template in _RAY_LINES:
                m = pattern.search(line)
                if m:
                    message = template.format(*(g.strip() for g in m.groups()))
                    out.append({"type": "message", "message": message, "level": level})
                    break
            continue
        try:
            obj, _ = decoder.raw_decode(line, at)  # Ray may append "[repeated 2x ...]"
        except json.JSONDecodeError:
            continue
        out.append(obj["tuneserve_event"])
    return out


def failure_reason(logs: str, exit_code: int | None) -> dict:
    """The job's `error` from its log: the refused-input lines, or the last exception."""
    lines = logs.splitlines()
    if exit_code == EXIT_BAD_INPUT:
        picked: list[str] = []
        for i, line in enumerate(lines):
            if line.startswith(("invalid spec", "invalid data")):
                picked = [line] + [x.strip() for x in lines[i + 1 : i + 21] if x.startswith("  ")]
        message = "\n".join(picked) or "the training data or spec was refused"
        code = "invalid_training_file" if "invalid data" in message else "invalid_spec"
        return {"code": code, "message": message, "param": "training_file"}
    exc = [ln for ln in lines if re.match(r"^(\S+\.)?[A-Z]\w*(Error|Exception|Interrupt)\b", ln)]
    message = exc[-1] if exc else next((ln for ln in reversed(lines) if ln.strip()), "")
    return {
        "code": "training_failed",
        "message": f"training failed (exit code {exit_code}): {message.strip()[:2000]}",
        "param": None,
    }


class JobRunner:
    """Moves jobs along; `tick()` is one pass. Run one of these per service."""

    def __init__(
        self,
        db: Database,
        home: Path,
        *,
        max_running: int = 1,
        address: str | None = None,
        python: str = sys.executable,
    ):
        self.db, self.home, self.max_running = db, Path(home), max_running
        self.address, self.python = address, python
        self._client: Any = None
        self._gcs: str | None = None

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            address = self.address
            if address is None:
                import ray

                address = ray.get_runtime_context().gcs_address
            self._client = JobSubmissionClient(address)
            import ray

            # every process of the job talks to this cluster, even where a machine runs more
            # than one Ray (Ray's own helpers otherwise refuse to pick one)
            self._gcs = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
        return self._client

    def _job_env(self) -> dict[str, str]:
        env = {
            # Ray Train gives up on starting its workers after 60 s; a GPU node scaled up from
            # zero, or a busy machine, takes longer
            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(WORKER_START_TIMEOUT_S),
        }
        if self._gcs:
            env["RAY_ADDRESS"] = self._gcs
        return env

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

    # validating_files -> queued | failed
    def _validate_files(self) -> None:
        with self.db.session() as s:
            jobs = list(s.scalars(select(Job).where(Job.status == "validating_files")))
            for job in jobs:
                problem = None
                for fid in filter(None, (job.training_file, job.validation_file)):
                    f = s.scalar(select(File).where(File.id == fid))
                    if f is None or f.deleted or not Path(f.path).is_file():
                        problem = f"file {fid} is gone (deleted before the job started)"
                    elif _sha256(Path(f.path)) != f.sha256:
                        problem = f"file {fid} changed on disk since it was uploaded"
                if problem:
                    self._finish(
                        s,
                        job,
                        "failed",
                        error={
                            "code": "invalid_training_file",
                            "message": problem,
                            "param": "training_file",
                        },
                    )
                else:
                    s.execute(
                        update(Job)
                        .where(Job.id == job.id, Job.status == "validating_files")
                        .values(status="queued")
                    )
                    _event(s, job.id, "Files validated; the job is queued", key="status:queued")

    # queued -> running
    def _start_queued(self) -> None:
        with self.db.session() as s:
            running = s.scalar(select(func.count()).select_from(Job).where(Job.status == "running"))
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
            s.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(attempt=attempt, ray_job_id=sub_id, log_offset=0)
            )
        run_dir = self.home / "runs" / job.id
        run_dir.mkdir(parents=True, exist_ok=True)
        spec_path = run_dir / "spec.json"
        spec_path.write_text(json.dumps(job.spec, indent=2))
        client = self.client
        entry = (
            f"{shlex.quote(self.python)} -m training {shlex.quote(str(spec_path))} "
            f"--home {shlex.quote(str(self.home))}"
        )
        if self._gcs:  # named outright: Ray's "auto" guesses wrong beside a second Ray
            entry += f" --ray-address {shlex.quote(self._gcs)}"
        try:
            client.submit_job(
                entrypoint=entry,
                submission_id=sub_id,
                entrypoint_num_cpus=0,
                metadata={"tuneserve_job": job.id, "attempt": str(attempt)},
                runtime_env={"env_vars": self._job_env()},
            )
        except RuntimeError as exc:
            if "already exists" not in str(exc):
                log.warning("submitting job %s failed (%s); retrying next tick", job.id, exc)
                return
        with self.db.session() as s:
            if resubmit:
                _event(
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
            ).rowcount
            if moved:
                _event(s, job.id, f"Training started (Ray job {sub_id})", key="status:running")

    # running -> succeeded | failed | cancelled (and wind down cancelled ones)
    def _follow(self, job: Job) -> None:
        assert job.ray_job_id
        try:
            info = self.client.get_job_info(job.ray_job_id)
        except RuntimeError as exc:
            if "does not exist" not in str(exc) and "404" not in str(exc):
                raise
            if job.status == "cancelled":
                self._settle_cancelled(job)
            else:
                self._submit(job, resubmit=True)
            return
        logs = self.client.get_job_logs(job.ray_job_id)
        self._read_log(job, logs)
        status = str(info.status)
        if job.status == "cancelled":
            if status in ("PENDING", "RUNNING"):
                self.client.stop_job(job.ray_job_id)
            else:
                self._settle_cancelled(job)
            return
        if status == "SUCCEEDED":
            self._succeeded(job)
        elif status in ("FAILED", "STOPPED"):
            with self.db.session() as s:
                current = s.scalar(select(Job).where(Job.id == job.id))
                if current is not None and current.status == "running":
                    error = (
                        {
                            "code": "stopped",
                            "message": "the Ray job was stopped outside tuneserve",
                            "param": None,
                        }
                        if status == "STOPPED"
                        else failure_reason(logs, info.driver_exit_code)
                    )
                    self._finish(s, current, "failed", error=error)

    def _read_log(self, job: Job, logs: str) -> None:
        end = logs.rfind("\n", job.log_offset) + 1
        if end <= job.log_offset:
            return
        chunk = logs[job.log_offset : end]
        with self.db.session() as s:
            tokens, eta = None, None
            for ev in parse_events(chunk):
                kind, step = ev.get("type"), ev.get("step")
                if kind == "progress":
                    tokens, eta = ev.get("tokens"), ev.get("eta_s")
                    _event(
                        s,
                        job.id,
                        f"Step {step}/{ev.get('total_steps')}: training loss={ev.get('loss', 0):.4f}",
                        key=f"progress:{step}",
                        type_="metrics",
                        data={
                            "step": step,
                            "total_steps": ev.get("total_steps"),
                            "train_loss": ev.get("loss"),
                            "learning_rate": ev.get("learning_rate"),
                            "samples_per_s": ev.get("samples_per_s"),
                            "tokens_per_s": ev.get("tokens_per_s"),
                            "epoch": ev.get("epoch"),
                        },
                    )
                elif kind == "metrics":
                    _event(
                        s,
                        job.id,
                        f"Evaluation at step {step}: {_fmt(ev)}",
                        key=f"eval:{step}",
                        type_="metrics",
                        data={k: v for k, v in ev.items() if k != "type"},
                    )
                elif kind == "checkpoint":
                    exists = s.scalar(
                        select(func.count())
                        .select_from(JobCheckpoint)
                        .where(JobCheckpoint.job_id == job.id, JobCheckpoint.step == step)
                    )
                    if not exists:
                        metrics = {k: v for k, v in ev.items() if k != "type"}
                        metrics["train_loss"] = ev.get("loss")
                        s.add(
                            JobCheckpoint(
                                job_id=job.id, step=step, metrics=metrics, created_at=now()
                            )
                        )
                elif kind == "message":
                    msg = str(ev.get("message", ""))
                    digest = hashlib.sha1(msg.encode()).hexdigest()[:16]
                    _event(
                        s,
                        job.id,
                        msg,
                        key=f"msg:{job.attempt}:{digest}",
                        level=ev.get("level", "info"),
                    )
                elif kind == "result":
                    _event(
                        s,
                        job.id,
                        f"Training finished; exported {ev.get('model')} (serving {ev.get('precision')})",
                        key="result",
                        data={k: v for k, v in ev.items() if k != "type"},
                    )
            values: dict = {"log_offset": end}
            if tokens is not None:
                values["trained_tokens"] = max(int(tokens), job.trained_tokens or 0)
            if eta is not None:
                values["estimated_finish"] = now() + int(eta)
            s.execute(update(Job).where(Job.id == job.id).values(**values))
        job.log_offset = end

    def _succeeded(self, job: Job) -> None:
        model_id = job.output_model
        folder = artifacts.model_dir(self.home, model_id)
        manifest = artifacts.read_manifest(folder)
        with self.db.session() as s:
            current = s.scalar(select(Job).where(Job.id == job.id))
            if current is None or current.status != "running":
                return
            if not s.scalar(select(func.count()).select_from(Model).where(Model.id == model_id)):
                s.add(
                    Model(
                        id=model_id,
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
            self._finish(s, current, "succeeded", fine_tuned_model=model_id)

    def _finish(self, s, job: Job, status: str, **values) -> None:
        moved = s.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == job.status)
            .values(status=status, finished_at=now(), settled=True, **values)
        ).rowcount
        if not moved:
            return
        if status == "succeeded":
            _event(
                s,
                job.id,
                f"The job succeeded: {values.get('fine_tuned_model')} is served",
                key="status:succeeded",
            )
        else:
            err = values.get("error") or {}
            _event(
                s,
                job.id,
                f"The job failed: {err.get('message', '')}",
                key="status:failed",
                level="error",
            )

    def _settle_cancelled(self, job: Job) -> None:
        """A cancelled job's Ray Job has ended: make sure nothing of it is served."""
        folder = artifacts.model_dir(self.home, job.output_model)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job.id).values(settled=True))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
