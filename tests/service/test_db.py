"""The database layer on SQLite and PostgreSQL: migrations, and the one pager."""

import pytest
from sqlalchemy import inspect, select

from service.db import ApiKey, Base, Database, now
from service.errors import NotFound
from service.paging import page


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


def _keys(db, tenants: list[str]) -> list[str]:
    with db.session() as s:
        for i, tenant in enumerate(tenants):
            s.add(
                ApiKey(id=f"key_{i}", tenant=tenant, key_hash=f"h{i}", hint="ts-", created_at=now())
            )
    return [f"key_{i}" for i in range(len(tenants))]


def test_a_page_starts_after_a_row_the_query_can_see(db):
    ids = _keys(db, ["acme", "globex", "acme", "acme"])
    acme = select(ApiKey).where(ApiKey.tenant == "acme")
    with db.session() as s:
        first, more = page(s, acme, ApiKey, 2)
        rest, none_left = page(s, acme, ApiKey, 2, after=first[-1].id)
        assert [r.id for r in first + rest] == [ids[3], ids[2], ids[0]]
        assert (more, none_left) == (True, False)
        # another tenant's row is as unknown to this query as a row that does not exist
        for after in (ids[1], "key_nope"):
            with pytest.raises(NotFound, match=f"no .{after}. in this list") as exc:
                page(s, acme, ApiKey, 2, after=after)
            assert exc.value.param == "after"


def test_a_database_is_migrated_once_on_first_use(db_url):
    database = Database(db_url)
    assert database.ready() is database and database.ready() is database
    with database.engine.connect() as conn:
        assert "jobs" in inspect(conn).get_table_names()
    database.dispose()
