"""The job API end to end: real HTTP, real Ray Jobs + Train + Serve, on SQLite.

The app has its own store and database under a route prefix of the session's Serve; the
tiny BERT trains for a few steps in each job. The same flow on PostgreSQL, through a killed
and restarted service, is tests/service/test_service_killed.py; the database layer runs on
both in tests/service/test_db.py.
"""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
from conftest import alive_actor_pids, resumed_step, wait_for_checkpoint
from huggingface_hub import InferenceClient
from openai import BadRequestError
from sqlalchemy import func, select
from testdata import classification_file, squad_file

from service.cli.local_ray import wait_ready
from service.db import Database, Model
from training import artifacts

pytestmark = pytest.mark.slow
JOB_TIMEOUT_S = 300
MAX_UPLOAD = 200_000
# every epoch runs: early stopping would end a tiny job whenever it stops improving
FAST = {
    "batch_size": 8,
    "learning_rate_multiplier": 20,
    "warmup_ratio": 0.0,
    "early_stopping_patience": None,
    "cv_folds": 0,  # and as many as asked (cross-validation: tests/training/test_cv.py)
}


def _submission(job: dict) -> str | None:
    return f"{job['id']}-{job['attempt']}" if job.get("attempt") else None


def ray_log(submission_id: str | None, tail: int = 6000) -> str:
    if not submission_id:
        return "(not submitted)"
    import ray
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray.get_runtime_context().gcs_address)
    lines = client.get_job_logs(submission_id).splitlines()
    return "\n".join(ln for ln in lines if "File " not in ln and "^^^" not in ln)[-tail:]


class App:
    """One deployment of the service on a database; `restart()` replaces all its replicas."""

    def __init__(self, name: str, home: Path, db_url: str | None, port: int):
        from service.settings import Settings

        self.name, self.home = name, home
        self.settings = Settings(
            home=home,
            port=port,
            database_url=db_url,
            model_replica_cpus=0.25,
            jobs_poll_s=0.5,
            job_cpus_per_worker=1.0,
            max_upload_bytes=MAX_UPLOAD,
        )
        self.url = f"http://127.0.0.1:{port}/{name}"
        self.db = Database(self.settings.db_url())
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def start(self) -> None:
        from ray import serve

        from service.main import build_app

        serve.run(
            build_app(self.settings.app_args()),
            name=self.name,
            route_prefix=f"/{self.name}",
            blocking=False,
        )
        wait_ready(self.url, timeout_s=180)

    def stop(self) -> None:
        from ray import serve

        serve.delete(self.name)

    def upload(self, path: Path, purpose: str = "fine-tune") -> httpx.Response:
        with path.open("rb") as f:
            return self.http.post(
                "/v1/files", files={"file": (path.name, f)}, data={"purpose": purpose}
            )

    def wait(
        self, job_id: str, until=("succeeded", "failed", "cancelled"), timeout_s=JOB_TIMEOUT_S
    ):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.http.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            if job["status"] in until:
                return job
            time.sleep(0.5)
        events = self.http.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=50").json()
        raise AssertionError(
            f"job {job_id} still {job['status']}: {json.dumps(events)[:3000]}\n"
            f"its Ray job's log ends:\n{ray_log(_submission(job))}"
        )

    def events(self, job_id: str) -> list[dict]:
        return self.http.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=1000").json()["data"]


@pytest.fixture(scope="module")
def app(service_url, store, serve_port, tmp_path_factory):
    """service_url first: the session's Serve (and its proxy on serve_port) is up."""
    home = tmp_path_factory.mktemp("jobs")
    shutil.copytree(store / "models" / "base", home / "models" / "base")
    deployed = App("jobs", home, None, serve_port)
    deployed.start()
    yield deployed
    deployed.stop()
    deployed.db.dispose()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("jobdata")
    return {"cls": classification_file(d / "sentiment.jsonl"), "qa": squad_file(d / "qa.json")}


def _sdk(app):
    from openai import OpenAI

    return OpenAI(base_url=f"{app.url}/v1", api_key="anything", max_retries=0)


def test_the_openai_sdk_fine_tunes_and_the_model_serves_at_once(app, data, hf_client_online):
    client = _sdk(app)
    with data["cls"].open("rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    assert uploaded.object == "file" and uploaded.bytes == data["cls"].stat().st_size
    assert client.files.content(uploaded.id).read() == data["cls"].read_bytes()
    assert uploaded.id in [f.id for f in client.files.list()]

    job = client.fine_tuning.jobs.create(
        model="base",
        training_file=uploaded.id,
        suffix="sentiment",
        seed=7,
        # no cross-validation: the full method's own path is under test (test_cv.py has it)
        hyperparameters={"n_epochs": 2, "batch_size": 8, "cv_folds": 0},  # type: ignore[typeddict-unknown-key]
        extra_body={"task": "text-classification", "training_method": "full"},
    )
    assert job.status == "validating_files" and job.seed == 7
    assert job.model_extra["training_method"] == "full"
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=10).data]

    done = app.wait(job.id)
    assert done["status"] == "succeeded", done["error"]
    model_id = done["fine_tuned_model"]
    assert model_id == f"ft:base:sentiment:{job.id[-8:]}" and done["trained_tokens"] > 0
    assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model == model_id

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and min(e.data["step"] for e in metrics) == 0  # the start, at zero-shot
    messages = [e.message for e in events]
    assert messages[-1].startswith("Created text-classification job")  # newest first
    assert sum(m.startswith("The job succeeded") for m in messages) == 1
    # paging by `after` walks the same events
    first = client.fine_tuning.jobs.list_events(job.id, limit=2)
    rest = client.fine_tuning.jobs.list_events(job.id, limit=100, after=first.data[-1].id)
    assert [e.id for e in first.data + rest.data] == [e.id for e in events]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].fine_tuning_job_id == job.id
    assert {c.step_number for c in checkpoints} <= {e.data["step"] for e in metrics}

    # served on the next request, with its own labels
    r = app.http.post("/v1/classify", json={"model": model_id, "inputs": ["wonderful loved great"]})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["label"] in ("positive", "negative")
    # the Hugging Face client gets the same scores; the openai client no embeddings from it
    hf = InferenceClient(base_url=f"{app.url}/hf/models/{model_id}")
    ranked = hf.text_classification("wonderful loved great", top_k=2)
    scores = r.json()["results"][0]["scores"]
    assert {e.label: e.score for e in ranked} == pytest.approx(scores, abs=1e-5)
    with pytest.raises(BadRequestError, match="cannot serve embeddings"):
        client.embeddings.create(model=model_id, input="wonderful")
    with app.db.session() as s:
        row = s.scalar(select(Model).where(Model.id == model_id))
        assert row.job_id == job.id and row.dataset_sha256 and row.base_model == "base"
    shown = app.http.get(f"/v1/models/{model_id}").json()
    assert shown["job"]["job_id"] == job.id and shown["labels"] == ["negative", "positive"]
    # what fine-tuning bought, the same in the job, the model and the final event
    report = done["report"]
    assert report["method"] == "full" and shown["method"] == "full"
    assert set(report["baseline"]) == {"accuracy", "macro_f1"} == set(report["improvement"])
    assert shown["baseline"] == report["baseline"]
    gain = report["metrics"]["accuracy"] - report["baseline"]["accuracy"]
    assert report["improvement"]["accuracy"] == pytest.approx(gain)
    finished = next(m for m in messages if m.startswith("Training finished"))
    assert "zero-shot on the same validation data" in finished


def test_a_head_job_makes_a_variant_of_kilobytes_that_serves_at_once(app, data):
    client = _sdk(app)
    with data["cls"].open("rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    # 48 rows a label: "auto" picks the head method, and says so when the job is created
    job = client.fine_tuning.jobs.create(model="base", training_file=uploaded.id, suffix="head")
    assert job.model_extra["training_method"] == "head"
    done = app.wait(job.id)
    assert done["status"] == "succeeded", done["error"]
    report = done["report"]
    assert report["method"] == "head" and set(report["baseline"]) <= set(report["metrics"])
    assert report["metrics"]["accuracy"] > report["baseline"]["accuracy"]
    model_id = done["fine_tuned_model"]
    folder = artifacts.model_dir(app.home, model_id)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 20_000
    shown = app.http.get(f"/v1/models/{model_id}").json()
    assert shown["method"] == "head" and shown["base"] == "base"
    r = app.http.post("/v1/classify", json={"model": model_id, "inputs": ["wonderful loved great"]})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["label"] == "positive"
    refused = app.http.post(
        "/v1/fine_tuning/jobs",
        json={"model": "base", "training_file": uploaded.id, "task": "extractive-qa",
              "training_method": "head"},
    )  # fmt: skip
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "training_method"


def test_a_cancelled_job_registers_nothing(app, data):
    f = app.upload(data["cls"]).json()
    job = app.http.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "base",
            "training_file": f["id"],
            "hyperparameters": {"n_epochs": 20, "log_every_steps": 1, **FAST},
            "training_method": "full",
        },
    ).json()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not any(e["type"] == "metrics" for e in app.events(job["id"])):
        assert time.monotonic() < deadline, "the job never reported a step"
        time.sleep(0.5)
    # one job trains at a time (max_running_jobs 1): a second one waits in the queue
    second = app.http.post(
        "/v1/fine_tuning/jobs", json={"model": "base", "training_file": f["id"]}
    ).json()
    assert app.wait(second["id"], until=("queued",), timeout_s=30)["status"] == "queued"
    time.sleep(2)
    assert app.http.get(f"/v1/fine_tuning/jobs/{second['id']}").json()["status"] == "queued"
    assert app.http.post(f"/v1/fine_tuning/jobs/{second['id']}/cancel").json()["status"] == (
        "cancelled"
    )

    assert _sdk(app).fine_tuning.jobs.cancel(job["id"]).status == "cancelled"
    again = app.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"

    import ray
    from ray.job_submission import JobSubmissionClient

    ray_jobs = JobSubmissionClient(ray.get_runtime_context().gcs_address)
    deadline = time.monotonic() + 60
    while not ray_jobs.get_job_status(f"{job['id']}-1").is_terminal():
        assert time.monotonic() < deadline, "the Ray job was not stopped"
        time.sleep(0.5)
    assert app.http.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "cancelled"
    # (a job cancelled after it exported has its model removed: tests/service/jobs/test_runner.py)


def test_an_invalid_upload_is_refused_with_its_line(app, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "fine", "label": "b"}\nnot json\n')
    r = app.upload(bad)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "file" and "bad.jsonl line 3: is not valid JSON" in err["message"]
    assert bad.name not in json.dumps(app.http.get("/v1/files").json())

    big = tmp_path / "big.jsonl"
    big.write_text('{"text": "fine", "label": "a"}\n' * (MAX_UPLOAD // 20))
    r = app.upload(big)
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"

    r = app.http.post("/v1/fine_tuning/jobs", json={"model": "base", "training_file": "file-x"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = app.http.post(
        "/v1/fine_tuning/jobs",
        json={"model": "base", "training_file": "file-x", "hyperparameters": {"n_epochs": -1}},
    )
    assert r.status_code == 422 and r.json()["error"]["param"].startswith("hyperparameters")


def test_a_qa_job_answers_with_spans(app, data, hf_client_online):
    f = app.upload(data["qa"]).json()
    assert (f["format"], f["rows"]) == ("squad", 24)
    job = app.http.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "base",
            "training_file": f["id"],
            "hyperparameters": {"n_epochs": 2, **FAST},
        },
    ).json()
    assert job["task"] == "extractive-qa"  # inferred from the file
    done = app.wait(job["id"])
    assert done["status"] == "succeeded", done["error"]
    r = app.http.post(
        "/v1/qa",
        json={
            "model": done["fine_tuned_model"],
            "question": "where is the mount fuji",
            "context": "the mount fuji stands in japan . refunds are issued within five working days .",
        },
    )
    assert r.status_code == 200, r.text
    answer = r.json()["results"][0]
    context = "the mount fuji stands in japan . refunds are issued within five working days ."
    assert context[answer["start"] : answer["end"]] == answer["answer"] != ""
    hf = InferenceClient(base_url=f"{app.url}/hf/models/{done['fine_tuned_model']}")
    got = hf.question_answering(question="where is the mount fuji", context=context)
    assert (got.answer, got.start, got.end) == (answer["answer"], answer["start"], answer["end"])


def test_a_crashing_job_fails_with_its_error(app, data):
    # a base whose weights are garbage: training dies loading them
    src, dst = app.home / "models" / "base", app.home / "models" / "broken"
    shutil.copytree(src, dst)
    manifest = artifacts.read_manifest(dst).model_copy(update={"id": "broken"})
    artifacts.write_manifest(dst, manifest)
    for weights in (dst / "hf").glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    f = app.upload(data["cls"]).json()
    job = app.http.post(
        "/v1/fine_tuning/jobs",
        json={"model": "broken", "training_file": f["id"], "training_method": "full"},
    ).json()
    done = app.wait(job["id"])
    assert done["status"] == "failed" and done["fine_tuned_model"] is None
    assert done["error"]["code"] == "training_failed"
    # found before any worker starts (no Ray Train retries of a failure that cannot pass)
    assert "weights of base model 'broken' cannot be read" in done["error"]["message"], done
    assert not any("Ray Train restarts" in m for m in _messages(app, job["id"]))
    assert app.events(job["id"])[0]["level"] == "error"


def test_a_job_survives_its_training_worker_then_its_runner_and_ingress_killed_by_pid(
    app, tmp_path
):
    """Two faults in one job (one job, to keep CI short). SIGKILL the Ray Train worker after
    a checkpoint: Ray Train starts a new one from it, inside the same Ray Job. Then SIGKILL
    the job runner's and the ingress's processes: Serve starts new ones, which carry on from
    the database. The job succeeds, and nothing is recorded twice."""
    f = app.upload(classification_file(tmp_path / "longer.jsonl", rows=400)).json()
    job = app.http.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "base",
            "training_file": f["id"],
            "hyperparameters": {**FAST, "n_epochs": 6, "batch_size": 2, "log_every_steps": 20},
            "training_method": "full",
        },
    ).json()
    first = wait_for_checkpoint(app.http, job["id"])
    # Ray Train registers a reported checkpoint when its controller next polls the workers
    time.sleep(3)
    [worker] = alive_actor_pids("RayTrainWorker")
    os.kill(worker, signal.SIGKILL)

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not any(m.startswith("Training resumed") for m in _messages(app, job["id"])):
        assert time.monotonic() < deadline, _messages(app, job["id"])
        time.sleep(0.5)
    service = [f"ServeReplica:{app.name}:{d}" for d in ("jobs", "ingress")]
    killed = [pid for name in service for pid in alive_actor_pids(name)]
    assert len(killed) == 2, killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)  # the Ray Job trains on
    wait_ready(app.url, timeout_s=120)
    done = app.wait(job["id"])
    replaced = [pid for name in service for pid in alive_actor_pids(name)]
    assert len(replaced) == 2 and not set(replaced) & set(killed), (killed, replaced)

    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 1  # retried by Ray Train, not resubmitted by the job runner
    events = app.events(job["id"])
    messages = [e["message"] for e in events]
    assert any(m.startswith("A training worker failed; Ray Train restarts") for m in messages)
    assert resumed_step(messages) >= first["step_number"], (messages, first)
    assert sum(m.startswith("The job succeeded") for m in messages) == 1
    progress = [e["data"] for e in events if e["type"] == "metrics" and "total_steps" in e["data"]]
    steps = [p["step"] for p in progress]
    assert len(steps) == len(set(steps)) and max(steps) == progress[0]["total_steps"]
    with app.db.session() as s:
        count = s.scalar(
            select(func.count()).select_from(Model).where(Model.id == done["fine_tuned_model"])
        )
    assert count == 1
    r = app.http.post(
        "/v1/classify", json={"model": done["fine_tuned_model"], "inputs": ["wonderful"]}
    )
    assert r.status_code == 200, r.text


def _messages(app, job_id: str) -> list[str]:
    return [e["message"] for e in app.events(job_id)]


def test_a_pretraining_job_from_the_cli_makes_an_encoder(app, tmp_path, hf_client_online):
    from testdata import corpus_file

    from service.cli import main

    corpus = corpus_file(tmp_path / "corpus.txt")
    code = main(
        [
            "jobs", "create", "--url", app.url, "--training-file", str(corpus),
            "--task", "masked-lm", "--suffix", "mlm", "--epochs", "1", "--follow",
        ]
    )  # fmt: skip
    assert code == 0
    job = app.http.get("/v1/fine_tuning/jobs?limit=1").json()["data"][0]
    assert job["task"] == "masked-lm" and job["status"] == "succeeded"
    encoder = app.http.get(f"/v1/models/{job['fine_tuned_model']}").json()
    assert encoder["zero_shot"] and encoder["task"] == "feature-extraction"
    r = app.http.post(
        "/v1/classify",
        json={"model": encoder["id"], "inputs": ["wonderful"], "labels": ["happy", "sad"]},
    )
    assert r.status_code == 200, r.text
    # it kept its masked-LM head: it fills masks, over our route and the HF client's
    text = "the eiffel tower stands in [MASK]"
    r = app.http.post("/v1/fill-mask", json={"model": encoder["id"], "inputs": text, "top_k": 3})
    assert r.status_code == 200, r.text
    (mask,) = r.json()["results"][0]["masks"]
    assert len(mask) == 3 and all(c["sequence"].startswith("the eiffel") for c in mask)
    assert "fill-mask" in encoder["endpoints"]
    hf = InferenceClient(base_url=f"{app.url}/hf/models/{encoder['id']}")
    assert [e.token for e in hf.fill_mask(text, top_k=3)] == [c["token"] for c in mask]
    # and it is an encoder like base: embeddings (openai) and zero-shot (Hugging Face)
    vectors = _sdk(app).embeddings.create(model=encoder["id"], input=["wonderful", "dull"])
    assert [len(d.embedding) for d in vectors.data] == [32, 32]
    assert hf.feature_extraction("wonderful")[0] == pytest.approx(
        vectors.data[0].embedding, abs=1e-3
    )
    ranked = hf.zero_shot_classification("wonderful", ["happy", "sad"])
    assert sum(e.score for e in ranked) == pytest.approx(1.0, abs=1e-5)
    assert main(["jobs", "events", job["id"], "--url", app.url]) == 0
    assert main(["files", "list", "--url", app.url]) == 0
