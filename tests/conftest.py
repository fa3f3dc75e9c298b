"""Shared fixtures: a tiny BERT built offline, exported by the real export path, served by one
real local Ray (loopback only) for the whole session."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from service.cli.local_ray import free_port, init_local_ray, local_ray_env

# Ray reads its environment at import: set it before anything imports ray.
_RAY_TMP = local_ray_env()
os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")  # metrics tests wait less
atexit.register(shutil.rmtree, _RAY_TMP, ignore_errors=True)


TINY_CORPUS = [
    "the film was wonderful and i loved every minute of it",
    "a dull tedious mess with no surprises",
    "where is the eiffel tower",
    "the eiffel tower stands in paris france",
    "mount fuji is the tallest mountain in japan",
    "the great wall stretches across northern china",
    "refunds are issued within five working days",
    "please reset my password i cannot log in",
    "positive negative neutral happy sad angry",
    "what who when why how which is are was were",
]


def build_tiny_encoder(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer BERT with a WordPiece vocabulary trained on TINY_CORPUS, saved as an HF folder."""
    import torch
    from transformers import BertConfig, BertModel

    from training.tokenizer import train_wordpiece

    folder.mkdir(parents=True, exist_ok=True)
    train_wordpiece(TINY_CORPUS, folder, vocab_size=400, min_frequency=1)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-hf"))


@pytest.fixture(scope="session")
def store(tmp_path_factory, tiny_encoder_dir) -> Path:
    """A model store holding the tiny encoder as `base`, exported as `make run` exports."""
    from training.export import export_encoder

    home = tmp_path_factory.mktemp("store")
    export_encoder(tiny_encoder_dir, home, "base", max_seq_length=128)
    return home


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # the dashboard hosts Ray Jobs, which the job service submits to
    init_local_ray(num_cpus=2, dashboard_port=free_port())
    yield
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        shutil.rmtree(_RAY_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def serve_port(ray_session) -> int:
    return free_port()


@pytest.fixture(scope="session")
def service_url(ray_session, store, serve_port) -> str:
    """The API over real HTTP on 127.0.0.1, serving the tiny store."""
    from service.cli.local_ray import wait_ready
    from service.main import deploy
    from service.settings import Settings

    settings = Settings(home=store, port=serve_port, model_replica_cpus=0.5)
    deploy(settings, name="tiny")
    url = f"http://127.0.0.1:{serve_port}"
    wait_ready(url, timeout_s=120)
    return url


@contextlib.contextmanager
def app_on_session(service_url: str, name: str, *, wait: bool = True, **settings):
    """Another app of the service on the session's Serve, under /<name>, with its own
    settings; yields its URL and deletes it after."""
    from ray import serve

    from service.cli.local_ray import wait_ready
    from service.main import build_app
    from service.settings import Settings

    app = build_app(Settings(**settings).app_args())
    serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)
    url = f"{service_url}/{name}"
    try:
        if wait:
            wait_ready(url, timeout_s=180)
        yield url
    finally:
        serve.delete(name)


def post(url: str, body: object, headers: dict | None = None, raw: bytes | None = None):
    """POST JSON; returns (status, parsed body)."""
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


@pytest.fixture(scope="session")
def pg_admin():
    """A connection to PostgreSQL on 127.0.0.1:5432 that creates and drops test databases."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at 127.0.0.1:5432 as {PG_ADMIN!r} ({exc})"
        if os.environ.get("CI"):  # CI starts it (.ci/run): a skip there would hide a failure
            pytest.fail(f"{message}; CI must run the PostgreSQL tests")
        pytest.skip(f"{message}; start it to run these")
    yield admin
    admin.close()


@contextlib.contextmanager
def fresh_pg_database(admin):
    import secrets

    name = f"tuneserve_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each database test runs on SQLite and on PostgreSQL, each time on an empty database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tuneserve.db'}"
        return
    with fresh_pg_database(request.getfixturevalue("pg_admin")) as url:
        yield url


@pytest.fixture
def db(db_url):
    """A migrated database on each of SQLite and PostgreSQL (db_url)."""
    from service.db import Database

    database = Database(db_url)
    database.upgrade()
    yield database
    database.dispose()


_handle_loop = None


def replica_stats(app: str) -> dict:
    """The `models` replica's stats() through a handle. With Serve's fast path
    (service.cli.SERVE_FAST_PATH) a handle's router runs on the caller's event loop, so the
    calls go through one loop that lives for the session, on a thread of its own."""
    import asyncio
    import threading

    from ray import serve

    global _handle_loop
    if _handle_loop is None:
        _handle_loop = asyncio.new_event_loop()
        threading.Thread(target=_handle_loop.run_forever, daemon=True).start()

    async def call():
        return await serve.get_deployment_handle("models", app_name=app).stats.remote()

    return asyncio.run_coroutine_threadsafe(call(), _handle_loop).result(timeout=60)


def alive_actor_pids(class_name: str) -> list[int]:
    """PIDs of the live actors of a class in this process's Ray (Ray's state API)."""
    from ray.util.state import list_actors

    actors = list_actors(
        filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
        raise_on_missing_output=False,
    )
    return [a.pid for a in actors if a.pid]


def wait_for_checkpoint(http, job_id: str, timeout_s: float = 300) -> dict:
    """The first checkpoint a job lists (through the API, `http` an httpx.Client)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = http.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
        if listed:
            return listed[-1]  # newest first: the first made
        job = http.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        assert job["status"] in ("validating_files", "queued", "running"), job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} made no checkpoint in {timeout_s:.0f}s")


def resumed_step(messages: list[str]) -> int:
    """The step of the one "Training resumed from its checkpoint at step N" event."""
    resumed = [m for m in messages if m.startswith("Training resumed from its checkpoint")]
    assert len(resumed) == 1, messages
    return int(resumed[0].split("at step ")[1].split()[0])


def metric_total(service_url: str, name: str, **tags: str) -> float:
    """The sum of a Prometheus metric's samples at /metrics whose labels include `tags`."""
    import re

    with urllib.request.urlopen(f"{service_url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    total = 0.0
    for labels, value in re.findall(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if all(found.get(k) == v for k, v in tags.items()):
            total += float(value)
    return total


def wait_for_metric(
    service_url: str, name: str, at_least: float, timeout_s: float = 60, **tags
) -> float:
    """Wait until the metric's total reaches `at_least` (Ray exports every few seconds)."""
    import time

    deadline = time.monotonic() + timeout_s
    while (value := metric_total(service_url, name, **tags)) < at_least:
        assert time.monotonic() < deadline, f"{name}{tags} = {value}, not {at_least}"
        time.sleep(1)
    return value


@pytest.fixture
def hf_client_online(monkeypatch):
    """The Makefile sets HF_HUB_OFFLINE so that nothing downloads; huggingface_hub's offline
    switch then refuses every request, to a URL on 127.0.0.1 too. Lifted for a test whose
    InferenceClient calls only the service here (its model is our URL: nothing asks the Hub)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
