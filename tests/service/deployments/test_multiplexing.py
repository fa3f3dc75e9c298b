"""LRU multiplexing: three models through a replica that holds two, every answer right."""

import pytest
from conftest import (
    app_on_session,
    build_tiny_encoder,
    metric_total,
    post,
    replica_stats,
    wait_for_metric,
)

from service.inference.models import load_model
from training import artifacts
from training.export import export_encoder

MODELS = ["enc-a", "enc-b", "enc-c"]
TEXT, LABELS = "the film was wonderful", ["happy", "sad", "angry"]


@pytest.fixture(scope="module")
def lru_url(ray_session, service_url, tmp_path_factory):
    home = tmp_path_factory.mktemp("lru-store")
    for seed, model_id in enumerate(["base", *MODELS]):
        hf = build_tiny_encoder(tmp_path_factory.mktemp(f"hf-{model_id}"), seed=seed)
        export_encoder(hf, home, model_id, max_seq_length=64)
    with app_on_session(
        service_url, "lru", home=home, model_replica_cpus=0.25, max_models_per_replica=2
    ) as url:
        yield url, home


def test_models_in_rotation_are_each_answered_by_themselves(lru_url):

    url, home = lru_url
    want = {m: load_model(artifacts.model_dir(home, m)).classify([TEXT], LABELS)[0] for m in MODELS}
    assert len({round(w["score"], 6) for w in want.values()}) == 3  # the models really differ
    app = "lru"
    loads_before = replica_stats(app)["loads"]
    for _ in range(3):
        for m in MODELS:
            status, body = post(
                f"{url}/v1/classify", {"model": m, "inputs": [TEXT], "labels": LABELS}
            )
            assert status == 200, body
            got = body["results"][0]
            assert got["label"] == want[m]["label"]
            assert got["score"] == pytest.approx(want[m]["score"], abs=1e-4)
    # two fit in the replica; cycling through three misses every time: 9 loads, not 3
    assert replica_stats(app)["loads"] - loads_before == 9


def test_evicted_models_free_their_memory(lru_url):

    url, _ = lru_url
    app = "lru"

    def rotate(rounds):
        for _ in range(rounds):
            for m in MODELS:
                assert (
                    post(f"{url}/v1/classify", {"model": m, "inputs": [TEXT], "labels": LABELS})[0]
                    == 200
                )

    rotate(3)  # allocator and caches warm
    before = replica_stats(app)
    rotate(10)
    after = replica_stats(app)
    assert after["loads"] - before["loads"] == 30
    growth = after["rss_bytes"] - before["rss_bytes"]
    print(
        f"RSS {before['rss_bytes'] / 2**20:.0f} MiB -> {after['rss_bytes'] / 2**20:.0f} MiB over 30 loads"
    )
    # a leaked session per load would grow it by 30 models; allow a few models' worth
    one_model = sum(f.stat().st_size for f in (lru_url[1] / "models" / "enc-a" / "onnx").iterdir())
    assert growth < 5 * one_model + 8 * 2**20, growth


def test_evictions_are_counted_in_metrics(lru_url, service_url):
    """Counted from before this test: earlier tests of this module evicted models too."""
    url, _ = lru_url
    name = "ray_serve_multiplexed_models_unload_counter_total"
    before = metric_total(service_url, name, application="lru")
    for m in MODELS * 2:  # two models fit: cycling three evicts one on every request
        status, _ = post(f"{url}/v1/classify", {"model": m, "inputs": [TEXT], "labels": LABELS})
        assert status == 200
    wait_for_metric(service_url, name, before + 6, application="lru")
