"""API keys and tenant isolation, over real HTTP against real Ray Serve and a real database.

One app with an admin key; two tenants, acme and globex. acme's file, job and fine-tuned
model are invisible to globex on every endpoint (404, never 403) and absent from its lists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import app_on_session
from testdata import classification_file, copy_model

from training import artifacts

ADMIN_KEY = "test-admin-key-0123456789abcdef"
LABELS = ["positive", "negative"]


@pytest.fixture(scope="module")
def secure(ray_session, service_url, store, tmp_path_factory):
    """An app at /secure with the admin key set and a database of its own."""
    db_dir = tmp_path_factory.mktemp("secure-db")
    with app_on_session(
        service_url,
        "secure",
        home=store,
        admin_key=ADMIN_KEY,
        database_url=f"sqlite:///{db_dir / 'auth.db'}",
        model_replica_cpus=0.25,
        jobs_poll_s=60,  # the runner stays out of the way: these jobs are never trained
    ) as url:  # /readyz needs no key
        yield url


def client(url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def keys(secure):
    admin = client(secure, ADMIN_KEY)
    made = {}
    for tenant in ("acme", "globex"):
        r = admin.post("/v1/admin/keys", json={"tenant": tenant})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tenant"] == tenant and body["key"].startswith("ts-")
        made[tenant] = body
    return made


@pytest.fixture(scope="module")
def acme_things(secure, keys, store, tmp_path_factory):
    """acme's file, job and fine-tuned model (a copy of base under the job's model id)."""
    acme = client(secure, keys["acme"]["key"])
    path = classification_file(tmp_path_factory.mktemp("acme") / "reviews.jsonl", rows=20)
    with path.open("rb") as f:
        r = acme.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    r = acme.post("/v1/fine_tuning/jobs", json={"model": "base", "training_file": file_id})
    assert r.status_code == 200, r.text
    job = r.json()
    # the id the job's model will have (OpenAI's `fine_tuned_model` is set on success)
    model_id = job["spec"]["output_model_id"]
    copy_model(store, "base", model_id, link=True)
    yield {"file": file_id, "job": job["id"], "model": model_id}
    shutil.rmtree(artifacts.model_dir(store, model_id), ignore_errors=True)


def _api_routes(url: str) -> list[tuple[str, str]]:
    """Every API operation (/v1/, /hf/) the service's own schema declares, its path parameters
    filled."""
    spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
    routes = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, ops in spec["paths"].items()
        if path.startswith(("/v1/", "/hf/"))
        for method in ops
    ]
    assert len(routes) >= 20 and ("POST", "/hf/models/model_id") in routes, routes
    return routes


def test_without_a_valid_key_every_api_route_is_401(secure, keys):
    for key in (None, "ts-not-a-key"):
        anon = client(secure, key)
        for method, path in _api_routes(secure):
            r = anon.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 401, (key, method, path, r.text)
            assert r.json()["error"]["type"] == "invalid_api_key"
            assert r.headers["www-authenticate"].startswith("Bearer")
    # health and docs stay open (probes, schema)
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/openapi.json").status_code == 200


def test_only_the_admin_key_manages_keys(secure, keys):
    acme = client(secure, keys["acme"]["key"])
    r = acme.post("/v1/admin/keys", json={"tenant": "acme"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_denied"
    listing = client(secure, ADMIN_KEY).get("/v1/admin/keys").json()
    shown = {k["id"]: k for k in listing["data"]}
    for made in keys.values():
        assert shown[made["id"]]["tenant"] == made["tenant"]
        assert made["key"] not in json.dumps(listing)  # a key is shown once, at creation


def test_tenants_see_only_their_own_files_jobs_and_models(secure, keys, acme_things, tmp_path):
    acme = client(secure, keys["acme"]["key"])
    globex = client(secure, keys["globex"]["key"])
    f, job, model = acme_things["file"], acme_things["job"], acme_things["model"]
    # globex's own file: a job from acme's model with it must fail on the model alone
    with open(classification_file(tmp_path / "g.jsonl", rows=20), "rb") as fh:
        own = globex.post(
            "/v1/files", files={"file": ("g.jsonl", fh)}, data={"purpose": "fine-tune"}
        )
    own_file = own.json()["id"]

    # the owner sees all three
    assert acme.get(f"/v1/files/{f}").status_code == 200
    assert acme.get(f"/v1/fine_tuning/jobs/{job}").status_code == 200
    assert acme.get(f"/v1/models/{model}").status_code == 200
    ok = acme.post("/v1/classify", json={"model": model, "inputs": ["nice"], "labels": LABELS})
    assert ok.status_code == 200, ok.text
    assert f in [x["id"] for x in acme.get("/v1/files").json()["data"]]
    assert job in [x["id"] for x in acme.get("/v1/fine_tuning/jobs").json()["data"]]
    assert model in [m["id"] for m in acme.get("/v1/models").json()["data"]]

    # the other tenant: 404 on every endpoint, nothing in its lists
    for method, path, body in [
        ("GET", f"/v1/files/{f}", None),
        ("GET", f"/v1/files/{f}/content", None),
        ("DELETE", f"/v1/files/{f}", None),
        ("GET", f"/v1/fine_tuning/jobs/{job}", None),
        ("GET", f"/v1/fine_tuning/jobs/{job}/events", None),
        ("GET", f"/v1/fine_tuning/jobs/{job}/checkpoints", None),
        ("POST", f"/v1/fine_tuning/jobs/{job}/cancel", None),
        ("GET", f"/v1/models/{model}", None),
        ("POST", "/v1/fine_tuning/jobs", {"model": "base", "training_file": f}),
        ("POST", "/v1/fine_tuning/jobs", {"model": model, "training_file": own_file}),
        ("POST", "/v1/classify", {"model": model, "inputs": ["nice"], "labels": LABELS}),
        ("POST", "/v1/qa", {"model": model, "question": "who?", "context": "Ann did."}),
        ("POST", "/v1/embeddings", {"model": model, "input": "nice"}),
        (
            "POST",
            f"/hf/models/{model}",
            {"inputs": "nice", "parameters": {"candidate_labels": LABELS}},
        ),
    ]:
        r = globex.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    r = globex.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": own_file})
    assert r.json()["error"]["param"] == "model", r.text  # refused for the model, not the file
    assert [x["id"] for x in globex.get("/v1/files").json()["data"]] == [own_file]
    assert globex.get("/v1/fine_tuning/jobs").json()["data"] == []
    listed = [m["id"] for m in globex.get("/v1/models").json()["data"]]
    assert model not in listed and "base" in listed  # base models are everyone's
    base = globex.post("/v1/classify", json={"model": "base", "inputs": ["x"], "labels": LABELS})
    assert base.status_code == 200

    # and acme's things are intact after globex's attempts
    assert acme.get(f"/v1/files/{f}").status_code == 200
    assert acme.get(f"/v1/fine_tuning/jobs/{job}").json()["status"] != "cancelled"
    # the admin sees everything
    admin = client(secure, ADMIN_KEY)
    assert admin.get(f"/v1/fine_tuning/jobs/{job}").status_code == 200


def test_a_revoked_key_stops_working_at_once(secure, keys):
    admin = client(secure, ADMIN_KEY)
    r = admin.post("/v1/admin/keys", json={"tenant": "initech"})
    key = r.json()
    user = client(secure, key["key"])
    assert user.get("/v1/files").status_code == 200
    assert admin.delete(f"/v1/admin/keys/{key['id']}").status_code == 200
    r = user.get("/v1/files")
    assert r.status_code == 401, r.text
    assert admin.delete("/v1/admin/keys/key_nope").status_code == 404


def test_no_key_reaches_the_logs(secure, keys, acme_things):
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    secrets = [ADMIN_KEY] + [k["key"] for k in keys.values()]
    leaked = [
        (str(p), s)
        for p in (session / "logs").rglob("*")
        if p.is_file()
        for s in secrets
        if s.encode() in p.read_bytes()
    ]
    assert leaked == []


def test_a_body_over_the_limit_is_413_and_a_tenant_over_its_jobs_is_429(
    secure, keys, acme_things, tmp_path
):
    acme = client(secure, keys["acme"]["key"])
    big = {"model": "base", "inputs": ["x" * 9000] * 200, "labels": LABELS}  # ~1.8 MB
    r = acme.post("/v1/classify", json=big)
    assert r.status_code == 413 and "TUNESERVE_MAX_REQUEST_BYTES" in r.text, r.text
    # sent in chunks, with no Content-Length to refuse it by: counted as it streams
    chunked = (b"x" * 9000 for _ in range(200))
    r = acme.post("/v1/classify", content=chunked, headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"], r.text
    # acme has one unfinished job (the runner of this app does not pick jobs up); 4 at most
    body = {"model": "base", "training_file": acme_things["file"]}
    codes = [acme.post("/v1/fine_tuning/jobs", json=body).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes
    r = acme.post("/v1/fine_tuning/jobs", json=body)
    assert r.json()["error"]["type"] == "rate_limit_exceeded" and r.headers["retry-after"]
    # the limit is per tenant: globex may still start one, from a file of its own
    globex = client(secure, keys["globex"]["key"])
    with open(classification_file(tmp_path / "g.jsonl", rows=20), "rb") as f:
        up = globex.post("/v1/files", files={"file": ("g.jsonl", f)}, data={"purpose": "fine-tune"})
    mine = {"model": "base", "training_file": up.json()["id"]}
    assert globex.post("/v1/fine_tuning/jobs", json=mine).status_code == 200
