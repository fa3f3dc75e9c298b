"""Alembic's entry point for tuneserve's schema. `service.db.Database.upgrade()` runs it with an
open connection (under the migration lock); `alembic` on the command line is not needed."""

from alembic import context

from service.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through service.db.Database(url).upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
