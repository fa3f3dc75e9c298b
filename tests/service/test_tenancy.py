"""tenancy.py: who may use which model, on SQLite and PostgreSQL."""

import asyncio

import pytest
from testdata import copy_model

from service.auth import ADMIN, OPEN, Principal
from service.db import Job, now
from service.errors import ModelNotFound
from service.registry import Registry
from service.tenancy import Tenancy

ACME, GLOBEX = Principal(tenant="acme"), Principal(tenant="globex")


def _job_made(db, model_id: str, tenant: str) -> None:
    with db.session() as s:
        s.add(
            Job(
                id=f"ftjob-{model_id[-8:]}",
                tenant=tenant,
                model="base",
                task="text-classification",
                training_file="file-x",
                hyperparameters={},
                spec={},
                seed=0,
                status="succeeded",
                output_model=model_id,
                created_at=now(),
            )
        )


@pytest.fixture
def tenancy(db, store, tmp_path):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "base").symlink_to(store / "models" / "base")
    copy_model(home, "base", "ft:base:acme:00000001", link=True)
    copy_model(home, "base", "cli-made", link=True)
    _job_made(db, "ft:base:acme:00000001", "acme")
    return Tenancy(Registry(home), db)


def test_a_jobs_model_is_its_tenants_and_other_models_are_everyones(tenancy):
    ids = ["base", "cli-made", "ft:base:acme:00000001"]
    assert asyncio.run(tenancy.visible(ACME, ids)) == ids
    assert asyncio.run(tenancy.visible(GLOBEX, ids)) == ["base", "cli-made"]
    assert asyncio.run(tenancy.visible(ADMIN, ids)) == ids
    assert asyncio.run(tenancy.visible(OPEN, ids)) == ids


def test_another_tenants_model_is_as_missing_as_a_missing_one(tenancy):
    assert asyncio.run(tenancy.resolve(ACME, "ft:base:acme:00000001")).manifest.id
    for missing in ("ft:base:acme:00000001", "nope"):
        with pytest.raises(ModelNotFound) as exc:
            asyncio.run(tenancy.resolve(GLOBEX, missing))
        # the same message shape for both, naming only what globex may use
        assert exc.value.message.endswith(
            "available models: base, cli-made (GET /v1/models lists them)"
        )
