"""The real bundled encoder (all-MiniLM-L6-v2), imported and served as `make run` does."""

import pytest
from conftest import app_on_session, post

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_url(ray_session, service_url, tmp_path_factory):
    from training.encoders import ensure_base

    home = tmp_path_factory.mktemp("real-store")
    manifest, imported = ensure_base(home)
    assert imported and manifest.parity.mean_cosine["int8"] > 0.98
    assert ensure_base(home) == (manifest, False)  # a second import exports nothing
    with app_on_session(service_url, "real", home=home, model_replica_cpus=0.5) as url:
        yield url


def test_zero_shot_sentiment(real_url):
    status, body = post(
        f"{real_url}/v1/classify",
        {
            "model": "base",
            "inputs": ["I loved this film, it was wonderful", "a dull, tedious mess"],
            "labels": ["positive", "negative"],
        },
    )
    assert status == 200, body
    assert [r["label"] for r in body["results"]] == ["positive", "negative"]


def test_sentence_qa_finds_paris(real_url):
    context = (
        "The Great Wall of China stretches across the north of the country. "
        "The Eiffel Tower was completed in 1889 and stands on the Champ de Mars in Paris. "
        "Mount Fuji is the highest mountain in Japan."
    )
    status, body = post(
        f"{real_url}/v1/qa",
        {"model": "base", "question": "Where is the Eiffel Tower?", "context": context},
    )
    assert status == 200, body
    (r,) = body["results"]
    assert "Paris" in r["answer"] and context[r["start"] : r["end"]] == r["answer"]
