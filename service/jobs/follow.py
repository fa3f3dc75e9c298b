"""A job's log -> its events, checkpoints and progress in the store, each once.

The run's own events come typed (training/events.py); a few of Ray Train's lines are worth an
event too: what a job waiting for workers waits for, and a worker that failed. How far the log
has been read is stored with the events it produced, in one transaction, so a runner
restarted at any moment reads on from there and records nothing twice (and lines Ray prints
twice are deduplicated by key).
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from sqlalchemy import func, select, update

from service.db import Database, Job, JobCheckpoint, now
from service.jobs.store import add_event
from training import events

# Ray Train's own lines worth an event: (pattern, level, message)
RAY_LINES: list[tuple[re.Pattern, Literal["info", "warn"], str]] = [
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


def ray_message(line: str) -> events.Message | None:
    for pattern, level, template in RAY_LINES:
        m = pattern.search(line)
        if m:
            return events.Message(
                level=level, message=template.format(*(g.strip() for g in m.groups()))
            )
    return None


def read_lines(text: str) -> list[events.Event]:
    """Our events and Ray Train's worthwhile lines, in the order the log has them."""
    out: list[events.Event] = []
    for line in text.splitlines():
        if events.MARKER in line:
            out.extend(events.parse(line))
        elif (msg := ray_message(line)) is not None:
            out.append(msg)
    return out


def fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def record(db: Database, job: Job, logs: str) -> None:
    """Store what the log holds past the job's offset, up to its last complete line."""
    end = logs.rfind("\n", job.log_offset) + 1
    if end <= job.log_offset:
        return
    with db.session() as s:
        tokens, eta = None, None
        for ev in read_lines(logs[job.log_offset : end]):
            if isinstance(ev, events.Progress):
                tokens, eta = ev.tokens, ev.eta_s
            _store(s, job, ev)
        values: dict = {"log_offset": end}
        if tokens is not None:
            values["trained_tokens"] = max(int(tokens), job.trained_tokens or 0)
        if eta is not None:
            values["estimated_finish"] = now() + int(eta)
        s.execute(update(Job).where(Job.id == job.id).values(**values))
    job.log_offset = end


def _store(s, job: Job, ev: events.Event) -> None:
    if isinstance(ev, events.Progress):
        add_event(
            s,
            job.id,
            f"Step {ev.step}/{ev.total_steps}: training loss={ev.loss:.4f}",
            key=f"progress:{ev.step}",
            type_="metrics",
            data={
                "step": ev.step,
                "total_steps": ev.total_steps,
                "train_loss": ev.loss,
                "learning_rate": ev.learning_rate,
                "samples_per_s": ev.samples_per_s,
                "tokens_per_s": ev.tokens_per_s,
                "epoch": ev.epoch,
            },
        )
    elif isinstance(ev, events.Evaluation):
        scores = fmt({"loss": ev.loss, **ev.metrics} if ev.loss is not None else ev.metrics)
        add_event(
            s,
            job.id,
            f"Evaluation at step {ev.step}: {scores}",
            key=f"eval:{ev.step}",
            type_="metrics",
            data=ev.flat(),
        )
    elif isinstance(ev, events.Checkpoint):
        exists = s.scalar(
            select(func.count())
            .select_from(JobCheckpoint)
            .where(JobCheckpoint.job_id == job.id, JobCheckpoint.step == ev.step)
        )
        if not exists:
            metrics = {**ev.flat(), "train_loss": ev.loss}
            s.add(JobCheckpoint(job_id=job.id, step=ev.step, metrics=metrics, created_at=now()))
    elif isinstance(ev, events.Message):
        digest = hashlib.sha1(ev.message.encode()).hexdigest()[:16]
        add_event(s, job.id, ev.message, key=f"msg:{job.attempt}:{digest}", level=ev.level)
    elif isinstance(ev, events.Result):
        add_event(
            s,
            job.id,
            f"Training finished; exported {ev.model} (serving {ev.precision})",
            key="result",
            data=ev.model_dump(exclude={"type"}),
        )


def failure_reason(logs: str, exit_code: int | None) -> dict:
    """The job's `error` from its log: the run's Failure event when it refused its input,
    else the last exception it printed."""
    refused = [ev for ev in events.parse(logs) if isinstance(ev, events.Failure)]
    if exit_code == events.EXIT_BAD_INPUT and refused:
        return {"code": refused[-1].code, "message": refused[-1].message, "param": "training_file"}
    lines = logs.splitlines()
    exc = [ln for ln in lines if re.match(r"^(\S+\.)?[A-Z]\w*(Error|Exception|Interrupt)\b", ln)]
    message = exc[-1] if exc else next((ln for ln in reversed(lines) if ln.strip()), "")
    return {
        "code": "training_failed",
        "message": f"training failed (exit code {exit_code}): {message.strip()[:2000]}",
        "param": None,
    }
