"""LRU multiplexing: three models through a replica that holds two, every answer right."""

import pytest
from conftest import build_tiny_encoder, post, replica_stats

from service.runtime import load_model
from training import artifacts
from training.export import export_encoder

MODELS = ["enc-a", "enc-b", "enc-c"]
TEXT, LABELS = "the film was wonderful", ["happy", "sad", "angry"]


@pytest.fixture(scope="module")
def lru_url(ray_session, service_url, tmp_path_factory):
    from ray import serve

    from service.cli import wait_ready
    from service.main import build_app
    from service.settings import Settings

    home = tmp_path_factory.mktemp("lru-store")
    for seed, model_id in enumerate(["base", *MODELS]):
        hf = build_tiny_encoder(tmp_path_factory.mktemp(f"hf-{model_id}"), seed=seed)
        export_encoder(hf, home, model_id, max_seq_length=64)
    settings = Settings(home=home, model_replica_cpus=0.25, max_models_per_replica=2)
    serve.run(build_app(settings.app_args()), name="lru", route_prefix="/lru", blocking=False)
    url = f"{service_url}/lru"
    wait_ready(url, timeout_s=120)
    yield url, home
    serve.delete("lru")


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
    import re
    import time
    import urllib.request

    url, _ = lru_url
    for m in MODELS * 2:
        assert (
            post(f"{url}/v1/classify", {"model": m, "inputs": [TEXT], "labels": LABELS})[0] == 200
        )
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(f"{service_url}/metrics", timeout=30) as resp:
            text = resp.read().decode()
        counts = [
            float(x)
            for x in re.findall(
                r'^ray_serve_multiplexed_models_unload_counter(?:_total)?\{[^}]*application="lru"[^}]*\} (\S+)',
                text,
                re.M,
            )
        ]
        if counts and sum(counts) >= 4:
            break
        assert time.monotonic() < deadline, counts
        time.sleep(2)
