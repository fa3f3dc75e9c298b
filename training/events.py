"""The typed event protocol between a training run and whoever watches it.

`python -m training` (its driver and its rank-0 worker) writes each event as one JSON line,
`{"tuneserve_event": {...}}`: on stdout, where `tuneserve finetune` reads it (service/cli/);
or, under the job runner (TUNESERVE_EVENTS_DIR set), appended to a file of its own process in
that folder, which the runner reads from where it stopped (service/jobs/follow.py), so a long
job costs it only what is new. Both parse with `parse`, so a field is named in one place.
Light: no torch, no ray.

A run that refuses its spec or its data emits a `Failure` and exits with EXIT_BAD_INPUT.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MARKER = '{"tuneserve_event"'
# `python -m training`'s exit status when its spec or its data was refused (a Failure event
# says which): the job failed because of its input, not because training broke
EXIT_BAD_INPUT = 2
# where a run under the job runner writes its events: <folder>/<pid>.jsonl
EVENTS_DIR_ENV = "TUNESERVE_EVENTS_DIR"


class _Event(BaseModel):
    # a newer run may add fields: an older reader keeps what it knows
    model_config = ConfigDict(extra="ignore")

    at: float = Field(default_factory=time.time, description="when, in Unix seconds")


class Progress(_Event):
    """Training steps done so far, every `log_every_steps`."""

    type: Literal["progress"] = "progress"
    step: int
    total_steps: int
    epoch: int
    loss: float
    learning_rate: float
    samples_per_s: float
    tokens_per_s: float
    tokens: int = Field(description="tokens trained since this attempt started")
    eta_s: float | None = None


class _Scored(_Event):
    step: int
    epoch: int
    loss: float | None = Field(None, description="training loss at this step")
    metrics: dict[str, float] = Field(description="validation metrics: accuracy, f1, ...")
    workers: int = 1
    resumed_from_step: int = 0
    train_samples_per_s: float | None = None

    def flat(self) -> dict:
        """step, epoch, loss, the metrics and the run's facts in one mapping (the job API's
        event `data` and checkpoint `metrics`)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loss": self.loss,
            **self.metrics,
            "resumed_from_step": self.resumed_from_step,
            "workers": self.workers,
            "train_samples_per_s": self.train_samples_per_s,
        }


class Evaluation(_Scored):
    """The validation metrics at a step (and the training loss there)."""

    type: Literal["metrics"] = "metrics"


class Checkpoint(_Scored):
    """A checkpoint was saved with these metrics."""

    type: Literal["checkpoint"] = "checkpoint"


class Message(_Event):
    type: Literal["message"] = "message"
    level: Literal["info", "warn", "error"] = "info"
    message: str


class Baseline(_Event):
    """The base model's zero-shot scores on the run's validation data, known before training
    starts: what a watcher compares each evaluation with."""

    type: Literal["baseline"] = "baseline"
    model: str = Field(description="the base model scored zero-shot")
    metrics: dict[str, float]

    def summary(self) -> str:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items())
        return f"{self.model} zero-shot on validation: {shown}"


class Failure(_Event):
    """The run refused its input; `message` names the field, or the file and lines."""

    type: Literal["failure"] = "failure"
    code: Literal["invalid_spec", "invalid_training_file"]
    message: str


class Result(_Event):
    """The run finished: what it exported, and the metrics of the checkpoint it chose."""

    type: Literal["result"] = "result"
    run_id: str
    step: int
    metrics: dict[str, float]
    model: str | None = None
    precision: str | None = None
    # the base model's zero-shot scores on the same validation data, and how it was trained
    baseline: dict[str, float] = Field(default_factory=dict)
    method: Literal["full", "head"] | None = None


Event = Annotated[
    Progress | Evaluation | Checkpoint | Message | Baseline | Failure | Result,
    Field(discriminator="type"),
]
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


_QUIET = {"on": False}


def quiet(on: bool) -> None:
    """Drop this process's events from now on (or emit them again): a run inside a run, such
    as a cross-validation fold, keeps its steps and checkpoints out of the job's."""
    _QUIET["on"] = on


def emit(event: _Event) -> None:
    """Write one event line: to this process's file in TUNESERVE_EVENTS_DIR when it is set
    (one writer a file, each line appended whole), else on stdout, flushed."""
    if _QUIET["on"]:
        return
    line = f"{MARKER}: {event.model_dump_json()}}}\n"
    folder = os.environ.get(EVENTS_DIR_ENV)
    if not folder:
        print(line, end="", flush=True)
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    with (Path(folder) / f"{os.getpid()}.jsonl").open("a", encoding="utf-8") as f:
        f.write(line)


def parse(text: str) -> list[Event]:
    """The events in a chunk of output, in order. Ray prefixes a worker's lines with its name
    and may append "[repeated 2x ...]"; a line that is not an event is skipped."""
    decoder = json.JSONDecoder()
    out: list[Event] = []
    for line in text.splitlines():
        at = line.find(MARKER)
        if at < 0:
            continue
        try:
            obj, _ = decoder.raw_decode(line, at)
            out.append(_EVENT.validate_python(obj["tuneserve_event"]))
        except (json.JSONDecodeError, ValidationError, KeyError, TypeError):
            continue  # not one of ours after all, or from a newer protocol we cannot read
    return out
