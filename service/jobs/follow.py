"""A job's events -> its events, checkpoints and progress in the store, each once.

The run writes its own events (training/events.py) to one file per process under
`runs/<job>/events/`; each is read from the offset the store kept, so a tick costs only what
the run added since the last one, and the new offsets are stored with the events they
produced, in one transaction: a runner restarted at any moment reads on from there and
records nothing twice. Progress is recorded at most every `min_interval_s` (the last step
always). A few of Ray Train's lines, from the Ray Job's log, are worth an event too.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select, update

from service.db import Database, Job, JobCheckpoint, JobEvent, now
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
_PATH = re.compile(r"(?<![\w.~])/(?:[^\s'\"/:]+/)+([^\s'\"/:]+)")


def ray_messages(text: str) -> list[events.Message]:
    """Ray Train's worthwhile lines in a chunk of the Ray Job's log."""
    out = []
    for line in text.splitlines():
        for pattern, level, template in RAY_LINES:
            if m := pattern.search(line):
                out.append(
                    events.Message(
                        level=level, message=template.format(*(g.strip() for g in m.groups()))
                    )
                )
                break
    return out


def read_new(folder: Path, offsets: dict[str, int]) -> tuple[list[events.Event], dict[str, int]]:
    """The events the run's files hold past `offsets` (up to each file's last whole line), and
    the offsets after them."""
    found: list[events.Event] = []
    offsets = dict(offsets)
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        at = offsets.get(path.name, 0)
        with path.open("rb") as f:
            f.seek(at)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        if end:
            found.extend(events.parse(chunk[:end].decode("utf-8", errors="replace")))
            offsets[path.name] = at + end
    return sorted(found, key=lambda e: e.at), offsets


def record(
    db: Database,
    job: Job,
    new: list[events.Event],
    *,
    offsets: dict[str, int] | None = None,
    log_offset: int | None = None,
    min_interval_s: float = 0.0,
) -> None:
    """Store new events and where reading stopped, in one transaction."""
    with db.session() as s:
        last = _last_progress_at(s, job.id)
        values: dict = {}
        for ev in new:
            if isinstance(ev, events.Progress):
                values["trained_tokens"] = max(ev.tokens, job.trained_tokens or 0)
                if ev.eta_s is not None:
                    values["estimated_finish"] = now() + int(ev.eta_s)
                if ev.at - last < min_interval_s and ev.step != ev.total_steps:
                    continue  # progress is kept at most so often: its numbers still count
                last = ev.at
            _store(s, job, ev)
        if offsets is not None:
            values["follow_offsets"] = offsets
        if log_offset is not None:
            values["log_offset"] = log_offset
        if values:
            s.execute(update(Job).where(Job.id == job.id).values(**values))
    if offsets is not None:
        job.follow_offsets = offsets
    if log_offset is not None:
        job.log_offset = log_offset


def _last_progress_at(s, job_id: str) -> float:
    data = s.scalar(
        select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.key.startswith("progress:"))
        .order_by(JobEvent.seq.desc())
        .limit(1)
    )
    return float((data or {}).get("at", 0.0))


def _store(s, job: Job, ev: events.Event) -> None:
    if isinstance(ev, events.Progress):
        data = {"step": ev.step, "total_steps": ev.total_steps, "train_loss": ev.loss,
                "learning_rate": ev.learning_rate, "samples_per_s": ev.samples_per_s,
                "tokens_per_s": ev.tokens_per_s, "epoch": ev.epoch, "at": ev.at}  # fmt: skip
        message = f"Step {ev.step}/{ev.total_steps}: training loss={ev.loss:.4f}"
        add_event(s, job.id, message, key=f"progress:{ev.step}", type_="metrics", data=data)
    elif isinstance(ev, events.Evaluation):
        scores = {"loss": ev.loss, **ev.metrics} if ev.loss is not None else ev.metrics
        message = f"Evaluation at step {ev.step}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in scores.items()
        )
        add_event(s, job.id, message, key=f"eval:{ev.step}", type_="metrics", data=ev.flat())
    elif isinstance(ev, events.Checkpoint):
        exists = s.scalar(
            select(func.count())
            .select_from(JobCheckpoint)
            .where(JobCheckpoint.job_id == job.id, JobCheckpoint.step == ev.step)
        )
        if not exists:
            metrics = {**ev.flat(), "train_loss": ev.loss}
            s.add(JobCheckpoint(job_id=job.id, step=ev.step, metrics=metrics, created_at=now()))
    elif isinstance(ev, events.Baseline):
        # a message whose data the console draws as the line each evaluation is measured against
        zero = {"zero_shot": ev.metrics, "model": ev.model}
        add_event(s, job.id, ev.summary(), key="baseline", data=zero)
    elif isinstance(ev, events.Message):
        digest = hashlib.sha1(ev.message.encode()).hexdigest()[:16]
        add_event(s, job.id, ev.message, key=f"msg:{job.attempt}:{digest}", level=ev.level)
    elif isinstance(ev, events.Result):
        report = job_report(ev)
        message = f"Training finished ({ev.method or job.task}); exported {ev.model}"
        if report["improvement"]:
            metric, gain = next(iter(report["improvement"].items()))
            message += (
                f". {metric}: {report['metrics'][metric]:.4g} against {report['baseline'][metric]:.4g}"
                f" for {job.model} zero-shot on the same validation data ({gain:+.4g})"
            )
        add_event(s, job.id, message, key="result", data=ev.model_dump(exclude={"type"}))
        s.execute(update(Job).where(Job.id == job.id).values(report=report))


RANKED = ("accuracy", "f1")  # the metric each task ranks checkpoints by


def job_report(ev: events.Result) -> dict:
    """What fine-tuning bought: each score the run and the base's zero-shot share, and the
    difference (the ranking metric first)."""
    shared = sorted((k for k in ev.metrics if k in ev.baseline), key=lambda k: k not in RANKED)
    return {
        "method": ev.method,
        "metrics": ev.metrics,
        "baseline": ev.baseline,
        "improvement": {k: ev.metrics[k] - ev.baseline[k] for k in shared},
    }


def without_paths(text: str) -> str:
    """A message with every absolute path cut to its last part: no server path in an answer."""
    return _PATH.sub(r"\1", text)


def failure_reason(folder: Path, logs: str, exit_code: int | None) -> dict:
    """The job's `error`: the run's Failure event when it refused its input, else the last
    exception its Ray Job printed."""
    refused = [e for e in read_new(folder, {})[0] if isinstance(e, events.Failure)]
    if exit_code == events.EXIT_BAD_INPUT and refused:
        message = without_paths(refused[-1].message)
        return {"code": refused[-1].code, "message": message, "param": "training_file"}
    lines = logs.splitlines()
    exc = [ln for ln in lines if re.match(r"^(\S+\.)?[A-Z]\w*(Error|Exception|Interrupt)\b", ln)]
    message = exc[-1] if exc else next((ln for ln in reversed(lines) if ln.strip()), "")
    return {
        "code": "training_failed",
        "message": without_paths(
            f"training failed (exit code {exit_code}): {message.strip()[:2000]}"
        ),
        "param": None,
    }
