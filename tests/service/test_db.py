"""The database layer on SQLite and PostgreSQL: migrations, uploads, jobs, and the runner's
bookkeeping (events read once, across restarts)."""

import io
import json

import pytest
from sqlalchemy import inspect, select
from testdata import classification_file

from service import files, jobs
from service.db import Base, Database, Job, JobCheckpoint, JobEvent
from service.errors import Conflict, InvalidRequest, NotFound, TooLarge
from service.registry import Registry
from service.schemas import CreateJobRequest


def test_migrations_build_the_schema_the_models_declare(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    database = Database(db_url)
    database.upgrade()
    database.upgrade()  # a second start applies nothing and fails on nothing
    with database.engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert {"files", "jobs", "job_events", "job_checkpoints", "models", "alembic_version"} <= tables
    assert diff == []
    database.dispose()


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


def _job_request(file_id: str, **kw) -> CreateJobRequest:
    return CreateJobRequest(model="base", training_file=file_id, **kw)


def test_a_job_is_checked_against_its_files_and_model(db, store, tmp_path):
    registry = Registry(store, "base")
    cls = _upload(db, tmp_path, classification_file(tmp_path / "c.jsonl", rows=8).read_text())
    corpus = _upload(db, tmp_path, "some text to pretrain on\n", "c.txt", purpose="pretrain")

    job = jobs.create(db, registry, _job_request(cls.id, suffix="demo"), home=tmp_path)
    assert job.status == "validating_files" and job.task == "text-classification"
    assert job.output_model == f"ft:base:demo:{job.id[-8:]}"
    assert job.hyperparameters == {
        "n_epochs": 10,
        "batch_size": 16,
        "learning_rate_multiplier": 1.0,
    }

    with pytest.raises(InvalidRequest, match="holds classification data; a extractive-qa job"):
        jobs.create(db, registry, _job_request(cls.id, task="extractive-qa"), home=tmp_path)
    with pytest.raises(InvalidRequest, match="holds corpus data; a text-classification job"):
        jobs.create(
            db, registry, _job_request(corpus.id, task="text-classification"), home=tmp_path
        )
    with pytest.raises(InvalidRequest, match="only a masked-lm job starts from `scratch`"):
        jobs.create(
            db,
            registry,
            _job_request(cls.id).model_copy(update={"model": "scratch"}),
            home=tmp_path,
        )
    pretrain = jobs.create(db, registry, _job_request(corpus.id), home=tmp_path)
    assert pretrain.task == "masked-lm"  # inferred from the file
    with pytest.raises(NotFound):
        jobs.create(db, registry, _job_request("file-nope"), home=tmp_path)
    with pytest.raises(InvalidRequest, match="hyperparameters.max_seq_length"):
        jobs.create(
            db,
            registry,
            _job_request(cls.id, hyperparameters={"max_seq_length": 2}),
            home=tmp_path,
        )
    # a file in use cannot be deleted
    with pytest.raises(Conflict, match=job.id):
        files.delete(db, cls.id)


def test_cancel_moves_only_unfinished_jobs(db, store, tmp_path):
    registry = Registry(store, "base")
    f = _upload(db, tmp_path, classification_file(tmp_path / "c.jsonl", rows=8).read_text())
    job = jobs.create(db, registry, _job_request(f.id), home=tmp_path)
    cancelled = jobs.cancel(db, job.id)
    assert cancelled.status == "cancelled" and cancelled.settled and cancelled.finished_at
    with pytest.raises(Conflict, match="already cancelled"):
        jobs.cancel(db, job.id)
    files.delete(db, f.id)  # no unfinished job uses it now
    with pytest.raises(NotFound):
        files.get(db, f.id)


class FakeRay:
    """Stands in for Ray Jobs where the test is about bookkeeping, not about Ray: a job whose
    log grows, and a cluster that can forget it (as a replaced cluster would)."""

    def __init__(self):
        self.jobs: dict[str, dict] = {}

    def submit_job(self, *, submission_id, **kw):
        if submission_id in self.jobs:
            raise RuntimeError(f"Job with submission_id {submission_id} already exists.")
        self.jobs[submission_id] = {"status": "RUNNING", "log": "", "kw": kw}
        return submission_id

    def get_job_info(self, sub_id):
        if sub_id not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {sub_id} does not exist.")
        return type("Info", (), {"status": self.jobs[sub_id]["status"], "driver_exit_code": None})

    def get_job_logs(self, sub_id):
        return self.jobs[sub_id]["log"]

    def stop_job(self, sub_id):
        self.jobs[sub_id]["status"] = "STOPPED"


def _line(event: dict, prefix: str = "") -> str:
    return prefix + json.dumps({"tuneserve_event": event}) + "\n"


def test_the_runner_records_each_event_once_across_restarts(db, store, tmp_path):
    registry = Registry(store, "base")
    f = _upload(db, tmp_path, classification_file(tmp_path / "c.jsonl", rows=8).read_text())
    job = jobs.create(db, registry, _job_request(f.id), home=tmp_path)
    ray = FakeRay()

    def runner():
        r = jobs.JobRunner(db, tmp_path, max_running=1)
        r._client = ray
        return r

    first = runner()
    first.tick()  # validating_files -> queued -> running
    assert jobs.get(db, job.id).status == "running"
    sub = jobs.get(db, job.id).ray_job_id
    progress = {
        "type": "progress",
        "step": 2,
        "total_steps": 4,
        "loss": 0.5,
        "tokens": 64,
        "eta_s": 3,
    }
    ckpt = {"type": "checkpoint", "step": 2, "loss": 0.5, "accuracy": 0.75}
    # Ray prints a worker's line twice, sometimes with a suffix; the last line is unfinished
    ray.jobs[sub]["log"] = (
        "(TrainController pid=2) Requesting resources: {'CPU': 1.0} * 1\n"
        + _line(progress, "(RayTrainWorker pid=1) ")
        + _line(progress, "(RayTrainWorker pid=1) ").rstrip("\n")
        + " [repeated 2x across cluster]\n"
        + _line(ckpt)
        + '{"tuneserve_event": {"type": "mess'
    )
    first.tick()
    second = runner()  # a restarted service reads on from where the first stopped
    second.tick()
    ray.jobs[sub]["log"] += 'age", "message": "hello"}}\n'
    second.tick()

    with db.session() as s:
        keys = list(s.scalars(select(JobEvent.key).where(JobEvent.job_id == job.id)))
        steps = list(s.scalars(select(JobCheckpoint.step).where(JobCheckpoint.job_id == job.id)))
    assert keys.count("progress:2") == 1 and steps == [2]
    assert sum(k.startswith("msg:") for k in keys) == 2
    with db.session() as s:
        messages = list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job.id)))
    assert "Waiting for training resources: {'CPU': 1.0} * 1" in messages and "hello" in messages
    current = jobs.get(db, job.id)
    assert current.trained_tokens == 64 and current.estimated_finish

    # the cluster forgets the job: it is submitted again under a new attempt, same run name
    del ray.jobs[sub]
    second.tick()
    current = jobs.get(db, job.id)
    assert current.status == "running" and current.attempt == 2
    assert current.ray_job_id == f"{job.id}-2" and current.ray_job_id in ray.jobs
    assert json.loads((tmp_path / "runs" / job.id / "spec.json").read_text())["run_id"] == job.id

    # cancelled: the Ray job is stopped, then the job is settled
    jobs.cancel(db, job.id)
    second.tick()
    assert ray.jobs[current.ray_job_id]["status"] == "STOPPED"
    second.tick()
    with db.session() as s:
        assert s.scalar(select(Job.settled).where(Job.id == job.id)) is True
