"""Faults, with real processes: a broken model artifact, an unreachable database, a database
lost while the service runs (the process in between killed by PID), a model replica killed by
its PID. Each is bounded in time and stays on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import app_on_session, fresh_pg_database, replica_stats
from testdata import classification_file, copy_model

from training import artifacts

LABELS = ["positive", "negative"]


@pytest.fixture
def broken_models(store):
    corrupt = copy_model(store, "base", "broken-corrupt", link=False)
    for onnx in (corrupt / "onnx").glob("*.onnx"):
        onnx.write_bytes(b"this is not an onnx graph")
    missing = copy_model(store, "base", "broken-missing", link=False)
    shutil.rmtree(missing / "onnx")
    yield ["broken-corrupt", "broken-missing"]
    for m in ("broken-corrupt", "broken-missing"):
        shutil.rmtree(artifacts.model_dir(store, m), ignore_errors=True)


def test_a_broken_artifact_is_a_503_naming_its_model_and_the_rest_serve(service_url, broken_models):
    with httpx.Client(base_url=service_url, timeout=60) as c:
        for model in broken_models:
            r = c.post("/v1/classify", json={"model": model, "inputs": ["x"], "labels": LABELS})
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["type"] == "model_unavailable" and model in err["message"]
            # and the healthy model beside it answers, then and after
            ok = c.post("/v1/classify", json={"model": "base", "inputs": ["x"], "labels": LABELS})
            assert ok.status_code == 200, ok.text
        assert c.get("/readyz").status_code == 200


@pytest.fixture(scope="module")
def no_database(ray_session, service_url, store):
    """An app whose database is a PostgreSQL port nothing listens on."""
    from service.cli.local_ray import free_port

    with app_on_session(
        service_url,
        "nodb",
        wait=False,  # /readyz stays 503: the app is up when /healthz answers
        home=store,
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none",
        admin_key="fault-admin-key",
        model_replica_cpus=0.25,
    ) as url:
        _until(lambda: True if _healthy(url) else None, 120, "/healthz")
        yield url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_unreachable_database_fails_readiness_and_its_requests_fast(no_database):
    headers = {"Authorization": "Bearer fault-admin-key"}
    with httpx.Client(base_url=no_database, timeout=30, headers=headers) as c:
        start = time.monotonic()
        ready = c.get("/readyz")
        assert ready.status_code == 503, ready.text
        for path in ("/v1/files", "/v1/fine_tuning/jobs"):
            r = c.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"]["type"] == "service_unavailable"
            assert r.headers["retry-after"]
        assert time.monotonic() - start < 25  # answers, not hangs
        # inference needs no database: the base model still answers
        ok = c.post("/v1/classify", json={"model": "base", "inputs": ["x"], "labels": LABELS})
        assert ok.status_code == 200, ok.text


def test_a_killed_model_replica_is_replaced_and_requests_recover(service_url):
    pid = replica_stats("tiny")["pid"]
    os.kill(pid, signal.SIGKILL)
    body = {"model": "base", "inputs": ["the film was fine"], "labels": LABELS}
    deadline = time.monotonic() + 120
    statuses = []
    with httpx.Client(base_url=service_url, timeout=30) as c:
        while time.monotonic() < deadline:
            r = c.post("/v1/classify", json=body)
            statuses.append(r.status_code)
            if r.status_code == 200 and replica_stats("tiny")["pid"] != pid:
                break
            assert r.status_code in (200, 503), r.text  # never a hang or a 500
            time.sleep(0.5)
    assert statuses[-1] == 200, statuses
    assert replica_stats("tiny")["pid"] != pid


PROXY = Path(__file__).resolve().parents[1] / "tcp_proxy.py"


def _start_proxy(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(PROXY), str(port), "5432"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "listening"
    return proc


def _until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (result := predicate()) is not None:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout_s:.0f}s")


@pytest.fixture
def database_behind_a_proxy(ray_session, service_url, store, pg_admin):
    """An app whose PostgreSQL is reached through tests/tcp_proxy.py: kill the proxy, and the
    database is gone for the service (connections reset, new ones refused)."""
    from service.cli.local_ray import free_service_port

    port = free_service_port()
    proxy = {"proc": _start_proxy(port)}
    with (
        fresh_pg_database(pg_admin) as url,
        app_on_session(
            service_url,
            "pgdrop",
            wait=False,
            home=store,
            database_url=url.replace(":5432/", f":{port}/"),
            model_replica_cpus=0.25,
            jobs_poll_s=0.5,
        ) as app_url,
    ):
        try:
            yield app_url, port, proxy
        finally:
            proxy["proc"].kill()
            proxy["proc"].wait(timeout=10)


def test_a_database_lost_while_serving_is_503_then_recovers_with_nothing_lost(
    database_behind_a_proxy, tmp_path
):
    url, port, proxy = database_behind_a_proxy
    data = classification_file(tmp_path / "before.jsonl", rows=20)
    with httpx.Client(base_url=url, timeout=30) as c:

        def upload():
            with data.open("rb") as f:
                return c.post(
                    "/v1/files", files={"file": (data.name, f)}, data={"purpose": "fine-tune"}
                )

        _until(lambda: True if c.get("/readyz").status_code == 200 else None, 120, "ready")
        before = upload()
        assert before.status_code == 200, before.text

        proxy["proc"].kill()  # the database goes away mid-service
        proxy["proc"].wait(timeout=10)
        _until(lambda: True if c.get("/readyz").status_code == 503 else None, 30, "/readyz 503")
        start = time.monotonic()
        for attempt in (c.get("/v1/files"), upload()):
            assert attempt.status_code == 503, attempt.text
            assert attempt.json()["error"]["type"] == "service_unavailable"
            assert attempt.headers["retry-after"]
        assert time.monotonic() - start < 25  # answers, not hangs
        body = {"model": "base", "inputs": ["x"], "labels": LABELS}
        assert c.post("/v1/classify", json=body).status_code == 200  # inference goes on

        proxy["proc"] = _start_proxy(port)  # the database is back
        _until(lambda: True if c.get("/readyz").status_code == 200 else None, 60, "ready again")
        listed = c.get("/v1/files")
        assert listed.status_code == 200, listed.text
        assert [f["id"] for f in listed.json()["data"]] == [before.json()["id"]]  # kept, once
        after = upload()
        assert after.status_code == 200, after.text
