"""Head-only variants over real HTTP: routed to their base's replica, batched with it into one
encoder pass, several in one request, refused when their base changed."""

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import app_on_session, get, post, replica_stats, wait_for_metric
from testdata import write_head_variant

from training import artifacts

TEXTS = ["the film was wonderful", "a dull tedious mess"]
HEADS = {"h1": ["a", "b"], "h2": ["x", "y", "z"], "h3": ["p", "q"]}
LABELS = ["happy", "sad"]
APP = "heads"
PASSES = "ray_tuneserve_encoder_passes_total"


def _write_heads(home) -> None:
    for seed, (head_id, labels) in enumerate(HEADS.items()):
        write_head_variant(home, head_id, labels, seed)
    write_head_variant(home, "stale", ["a", "b"], 9, base_sha256="0" * 64)


@pytest.fixture(scope="module")
def url(ray_session, service_url, store, tmp_path_factory):
    home = tmp_path_factory.mktemp("heads-store")
    shutil.copytree(artifacts.model_dir(store, "base"), artifacts.model_dir(home, "base"))
    _write_heads(home)
    # a batch waits a moment for company, so that a burst is one batch whatever the timing
    # (and the ingress sends each request at once, not holding some for the next call)
    with app_on_session(
        service_url,
        APP,
        home=home,
        model_replica_cpus=0.25,
        batch_wait_s=0.5,
        model_calls_in_flight=8,
    ) as url:
        yield url


def _ask(url: str, model: str) -> tuple[int, dict]:
    body = {"model": model, "inputs": TEXTS, **({"labels": LABELS} if model == "base" else {})}
    return post(f"{url}/v1/classify", body)


def test_a_burst_for_three_variants_and_their_base_is_one_encoder_pass(url, service_url):
    alone = {m: _ask(url, m) for m in ["h1", "h2", "h3", "base"]}
    assert all(status == 200 for status, _ in alone.values()), alone
    assert set(alone["h2"][1]["results"][0]["scores"]) == {"x", "y", "z"}
    passes = wait_for_metric(service_url, PASSES, 1, model="base")
    stats = replica_stats(APP)
    with ThreadPoolExecutor(4) as pool:
        burst = dict(zip(alone, pool.map(lambda m: _ask(url, m), alone), strict=True))
    assert replica_stats(APP)["batches"] - stats["batches"] == 1
    wait_for_metric(service_url, PASSES, passes + 1, model="base")
    for m, (status, body) in burst.items():
        assert status == 200 and body["model"] == m
        for got, want in zip(body["results"], alone[m][1]["results"], strict=True):
            assert got["label"] == want["label"]
            assert got["score"] == pytest.approx(want["score"], abs=1e-6)
    heads = replica_stats(APP)["heads"]
    assert heads["loads"] == 3 and heads["hits"] >= 3 and heads["applied"] >= 6
    # and /metrics says the same, for this application's replica alone (once Ray exports it)
    mine = {"application": APP, "model": "base"}
    for name, stat in (
        ("heads_applied", "applied"),
        ("head_cache_hits", "hits"),
        ("head_loads", "loads"),
    ):
        metric = f"ray_tuneserve_{name}_total"
        assert wait_for_metric(service_url, metric, heads[stat], **mine) == heads[stat], metric
    # the cache's gauges stay exported between requests (Ray drops a gauge not set again
    # within two report intervals: the replica sets them every half second)
    assert heads["heads"] == 3 and heads["bytes"] > 0
    time.sleep(3)  # past the tests' gauge TTL of 2 s since the last request
    assert wait_for_metric(service_url, "ray_tuneserve_head_cache_heads", 3, application=APP) == 3
    bytes_ = "ray_tuneserve_head_cache_bytes"
    assert wait_for_metric(service_url, bytes_, heads["bytes"], application=APP) == heads["bytes"]


def test_one_request_asks_several_variants_and_the_base(url):
    status, body = post(
        f"{url}/v1/classify", {"model": ["h1", "base", "h3"], "inputs": TEXTS, "labels": LABELS}
    )
    assert status == 200, body
    assert body["object"] == "list" and [d["model"] for d in body["data"]] == ["h1", "base", "h3"]
    for entry in body["data"]:
        status, alone = _ask(url, entry["model"])
        assert [r["label"] for r in entry["results"]] == [r["label"] for r in alone["results"]]
    status, body = post(f"{url}/v1/classify", {"model": ["h1", "h2"], "inputs": TEXTS})
    assert status == 200 and len(body["data"]) == 2


def test_lists_are_refused_with_the_reason(url):
    status, body = post(f"{url}/v1/classify", {"model": ["h1", "base"], "inputs": TEXTS})
    assert status == 400 and body["error"]["param"] == "labels"
    status, body = post(f"{url}/v1/classify", {"model": ["h1", "h1"], "inputs": TEXTS})
    assert status == 422
    status, body = post(f"{url}/v1/classify", {"model": ["h1", "nope"], "inputs": TEXTS})
    assert status == 404


def test_a_variant_says_it_is_head_only_and_a_stale_one_is_refused(url):
    status, view = get(f"{url}/v1/models/h1")
    assert status == 200 and view["head_only"] and view["base"] == "base"
    status, body = _ask(url, "stale")
    assert status == 409, body
    assert "'stale' is a head trained on another version of its base" in body["error"]["message"]
    assert _ask(url, "h1")[0] == 200  # the others still serve


def test_embeddings_are_the_bases_not_a_classifiers(url):
    status, body = post(f"{url}/v1/embeddings", {"model": "h1", "input": "x"})
    assert status == 400 and body["error"]["type"] == "wrong_task", body
    status, body = post(f"{url}/v1/embeddings", {"model": "base", "input": "x"})
    assert status == 200 and len(body["data"][0]["embedding"]) > 0, body


def test_the_hugging_face_client_classifies_with_a_head_variant(url, hf_client_online):
    from huggingface_hub import InferenceClient

    hf = InferenceClient(base_url=f"{url}/hf/models/h2")
    status, body = _ask(url, "h2")
    assert status == 200
    want = body["results"][0]["scores"]
    got = hf.text_classification(TEXTS[0])
    assert [e.label for e in got] == sorted(want, key=lambda x: -want[x])
    for e in got:  # int8 scales activations over the batch: alone, a text moves a little
        assert e.score == pytest.approx(want[e.label], abs=1e-3)
    assert len(hf.text_classification(TEXTS[0], top_k=1)) == 1
    raw = {e.label: e.score for e in hf.text_classification(TEXTS[0], function_to_apply="none")}
    logits = np.array([raw[x] for x in HEADS["h2"]])
    soft = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    alone = {e.label: e.score for e in got}  # the same text alone: the same batch
    np.testing.assert_allclose(soft, [alone[x] for x in HEADS["h2"]], atol=1e-6)
    sig = {e.label: e.score for e in hf.text_classification(TEXTS[0], function_to_apply="sigmoid")}
    assert sig == pytest.approx({k: 1 / (1 + np.exp(-v)) for k, v in raw.items()}, abs=1e-6)
