"""Batching and admission control in the model deployment, over real HTTP against real Ray
Serve; and the metrics they record."""

import json
import secrets
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import app_on_session, metric_total, post, replica_stats, wait_for_metric

LABELS = ["positive", "negative"]


def _classify(url, text):
    return post(f"{url}/v1/classify", {"model": "base", "inputs": [text], "labels": LABELS})


def test_concurrent_requests_are_batched_and_answered_as_alone(service_url):

    texts = [f"the film was {'wonderful ' * (i % 5)}{'dull ' * (i % 3)}mess {i}" for i in range(24)]
    alone = [_classify(service_url, t)[1]["results"][0] for t in texts[:4]]
    app = "tiny"
    before = replica_stats(app)["batches"]
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda t: _classify(service_url, t), texts))
    assert all(status == 200 for status, _ in answers), answers
    for (_, body), want in zip(answers[:4], alone, strict=False):
        got = body["results"][0]
        # int8 quantizes activations with scales over the whole batch, so a batch's neighbours
        # move scores slightly (~1e-5 here); labels do not change
        assert got["label"] == want["label"] and got["score"] == pytest.approx(
            want["score"], abs=1e-3
        )
    stats = replica_stats(app)
    ran = stats["batches"] - before
    assert 0 < ran < 24  # fewer model batches than requests
    sizes = [n for n, _ in stats["recent"][-ran:]]  # the batches of these requests only
    assert max(sizes) > 1 and sum(sizes) == 24, sizes


@pytest.fixture(scope="module")
def limited_url(ray_session, service_url, store):
    """A second app on the same proxy whose model replica takes 1 request and queues 1."""
    with app_on_session(
        service_url,
        "limited",
        home=store,
        model_replica_cpus=0.25,
        model_max_ongoing=1,
        model_max_queued=1,
    ) as url:
        yield url


def _raw(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def test_overload_is_a_503_with_retry_after_in_the_error_body(limited_url):
    heavy = {"model": "base", "inputs": ["where is the eiffel tower " * 40] * 64, "labels": LABELS}
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda _: _raw(f"{limited_url}/v1/classify", heavy), range(16)))
    codes = sorted(status for status, _, _ in answers)
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
    _, headers, body = next(a for a in answers if a[0] == 503)
    assert body["error"]["type"] == "overloaded" and "retry shortly" in body["error"]["message"]
    assert int(headers.get("Retry-After")) >= 1  # header names are case-insensitive
    # and the service is fine afterwards
    assert _raw(f"{limited_url}/v1/classify", {**heavy, "inputs": ["ok"]})[0] == 200


def test_metrics_count_these_requests_and_show_batches(service_url):
    """/metrics in Prometheus format: ours (ray_tuneserve_*) and Ray Serve's own. Counted from
    before this test, so that what earlier tests sent cannot make it pass."""
    name = "ray_tuneserve_requests_total"
    ok = {"model": "base", "status": "200", "route": "/v1/classify"}
    before = metric_total(service_url, name, **ok)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: _classify(service_url, f"text {i}"), range(8)))
    unknown = {"model": "unknown", "status": "404", "route": "/v1/classify"}
    missing_before = metric_total(service_url, name, **unknown)
    missing = f"nope-{secrets.token_hex(4)}"  # a model id no earlier test used
    post(f"{service_url}/v1/classify", {"model": missing, "inputs": ["x"], "labels": LABELS})
    wait_for_metric(service_url, name, before + 8, **ok)
    # an id the service does not have is counted as `unknown`, never under its own name
    wait_for_metric(service_url, name, missing_before + 1, **unknown)
    assert metric_total(service_url, name, model=missing) == 0
    with urllib.request.urlopen(f"{service_url}/metrics", timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/plain")
        text = resp.read().decode()
    for wanted in (
        "ray_tuneserve_batch_requests_bucket{",
        "ray_tuneserve_inference_seconds_bucket{",
        "ray_tuneserve_queue_seconds_bucket{",
        "ray_tuneserve_tokenize_seconds_bucket{",
        "ray_serve_multiplexed_models_load_counter",
    ):
        assert wanted in text, wanted


def test_a_model_call_past_its_time_limit_is_answered_with_503_not_held(
    ray_session, service_url, store
):
    """The replica holds every batch 1 s for company; the ingress waits 0.2 s for an answer
    (TUNESERVE_MODEL_CALL_TIMEOUT_S) and answers 503 saying so, instead of holding the call."""
    with app_on_session(
        service_url,
        "slow",
        home=store,
        model_replica_cpus=0.25,
        batch_wait_s=1.0,
        model_call_timeout_s=0.2,
    ) as url:
        status, body = _classify(url, "the film was fine")
        assert status == 503, body
        assert "did not answer within 0.2 s" in body["error"]["message"], body
        assert "TUNESERVE_MODEL_CALL_TIMEOUT_S" in body["error"]["message"]
