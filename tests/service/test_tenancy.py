"""tenancy.py: who may use which model, on SQLite and PostgreSQL."""

import asyncio

import pytest
from sqlalchemy import select
from testdata import copy_model

from service.auth import ADMIN, OPEN, Principal
from service.db import Job, Model, now
from service.errors import Forbidden, ModelNotFound
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


def _ids(tenancy, who) -> list[str]:
    return [m.id for m in asyncio.run(tenancy.listing(who))]


def test_a_jobs_model_is_its_tenants_and_the_operators_are_shared(tenancy, db):
    everything = ["base", "cli-made", "ft:base:acme:00000001"]
    assert _ids(tenancy, ACME) == everything
    assert _ids(tenancy, GLOBEX) == ["base", "cli-made"]
    assert _ids(tenancy, ADMIN) == everything and _ids(tenancy, OPEN) == everything
    # ownership is data: the operator's models were recorded as shared; the job's is not
    with db.session() as s:
        rows = {m.id: (m.tenant, m.shared) for m in s.scalars(select(Model))}
    assert rows == {"base": (None, True), "cli-made": (None, True)}


def test_a_shared_model_is_the_admins_to_delete(tenancy):
    base = asyncio.run(tenancy.resolve(ACME, "cli-made"))
    with pytest.raises(Forbidden):
        asyncio.run(tenancy.forget(ACME, base))
    asyncio.run(tenancy.forget(ADMIN, base))


def test_another_tenants_model_is_as_missing_as_a_missing_one(tenancy):
    assert asyncio.run(tenancy.resolve(ACME, "ft:base:acme:00000001")).manifest.id
    for missing in ("ft:base:acme:00000001", "nope"):
        with pytest.raises(ModelNotFound) as exc:
            asyncio.run(tenancy.resolve(GLOBEX, missing))
        # the same message shape for both, naming only what globex may use
        assert exc.value.message.endswith(
            "available models: base, cli-made (GET /v1/models lists them)"
        )
