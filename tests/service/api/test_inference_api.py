"""The API over real HTTP: real Ray Serve on 127.0.0.1, real ONNX Runtime, the tiny encoder."""

import json
import urllib.request

import pytest
from conftest import get, post

from service.inference.models import load_model
from training import artifacts

CONTEXT = (
    "The great wall stretches across northern China. The eiffel tower stands in Paris, France. "
    "Mount fuji is the tallest mountain in Japan."
)


def _error(status, body, code, type_=None, param=None):
    assert status == code, body
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "param"}, body
    assert body["error"]["message"]
    if type_:
        assert body["error"]["type"] == type_, body
    if param:
        assert body["error"]["param"] == param, body
    return body["error"]["message"]


def test_classify_zero_shot_matches_the_runtime(service_url, store):
    texts = ["the film was wonderful", "a dull tedious mess"]
    labels = ["positive", "negative"]
    status, body = post(
        f"{service_url}/v1/classify", {"model": "base", "inputs": texts, "labels": labels}
    )
    assert status == 200, body
    assert body["model"] == "base" and len(body["results"]) == 2
    direct = load_model(artifacts.model_dir(store, "base")).classify(texts, labels)
    for got, want in zip(body["results"], direct, strict=True):
        assert got["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert set(got["scores"]) == set(labels)
        assert sum(got["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_classify_accepts_one_text_and_a_template(service_url):
    status, body = post(
        f"{service_url}/v1/classify",
        {"model": "base", "inputs": "the film", "labels": ["a", "b", "c"], "template": "It is {}."},
    )
    assert status == 200, body
    assert len(body["results"]) == 1 and body["results"][0]["label"] in {"a", "b", "c"}


def test_qa_returns_a_sentence_span_of_the_context(service_url):
    status, body = post(
        f"{service_url}/v1/qa",
        {"model": "base", "question": "where is the eiffel tower", "context": CONTEXT},
    )
    assert status == 200, body
    (r,) = body["results"]
    assert CONTEXT[r["start"] : r["end"]] == r["answer"]
    assert r["answer"].endswith(".") and 0 <= r["score"] <= 1


def test_qa_batch_form(service_url):
    pairs = [
        {"question": "where is the eiffel tower", "context": CONTEXT},
        {"question": "what is tall", "context": "One sentence only"},
    ]
    status, body = post(f"{service_url}/v1/qa", {"model": "base", "inputs": pairs})
    assert status == 200, body
    assert len(body["results"]) == 2
    assert body["results"][1] == {
        "answer": "One sentence only",
        "start": 0,
        "end": 17,
        "score": pytest.approx(1.0),
    }


def test_model_named_by_header(service_url):
    status, body = post(
        f"{service_url}/v1/qa",
        {"question": "where is the eiffel tower", "context": CONTEXT},
        headers={"serve-multiplexed-model-id": "base"},
    )
    assert status == 200 and body["model"] == "base", body


def test_body_model_wins_over_header(service_url):
    status, body = post(
        f"{service_url}/v1/classify",
        {"model": "base", "inputs": ["x"], "labels": ["a", "b"]},
        headers={"serve-multiplexed-model-id": "does-not-exist"},
    )
    assert status == 200 and body["model"] == "base", body
    status, body = post(
        f"{service_url}/v1/classify",
        {"inputs": ["x"], "labels": ["a", "b"]},
        headers={"serve-multiplexed-model-id": "does-not-exist"},
    )
    _error(status, body, 404, "model_not_found")


@pytest.mark.parametrize(
    "body,code,param,says",
    [
        ({"model": "base", "labels": ["a", "b"]}, 422, "inputs", "Field required"),
        ({"model": "base", "inputs": [], "labels": ["a", "b"]}, 422, "inputs", "at least 1"),
        ({"model": "base", "inputs": [""], "labels": ["a", "b"]}, 422, "inputs[0]", "at least 1"),
        (
            {"model": "base", "inputs": ["x"] * 65, "labels": ["a", "b"]},
            422,
            "inputs",
            "at most 64",
        ),
        (
            {"model": "base", "inputs": ["x" * 10_001], "labels": ["a", "b"]},
            422,
            "inputs[0]",
            "10000",
        ),
        ({"model": "base", "inputs": ["x"]}, 400, "labels", "needs `labels`"),
        ({"model": "base", "inputs": ["x"], "labels": ["a"]}, 422, "labels", "at least 2"),
        (
            {"model": "base", "inputs": ["x"], "labels": [str(i) for i in range(33)]},
            422,
            "labels",
            "at most 32",
        ),
        ({"model": "base", "inputs": ["x"], "labels": ["a", "a"]}, 422, "labels", "unique"),
        ({"model": "base", "inputs": ["x"], "labels": ["a", " a "]}, 422, "labels", "unique"),
        (
            {"model": "base", "inputs": ["x"], "labels": ["a", "b"], "template": "no slot"},
            422,
            "template",
            "{}",
        ),
        ({"model": "nope", "inputs": ["x"], "labels": ["a", "b"]}, 404, "model", "does not exist"),
        ({"inputs": ["x"], "labels": ["a", "b"]}, 400, "model", "name the model"),
        (
            {"model": "base", "inputs": ["x"], "labels": ["a", "b"], "extra": 1},
            422,
            "extra",
            "not permitted",
        ),
        ({"model": "base", "inputs": [3], "labels": ["a", "b"]}, 422, "inputs[0]", "string"),
    ],
)
def test_classify_errors_say_what_to_change(service_url, body, code, param, says):
    status, got = post(f"{service_url}/v1/classify", body)
    assert says in _error(status, got, code, param=param)


@pytest.mark.parametrize(
    "body,says",
    [
        ({"model": "base", "question": "q"}, "`context` is missing"),
        ({"model": "base", "context": "c"}, "`question` is missing"),
        ({"model": "base"}, "give `question` and `context`"),
        (
            {
                "model": "base",
                "question": "q",
                "context": "c",
                "inputs": [{"question": "q", "context": "c"}],
            },
            "not both",
        ),
        ({"model": "base", "inputs": []}, "at least 1"),
        ({"model": "base", "question": "q", "context": "c" * 10_001}, "10000"),
    ],
)
def test_qa_errors_say_what_to_change(service_url, body, says):
    status, got = post(f"{service_url}/v1/qa", body)
    assert says in _error(status, got, 422)


def test_malformed_json_is_a_400_in_the_error_body(service_url):
    status, body = post(f"{service_url}/v1/classify", None, raw=b'{"model": "base", "inputs": [')
    assert "not valid JSON" in _error(status, body, 400, "invalid_json")


def test_unknown_route_and_method_use_the_error_body(service_url):
    _error(*get(f"{service_url}/v1/nothing"), 404, "not_found")
    _error(*get(f"{service_url}/v1/classify"), 405, "method_not_allowed")
    try:
        urllib.request.urlopen(f"{service_url}/v1/classify", timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.code == 405 and exc.headers["allow"] == "POST"  # RFC 9110: what it takes


def test_models_list_and_get(service_url):
    status, body = get(f"{service_url}/v1/models")
    assert status == 200 and body["object"] == "list"
    (base,) = [m for m in body["data"] if m["id"] == "base"]
    assert base["task"] == "feature-extraction" and base["zero_shot"] is True
    assert base["endpoints"] == ["text-classification", "extractive-qa", "embeddings"]
    assert base["precision"] in {"int8", "fp32"} and base["created_at"]
    # what a replica serves on this hardware (CPU), and why
    serving = base["serving"]
    assert (serving["precision"], serving["device"]) == (base["precision"], "cpu")
    assert "cosine" in serving["reason"]
    status, one = get(f"{service_url}/v1/models/base")
    assert status == 200 and one == base
    _error(*get(f"{service_url}/v1/models/nope"), 404, "model_not_found")


def test_health_ready_docs_and_openapi(service_url):
    assert get(f"{service_url}/healthz") == (200, {"status": "ok"})
    status, body = get(f"{service_url}/readyz")
    assert status == 200 and body["status"] == "ready"
    status, spec = get(f"{service_url}/openapi.json")
    assert status == 200 and {"/v1/classify", "/v1/qa", "/v1/models"} <= set(spec["paths"])
    with urllib.request.urlopen(f"{service_url}/docs", timeout=30) as resp:
        assert resp.status == 200 and b"swagger" in resp.read().lower()


def test_error_body_is_declared_json(service_url):
    req = urllib.request.Request(
        f"{service_url}/v1/qa",
        data=json.dumps({}).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.headers["content-type"].startswith("application/json")
    else:
        pytest.fail("an empty QA request was accepted")
