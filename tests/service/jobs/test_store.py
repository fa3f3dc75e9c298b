"""jobs/store.py and jobs/spec.py on SQLite and PostgreSQL: a job checked against its files
and model, written, cancelled."""

import io

import pytest
from testdata import UPLOAD_LIMITS as LIMITS
from testdata import classification_file, squad_file

from service import files
from service.errors import Conflict, InvalidRequest, NotFound
from service.jobs import store as jobs
from service.jobs.spec import JobDefaults
from service.registry import Registry
from service.schemas.jobs import CreateJobRequest

DEFAULTS = JobDefaults()


def _upload(db, home, text: str, name="train.jsonl", purpose="fine-tune"):
    return files.store(db, home, io.BytesIO(text.encode()), name, purpose, limits=LIMITS)


def _create(db, registry, req):
    base = None if req.model == "scratch" else registry.resolve(req.model)
    return jobs.create(db, req, base, defaults=DEFAULTS)


def _job_request(file_id: str, **kw) -> CreateJobRequest:
    return CreateJobRequest(model="base", training_file=file_id, **kw)


def test_a_job_is_checked_against_its_files_and_model(db, store, tmp_path):
    registry = Registry(store, "base")
    cls = _upload(db, tmp_path, classification_file(tmp_path / "c.jsonl", rows=8).read_text())
    corpus = _upload(db, tmp_path, "some text to pretrain on\n", "c.txt", purpose="pretrain")

    job = _create(db, registry, _job_request(cls.id, suffix="demo"))
    assert job.status == "validating_files" and job.task == "text-classification"
    assert job.output_model == f"ft:base:demo:{job.id[-8:]}"
    assert job.hyperparameters == {
        "n_epochs": 10,
        "batch_size": 16,
        "learning_rate_multiplier": 1.0,
    }

    with pytest.raises(InvalidRequest, match="holds classification data; a extractive-qa job"):
        _create(db, registry, _job_request(cls.id, task="extractive-qa"))
    with pytest.raises(InvalidRequest, match="holds corpus data; a text-classification job"):
        _create(db, registry, _job_request(corpus.id, task="text-classification"))
    with pytest.raises(InvalidRequest, match="only a masked-lm job starts from `scratch`"):
        _create(db, registry, _job_request(cls.id).model_copy(update={"model": "scratch"}))
    pretrain = _create(db, registry, _job_request(corpus.id))
    assert pretrain.task == "masked-lm"  # inferred from the file
    with pytest.raises(NotFound):
        _create(db, registry, _job_request("file-nope"))
    with pytest.raises(InvalidRequest, match="hyperparameters.max_seq_length"):
        _create(db, registry, _job_request(cls.id, hyperparameters={"max_seq_length": 2}))
    # a file in use cannot be deleted
    with pytest.raises(Conflict, match=job.id):
        files.delete(db, cls.id)


def test_the_learning_rate_multiplier_scales_the_tasks_own_default(db, store, tmp_path):
    registry = Registry(store, "base")
    squad = _upload(db, tmp_path, squad_file(tmp_path / "s.json", copies=1).read_text(), "s.json")
    cls = _upload(db, tmp_path, classification_file(tmp_path / "c.jsonl", rows=8).read_text())
    qa = _create(db, registry, _job_request(squad.id))
    assert qa.task == "extractive-qa" and qa.spec["hyperparameters"]["learning_rate"] == 1.5e-4
    doubled = _job_request(squad.id, hyperparameters={"learning_rate_multiplier": 2})
    assert _create(db, registry, doubled).spec["hyperparameters"]["learning_rate"] == 3e-4
    classify = _create(db, registry, _job_request(cls.id))
    assert classify.spec["hyperparameters"]["learning_rate"] == 1e-4


def test_cancel_moves_only_unfinished_jobs(db, store, tmp_path):
    registry = Registry(store, "base")
    f = _upload(db, tmp_path, classification_file(tmp_path / "c.jsonl", rows=8).read_text())
    job = _create(db, registry, _job_request(f.id))
    cancelled = jobs.cancel(db, job.id)
    assert cancelled.status == "cancelled" and cancelled.settled and cancelled.finished_at
    with pytest.raises(Conflict, match="already cancelled"):
        jobs.cancel(db, job.id)
    files.delete(db, f.id)  # no unfinished job uses it now
    with pytest.raises(NotFound):
        files.get(db, f.id)


def test_parallel_creations_cannot_pass_the_tenants_job_limit(db, store, tmp_path):
    """Twelve creations at once for a tenant that may have four unfinished jobs: four are
    made, eight refused (the count and the insert hold the tenant's lock together)."""
    from concurrent.futures import ThreadPoolExecutor

    from service.errors import RateLimited

    registry = Registry(store, "base")
    text = classification_file(tmp_path / "c.jsonl", rows=8).read_text()
    f = files.store(
        db,
        tmp_path,
        io.BytesIO(text.encode()),
        "c.jsonl",
        "fine-tune",
        limits=LIMITS,
        tenant="acme",
    )

    def create(_):
        try:
            req = _job_request(f.id)
            return jobs.create(
                db,
                req,
                registry.resolve("base"),
                defaults=DEFAULTS,
                tenant="acme",
                max_unfinished=4,
            ).id
        except RateLimited:
            return None

    with ThreadPoolExecutor(max_workers=12) as pool:
        made = [m for m in pool.map(create, range(12)) if m]
    assert len(made) == 4, made
    assert len(jobs.listing(db, tenant="acme", limit=100)[0]) == 4


def test_a_job_asks_no_more_workers_gpus_or_epochs_than_the_settings_allow(db, store, tmp_path):
    from dataclasses import replace

    from service.errors import LimitExceeded

    registry = Registry(store, "base")
    f = _upload(db, tmp_path, classification_file(tmp_path / "c.jsonl", rows=8).read_text())
    tight = replace(DEFAULTS, max_workers=2, max_gpus=1, max_epochs=3)

    def create(**kw):
        return jobs.create(db, _job_request(f.id, **kw), registry.resolve("base"), defaults=tight)

    for kw, param, setting in (
        ({"scaling": {"num_workers": 3}}, "scaling.num_workers", "TUNESERVE_MAX_JOB_WORKERS"),
        (
            {"scaling": {"num_workers": 2, "use_gpu": True}},
            "scaling.use_gpu",
            "TUNESERVE_MAX_JOB_GPUS",
        ),
        (
            {"hyperparameters": {"n_epochs": 4}},
            "hyperparameters.n_epochs",
            "TUNESERVE_MAX_JOB_EPOCHS",
        ),
    ):
        with pytest.raises(LimitExceeded, match=setting) as exc:
            create(**kw)
        assert exc.value.param == param and exc.value.status == 422
    made = create(scaling={"num_workers": 2}, hyperparameters={"n_epochs": 3})
    assert made.spec["scaling"]["num_workers"] == 2


def test_a_model_an_unfinished_job_starts_from_cannot_be_deleted(db, store, tmp_path):
    registry = Registry(store, "base")
    f = _upload(db, tmp_path, classification_file(tmp_path / "c.jsonl", rows=8).read_text())
    job = _create(db, registry, _job_request(f.id))
    stored = registry.resolve("base").manifest.id
    assert job.spec["base_model"] == stored
    with pytest.raises(Conflict, match=f"base of unfinished job\\(s\\) {job.id}") as exc:
        jobs.refuse_if_in_use(db, stored)
    assert exc.value.status == 409
    jobs.refuse_if_in_use(db, "some-other-model")
    jobs.cancel(db, job.id)
    jobs.refuse_if_in_use(db, stored)  # the job ended: the model may go


@pytest.mark.parametrize("kind", ["qa", "classification"])
def test_the_cli_trains_with_the_job_apis_defaults(db, store, tmp_path, kind):
    """`tuneserve finetune` and a job with nothing but the file and the task resolve to the
    same hyperparameters (README's QA and classification results hold for both)."""
    from service.cli import parser
    from service.cli.train import spec_from_args
    from training.config import FinetuneSpec, pick_method

    if kind == "qa":
        path, task = squad_file(tmp_path / "s.json", copies=3), "extractive-qa"
    else:
        path, task = classification_file(tmp_path / "c.jsonl", rows=300), "text-classification"
    upload = _upload(db, tmp_path, path.read_text(), path.name)
    job = _create(db, Registry(store, "base"), _job_request(upload.id, task=task))
    args = parser().parse_args(
        ["finetune", "--task", task, "--train", str(path), "--home", str(store)]
    )
    cli_spec = FinetuneSpec.model_validate(spec_from_args(args, task))
    api_spec = FinetuneSpec.model_validate(job.spec)
    per_label = 150 if kind == "classification" else 0  # the run resolves "auto" by rows a label
    assert pick_method(task, cli_spec.method, per_label) == api_spec.method == "full"
    via_cli, via_api = cli_spec.hyperparameters, api_spec.hyperparameters
    differ = {
        k: (getattr(via_cli, k), getattr(via_api, k))
        for k in type(via_api).model_fields
        if k != "seed" and getattr(via_cli, k) != getattr(via_api, k)
    }
    assert differ == {}
    if kind == "qa":
        assert (via_api.max_seq_length, via_api.doc_stride, via_api.learning_rate) == (
            384,
            128,
            1.5e-4,
        )


def test_a_tenant_keeps_no_more_models_than_its_quota(db, store, tmp_path):
    """Two models kept and a quota of three: one more job may start (it will make the third);
    the next is refused until a model is deleted. Shared models and other tenants' do not
    count."""
    from service.db import Model, now
    from service.errors import RateLimited

    registry = Registry(store, "base")
    text = classification_file(tmp_path / "c.jsonl", rows=8).read_text()
    f = files.store(db, tmp_path, io.BytesIO(text.encode()), "c.jsonl", "fine-tune",
                    limits=LIMITS, tenant="acme")  # fmt: skip
    with db.session() as s:
        for i, (tenant, shared) in enumerate([("acme", False), ("acme", False), ("globex", False),
                                             (None, True), ("acme", True)]):  # fmt: skip
            s.add(Model(id=f"m{i}", tenant=tenant, shared=shared, task="text-classification",
                        base_model="base", spec={}, metrics={}, precision="int8",
                        created_at=now()))  # fmt: skip

    def create():
        return jobs.create(db, _job_request(f.id), registry.resolve("base"), defaults=DEFAULTS,
                           tenant="acme", max_unfinished=4, max_models=3)  # fmt: skip

    create()
    with pytest.raises(RateLimited, match="keeps 2 models and has 1 unfinished jobs") as exc:
        create()
    assert "TUNESERVE_MAX_TENANT_MODELS" in exc.value.message and exc.value.status == 429
    with db.session() as s:
        s.execute(Model.__table__.delete().where(Model.id == "m0"))
    create()  # room again
