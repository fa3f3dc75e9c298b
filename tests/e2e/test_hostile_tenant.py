"""A hostile tenant and a careless client, over real HTTP against a real Ray: two tenants,
acme with a fine-tuned classifier and a fine-tuned QA model (trained here through the job
API), globex attacking them. Every attack gets a 4xx, and the service keeps answering."""

from __future__ import annotations

import gzip
import json
import secrets
import shutil
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import app_on_session, metric_total
from testdata import classification_file, squad_file

pytestmark = pytest.mark.slow
ADMIN = "hostile-admin-key-0123456789"
FAST = {"batch_size": 8, "learning_rate_multiplier": 20, "warmup_ratio": 0.0}
LABELS = ["positive", "negative"]


def _client(url: str, key: str | None) -> httpx.Client:
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=120
    )


def _upload(c: httpx.Client, path, purpose="fine-tune") -> httpx.Response:
    with path.open("rb") as f:
        return c.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": purpose})


def _train(c: httpx.Client, path, hp: dict) -> dict:
    job = c.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "base",
            "training_file": _upload(c, path).json()["id"],
            "hyperparameters": hp,
        },
    ).json()
    deadline = time.monotonic() + 300
    while (job := c.get(f"/v1/fine_tuning/jobs/{job['id']}").json())["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["status"] == "succeeded", job["error"]
    return job


@pytest.fixture(scope="module")
def world(ray_session, service_url, store, tmp_path_factory):
    home = tmp_path_factory.mktemp("hostile")
    shutil.copytree(store / "models" / "base", home / "models" / "base")
    data = tmp_path_factory.mktemp("hostile-data")
    with app_on_session(
        service_url,
        "hostile",
        home=home,
        admin_key=ADMIN,
        model_replica_cpus=0.25,
        jobs_poll_s=0.5,
        job_cpus_per_worker=1.0,
        max_decompressed_bytes=20 * 2**20,
    ) as url:
        admin = _client(url, ADMIN)
        keys = {
            t: admin.post("/v1/admin/keys", json={"tenant": t}).json()["key"]
            for t in ("acme", "globex")
        }
        acme, globex = _client(url, keys["acme"]), _client(url, keys["globex"])
        classifier = _train(
            acme, classification_file(data / "reviews.jsonl", rows=40), {"n_epochs": 1, **FAST}
        )
        qa = _train(acme, squad_file(data / "qa.json"), {"n_epochs": 1, **FAST})
        yield {"url": url, "home": home, "acme": acme, "globex": globex, "admin": admin, "data": data,
               "cls": classifier["fine_tuned_model"], "qa": qa["fine_tuned_model"], "cls_job": classifier}  # fmt: skip


def _alive(w) -> None:
    """The service still answers, for both tenants."""
    for c in (w["acme"], w["globex"]):
        r = c.post("/v1/classify", json={"model": "base", "inputs": ["fine"], "labels": LABELS})
        assert r.status_code == 200, r.text


def test_another_tenants_model_is_missing_by_any_spelling(world):
    globex, cls = world["globex"], world["cls"]
    for spelling in (cls, cls.replace(":", "--"), cls.replace(":", "--", 1), cls.upper()):
        for method, path, body in (
            ("POST", "/v1/classify", {"model": spelling, "inputs": ["x"]}),
            ("GET", f"/v1/models/{spelling}", None),
            ("DELETE", f"/v1/models/{spelling}", None),
        ):
            r = globex.request(method, path, json=body)
            assert r.status_code == 404, (spelling, path, r.text)
    own = _upload(globex, classification_file(world["data"] / "g.jsonl", rows=20)).json()["id"]
    r = globex.post(
        "/v1/fine_tuning/jobs", json={"model": cls.replace(":", "--"), "training_file": own}
    )
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    _alive(world)


def test_an_unknown_model_names_only_the_callers_models(world):
    r = world["globex"].post(
        "/v1/classify", json={"model": "nope", "inputs": ["x"], "labels": LABELS}
    )
    message = r.json()["error"]["message"]
    assert r.status_code == 404 and "base" in message
    assert world["cls"] not in message and world["qa"] not in message
    assert (
        world["cls"]
        in world["acme"].post("/v1/classify", json={"model": "nope", "inputs": ["x"]}).text
    )


def _announce(url: str, headers: str) -> str:
    """Send only the head of a 5 GB multipart upload; the status line of the answer."""
    hostport, _, prefix = url.split("//")[1].partition("/")
    host, port = hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            f"POST /{prefix}/v1/files HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: "
            "multipart/form-data; boundary=b\r\nContent-Length: 5000000000\r\n\r\n--b\r\n".encode()
        )
        return s.recv(4096).decode(errors="replace").split("\r\n")[0]


def test_no_key_no_work_even_for_a_huge_upload(world):
    """Headers announcing a 5 GB upload: without a key a 401, with one a 413, each before a
    byte of the body is read."""
    assert _announce(world["url"], "").startswith("HTTP/1.1 401 ")
    with_key = _announce(world["url"], f"Authorization: Bearer {ADMIN}\r\n")
    assert with_key.startswith("HTTP/1.1 413 "), with_key


def test_a_gzip_bomb_is_refused_while_inference_keeps_answering(world):
    bomb = world["data"] / "bomb.txt.gz"
    bomb.write_bytes(gzip.compress(b"all work and no play\n" * 3_000_000))  # 63 MB in ~60 KB
    before, during, done = [], [], threading.Event()

    def ping(into: list) -> None:
        t = time.perf_counter()
        r = world["globex"].post(
            "/v1/classify", json={"model": "base", "inputs": ["ok"], "labels": LABELS}
        )
        assert r.status_code == 200
        into.append(time.perf_counter() - t)

    for _ in range(10):
        ping(before)

    def pinger():
        while not done.is_set():
            ping(during)

    thread = threading.Thread(target=pinger)
    thread.start()
    r = _upload(world["globex"], bomb, purpose="pretrain")
    done.set()
    thread.join()
    assert r.status_code == 400 and "once decompressed" in r.json()["error"]["message"], r.text
    # the check ran in a process of its own: inference went on (a bound on stalls, not a speed)
    assert during and max(during) < max(2.0, 10 * statistics.median(before)), (before, during)


def test_a_long_question_gets_an_answer_or_a_4xx_and_the_models_keep_answering(world):
    c = world["acme"]
    long_q = "where is the mount fuji? " * 200  # 5,000 characters
    context = "the mount fuji stands in japan . refunds are issued within five working days ."

    def ask(model: str) -> int:
        return c.post(
            "/v1/qa", json={"model": model, "question": long_q, "context": context}
        ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(ask, [world["qa"], "base"] * 4))
    assert all(code == 200 or 400 <= code < 500 for code in codes), codes
    for model in (world["qa"], "base"):
        r = c.post(
            "/v1/qa",
            json={"model": model, "question": "where is the mount fuji", "context": context},
        )
        assert r.status_code == 200 and r.json()["results"][0]["answer"], r.text


def test_parallel_job_creations_stay_within_the_limit(world):
    globex = world["globex"]
    own = _upload(globex, classification_file(world["data"] / "many.jsonl", rows=20)).json()["id"]
    body = {"model": "base", "training_file": own, "hyperparameters": {"n_epochs": 1, **FAST}}
    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(
            pool.map(
                lambda _: globex.post("/v1/fine_tuning/jobs", json=body).status_code, range(12)
            )
        )
    unfinished = [j for j in globex.get("/v1/fine_tuning/jobs?limit=100").json()["data"]
                  if j["status"] not in ("succeeded", "failed", "cancelled")]  # fmt: skip
    assert codes.count(200) == len(unfinished) <= 4 and set(codes) <= {200, 429}, codes
    for job in unfinished:
        globex.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")


def test_made_up_model_ids_do_not_grow_the_metrics(world, service_url):
    name = "ray_tuneserve_requests_total"
    ids = [f"made-up-{secrets.token_hex(6)}" for _ in range(30)]
    for mid in ids:
        world["globex"].post("/v1/classify", json={"model": mid, "inputs": ["x"], "labels": LABELS})
    deadline = time.monotonic() + 60
    while metric_total(service_url, name, model="unknown", status="404") < 30:
        assert time.monotonic() < deadline, "the 404s were not counted as model=unknown"
        time.sleep(1)
    with httpx.Client(timeout=30) as c:
        text = c.get(f"{service_url}/metrics").text
    assert not any(mid in text for mid in ids)


def test_lists_answer_the_same_for_another_tenants_id_and_no_server_path_shows(world):
    acme, globex = world["acme"], world["globex"]
    job = world["cls_job"]
    theirs = globex.get(f"/v1/fine_tuning/jobs?after={job['id']}")
    unknown = globex.get(f"/v1/fine_tuning/jobs?after=ftjob-{'0' * 24}")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["message"].replace(job["id"], "X") == unknown.json()["error"][
        "message"
    ].replace(f"ftjob-{'0' * 24}", "X")
    shown = json.dumps(acme.get(f"/v1/fine_tuning/jobs/{job['id']}").json())
    assert str(world["home"]) not in shown and "/runs/" not in shown


def test_a_tenant_deletes_its_own_model_and_only_its_own(world):
    acme, globex = world["acme"], world["globex"]
    assert globex.delete(f"/v1/models/{world['cls']}").status_code == 404
    assert acme.delete("/v1/models/base").status_code == 403  # shared: the operator's
    r = acme.delete(f"/v1/models/{world['cls']}")
    assert r.status_code == 200 and r.json() == {
        "id": world["cls"],
        "object": "model",
        "deleted": True,
    }
    assert acme.get(f"/v1/models/{world['cls']}").status_code == 404
    r = acme.post("/v1/classify", json={"model": world["cls"], "inputs": ["x"]})
    assert r.status_code == 404
    _alive(world)
