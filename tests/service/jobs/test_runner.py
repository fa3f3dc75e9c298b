"""jobs/runner.py against real Ray Jobs: each job runs tests/fake_run.py, a stand-in for
`python -m training` that writes the events (and prints the lines) the test planned, when the
test says. Events are
recorded once across runner restarts; a job Ray forgot is submitted again; the queue runs the
oldest job first; a cancelled job's exported model is removed."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update
from testdata import UPLOAD_LIMITS as LIMITS
from testdata import classification_file

from service import files
from service.db import Database, Job, JobCheckpoint, JobEvent, Model
from service.jobs import store as jobs
from service.jobs.ray_jobs import RayJobs
from service.jobs.runner import JobRunner, RunnerLimits
from service.jobs.spec import JobDefaults
from service.registry import Registry
from service.schemas.jobs import CreateJobRequest
from training import artifacts, events

pytestmark = pytest.mark.slow
FAKE_RUN = Path(__file__).resolve().parents[2] / "fake_run.py"
TIMEOUT_S = 120


def _event(event: events._Event) -> str:
    return f"{events.MARKER}: {event.model_dump_json()}}}\n"


BASELINE = events.Baseline(model="base", metrics={"accuracy": 0.625})
PROGRESS = events.Progress(
    step=2, total_steps=4, epoch=0, loss=0.5, learning_rate=1e-4, samples_per_s=1.0,
    tokens_per_s=9.0, tokens=64, eta_s=3,
)  # fmt: skip
CHECKPOINT = events.Checkpoint(step=2, epoch=0, loss=0.5, metrics={"accuracy": 0.75})


class Setup:
    def __init__(self, home: Path):
        self.home = home
        self.db = Database(f"sqlite:///{home / 'tuneserve.db'}")
        self.db.upgrade()
        self.registry = Registry(home)
        data = classification_file(home / "data.jsonl", rows=8)
        with data.open("rb") as f:
            self.file = files.store(self.db, home, f, "data.jsonl", "fine-tune", limits=LIMITS)

    def runner(self, max_running: int = 1, **limits_given) -> JobRunner:
        command = [sys.executable, str(FAKE_RUN)]
        limits = RunnerLimits(
            **{"max_running": max_running, "ray_log_poll_s": 0.0, "min_event_interval_s": 0.0,
               **limits_given}
        )  # fmt: skip
        return JobRunner(self.db, self.home, RayJobs(command=command), limits)

    def job(self, plan) -> Job:
        """A job whose run follows `plan(the job's output model id)`."""
        req = CreateJobRequest(model="base", training_file=self.file.id)
        job = jobs.create(self.db, req, self.registry.resolve("base"), defaults=JobDefaults())
        folder = jobs.run_dir(self.home, job.id)
        folder.mkdir(parents=True)
        (folder / "plan.json").write_text(json.dumps(plan(job.output_model)))
        return job

    def go(self, job: Job, name: str) -> None:
        (jobs.run_dir(self.home, job.id) / name).touch()

    def until(self, runner: JobRunner, check, what: str):
        deadline = time.monotonic() + TIMEOUT_S
        while not (result := check()):
            assert time.monotonic() < deadline, f"{what}: not within {TIMEOUT_S}s"
            runner.tick()
            time.sleep(0.3)
        return result

    def keys(self, job: Job) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(JobEvent.key).where(JobEvent.job_id == job.id)))

    def status(self, job: Job) -> Job:
        return jobs.get(self.db, job.id)


@pytest.fixture
def setup(ray_session, store, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(store / "models" / "base", home / "models" / "base")
    s = Setup(home)
    yield s
    s.db.dispose()


def _ray_client():
    import ray
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(ray.get_runtime_context().gcs_address)


def test_events_once_across_restarts_a_forgotten_job_resumed_and_a_cancel_removes_its_model(setup):
    message = _event(events.Message(message="hello"))
    job = setup.job(
        lambda output: {
            "attempt 1": [
                {"print": "(TrainController pid=2) Requesting resources: {'CPU': 1.0} * 1\n"},
                {"event": _event(BASELINE)},
                {"event": _event(PROGRESS)},
                {"event": _event(PROGRESS)},  # twice (a line written again): recorded once
                {"event": _event(CHECKPOINT)},
                {"event": message[:30]},  # half a line: read only once it is whole
                {"wait_for": "go1"},
                {"event": message[30:]},
                {"wait_for": "never"},
            ],
            "attempt 2": [{"model": output}, {"wait_for": "never"}],
        }
    )
    first = setup.runner()
    first.tick()  # validating_files -> queued -> running
    assert setup.status(job).status == "running"
    setup.until(first, lambda: "progress:2" in setup.keys(job), "the progress event")

    second = setup.runner()  # a restarted service reads on from where the first stopped
    second.tick()
    setup.go(job, "go1")
    setup.until(second, lambda: sum(k.startswith("msg:") for k in setup.keys(job)) == 2, "hello")
    keys = setup.keys(job)
    assert keys.count("progress:2") == 1 and keys.count("eval:2") == 0
    with setup.db.session() as s:
        steps = list(s.scalars(select(JobCheckpoint.step).where(JobCheckpoint.job_id == job.id)))
        messages = list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job.id)))
    assert steps == [2]
    assert "Waiting for training resources: {'CPU': 1.0} * 1" in messages and "hello" in messages
    assert "base zero-shot on validation: accuracy 0.625" in messages
    with setup.db.session() as s:
        zero = s.scalar(
            select(JobEvent.data).where(JobEvent.job_id == job.id, JobEvent.key == "baseline")
        )
    assert zero == {"zero_shot": {"accuracy": 0.625}, "model": "base"}  # what the console draws
    current = setup.status(job)
    assert current.trained_tokens == 64 and current.estimated_finish

    # the cluster forgets the job (stopped and deleted behind the runner's back, as a new
    # cluster would not know it): it is submitted again as attempt 2, under the same run
    client = _ray_client()
    client.stop_job(current.ray_job_id)
    while not client.get_job_status(current.ray_job_id).is_terminal():
        time.sleep(0.2)
    client.delete_job(current.ray_job_id)
    second.tick()
    resumed = setup.status(job)
    assert resumed.status == "running" and resumed.attempt == 2
    assert resumed.ray_job_id == f"{job.id}-2"
    assert any(k.startswith("resubmit:") for k in setup.keys(job))

    # cancelled after its model was exported: the Ray job is stopped and the model removed
    output = job.output_model
    model_dir = artifacts.model_dir(setup.home, output)
    setup.until(second, model_dir.exists, "the exported model")
    jobs.cancel(setup.db, job.id)
    setup.until(second, lambda: setup.status(job).settled, "the cancel settled")
    assert client.get_job_status(resumed.ray_job_id).is_terminal()
    assert not model_dir.exists()
    with setup.db.session() as s:
        assert s.scalar(select(Model).where(Model.id == output)) is None


def test_the_queue_serves_tenants_in_turn_and_a_finished_job_registers_its_model(setup):
    """One slot: acme's first job runs; when it ends, globex's job goes before acme's second
    (older, but acme was served last); a finished job registers its model, owned by its
    tenant, and its run folder goes."""

    def plan(output: str) -> dict:
        return {"attempt 1": [{"wait_for": "go"}, {"model": output}, {"exit": 0}]}

    made = [setup.job(plan) for _ in range(3)]
    with setup.db.session() as s:
        for job, tenant in zip(made, ("acme", "acme", "globex"), strict=True):
            s.execute(update(Job).where(Job.id == job.id).values(tenant=tenant))
    runner = setup.runner(max_running=1)
    runner.tick()
    assert [setup.status(j).status for j in made] == ["running", "queued", "queued"]
    setup.go(made[0], "go")
    setup.until(runner, lambda: setup.status(made[0]).status == "succeeded", "acme's first job")
    setup.until(runner, lambda: setup.status(made[2]).status == "running", "globex's job")
    assert setup.status(made[1]).status == "queued"
    done = setup.status(made[0])
    with setup.db.session() as s:
        row = s.scalar(select(Model).where(Model.id == done.fine_tuned_model))
    assert row is not None and row.job_id == done.id and row.dataset_sha256 == setup.file.sha256
    assert row.tenant == "acme" and not row.shared
    assert not jobs.run_dir(setup.home, done.id).exists()  # an ended job keeps no run folder
    for job in made[1:]:
        jobs.cancel(setup.db, job.id)
    setup.until(runner, lambda: all(setup.status(j).settled for j in made), "the cancels")
    # the two that ran keep no run folder (the queued one never had one but for its plan)
    assert not any(jobs.run_dir(setup.home, j.id).exists() for j in (made[0], made[2]))


def test_a_job_cancelled_after_the_queue_was_read_is_never_submitted(setup):
    """The runner read the job as queued; a cancel lands before it submits: the submission
    claims only a job still queued, so nothing runs and the cancel stands."""
    job = setup.job(lambda output: {"attempt 1": [{"exit": 0}]})
    with setup.db.session() as s:
        s.execute(update(Job).where(Job.id == job.id).values(status="queued"))
    with setup.db.session() as s:
        stale = s.scalar(select(Job).where(Job.id == job.id))  # what _start_queued read
    jobs.cancel(setup.db, job.id)
    runner = setup.runner()
    runner._submit(stale)
    after = setup.status(job)
    assert after.status == "cancelled"
    with setup.db.session() as s:
        assert s.scalar(select(Job.ray_job_id).where(Job.id == job.id)) is None
    submitted = [j.submission_id for j in _ray_client().list_jobs()]
    assert not any(str(sid).startswith(job.id) for sid in submitted)


def test_a_job_that_cannot_be_followed_fails_saying_why_and_progress_is_thinned(setup):
    """The run ends well but leaves no model: registering it fails tick after tick, and after
    `max_follow_errors` in a row the job fails with the reason, its slot freed. Its progress
    events, 40 of them a few milliseconds apart, are kept at most one a second (the last
    step always)."""

    def plan(output: str) -> dict:
        progress = [
            {"event": _event(PROGRESS.model_copy(update={"step": i, "total_steps": 40,
                                                         "at": 1000 + i / 100}))}
            for i in range(1, 41)
        ]  # fmt: skip
        return {"attempt 1": [*progress, {"exit": 0}]}

    job = setup.job(plan)
    runner = setup.runner(max_follow_errors=3, min_event_interval_s=1.0)
    setup.until(runner, lambda: setup.status(job).status == "failed", "the job's failure")
    failed = setup.status(job)
    assert failed.error["code"] == "follow_failed", failed.error
    assert "could not follow the job" in failed.error["message"]
    assert str(setup.home) not in failed.error["message"]  # no server path in an error
    steps = [k for k in setup.keys(job) if k.startswith("progress:")]
    assert steps == ["progress:1", "progress:40"], steps
