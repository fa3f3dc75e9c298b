"""The service's durable state in SQL: uploaded files, jobs, their events and checkpoints, and
the models jobs produced (with their lineage).

SQLAlchemy 2, one schema for SQLite (the default, a file under the artifact root) and
PostgreSQL (by URL). The schema is created and changed only by the Alembic migrations in
`service/migrations`; `Database.upgrade()` applies them, once, under a lock, whichever replica
starts first. The model artifacts themselves stay in the store (training.artifacts): a `models`
row records where a model came from, the store is what serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    text,
    update,
)
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
# Serializes migrations on PostgreSQL between replicas starting at once (any fixed number).
_PG_MIGRATION_LOCK = 7_150_001


def now() -> int:
    """Timestamps are Unix seconds, as the OpenAI API shows them."""
    return int(time.time())


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class File(Base):
    __tablename__ = "files"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(128), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))  # classification | squad | corpus
    rows: Mapped[int] = mapped_column(Integer)
    labels: Mapped[list[Any] | None] = mapped_column(JSON)
    path: Mapped[str] = mapped_column(Text)  # under the artifact root
    created_at: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Job(Base):
    __tablename__ = "jobs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(128))  # the base it starts from
    task: Mapped[str] = mapped_column(String(32))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)  # as resolved (no "auto")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the training spec it runs
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    status: Mapped[str] = mapped_column(String(32), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(256))
    output_model: Mapped[str] = mapped_column(String(256))  # the id it will have
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger)
    # the Ray job running it: one submission per attempt, all resuming the same Train run
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    ray_job_id: Mapped[str | None] = mapped_column(String(128))
    log_offset: Mapped[int] = mapped_column(BigInteger, default=0)  # Ray job log read so far
    # how far each of the run's event files has been read (name -> bytes)
    follow_offsets: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    follow_errors: Mapped[int] = mapped_column(Integer, default=0)  # failed ticks in a row
    # from the run's Result: method, metrics, baseline (the base zero-shot), improvement
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the Ray side of a finished job is wound down (stopped, its events read, cleaned up)
    settled: Mapped[bool] = mapped_column(Boolean, default=False)


class JobEvent(Base):
    __tablename__ = "job_events"
    public_prefix: ClassVar[str] = "ftevent-"  # its public id: the prefix and its seq
    __table_args__ = (Index("ix_job_events_job_key", "job_id", "key", unique=True),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(160))  # dedupes a line Ray printed twice
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(16))  # info | warn | error
    type: Mapped[str] = mapped_column(String(16))  # message | metrics
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class JobCheckpoint(Base):
    __tablename__ = "job_checkpoints"
    public_prefix: ClassVar[str] = "ftckpt-"
    __table_args__ = (Index("ix_job_checkpoints_job_step", "job_id", "step", unique=True),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Model(Base):
    """Who owns a model of the store, and where it came from. A model a job made belongs to
    the job's tenant; the models the operator put in the store (the bundled base, ones
    trained from the command line) and the ones admin jobs made are `shared`: every tenant
    may use them. A model without a row is seen by no tenant until tenancy.py records it."""

    __tablename__ = "models"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(256), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(128), index=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    task: Mapped[str] = mapped_column(String(32))
    base_model: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    export_report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    precision: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[int] = mapped_column(BigInteger)


class Tenant(Base):
    """A tenant, as a row to lock: what must hold across its rows (at most N unfinished jobs,
    a storage quota) is checked and written under this row's lock, one writer at a time."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    writes: Mapped[int] = mapped_column(BigInteger, default=0)


class ApiKey(Base):
    """An API key of a tenant. Only the key's SHA-256 is kept; `hint` is its first characters,
    to tell keys apart in a list."""

    __tablename__ = "api_keys"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


def lock_tenant(db: Database, s: Session, tenant: str) -> None:
    """Hold the tenant's row lock until `s` commits: every check-then-write of a tenant's
    limits takes it first, so that parallel requests cannot all pass the same check. (An
    UPDATE as the first statement takes the lock on both databases: a row lock on
    PostgreSQL, whose next statement then sees what the last holder committed; SQLite's one
    write lock, taken before the transaction has read anything.)"""
    try:
        with db.session() as first:  # the row to lock, made once (its own transaction)
            if first.get(Tenant, tenant) is None:
                first.add(Tenant(name=tenant, writes=0))
    except IntegrityError:
        pass  # made meanwhile by a parallel request
    s.execute(update(Tenant).where(Tenant.name == tenant).values(writes=Tenant.writes + 1))


def changed(s: Session, statement) -> int:
    """Run an UPDATE and return how many rows it changed (a conditional update moved a row
    only if its condition still held)."""
    result: CursorResult = s.execute(statement)  # type: ignore[assignment]  # an UPDATE's result is a cursor
    return result.rowcount


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the one writer
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Database:
    """An engine and session factory for one URL. Cheap to share; safe across threads."""

    def __init__(self, url: str, *, connect_timeout_s: int = 5):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 10}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(
                url,
                pool_pre_ping=True,
                connect_args={"connect_timeout": connect_timeout_s},
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._migrated = False
        self._migrate_lock = threading.Lock()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as s, s.begin():
            yield s

    def ready(self) -> Database:
        """This database, migrated on first use: not at start, so that a database that is down
        when the service starts fails the requests that need it (503) and nothing else."""
        if not self._migrated:
            with self._migrate_lock:
                if not self._migrated:
                    self.upgrade()
                    self._migrated = True
        return self

    async def call(self, fn: Callable, *args, **kwargs):
        """`fn(database, *args, **kwargs)` in a worker thread, the database migrated first:
        how the request path reaches the database without blocking its event loop."""
        return await asyncio.to_thread(lambda: fn(self.ready(), *args, **kwargs))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def upgrade(self) -> None:
        """Apply every migration not yet applied (all of them on an empty database)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self._migration_lock() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextlib.contextmanager
    def _migration_lock(self):
        if self.is_sqlite:
            lock_path = Path(self.url.split("///", 1)[-1] + ".migrate.lock")
            with lock_path.open("w") as lock, self.engine.begin() as conn:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield conn
        else:
            with self.engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()
