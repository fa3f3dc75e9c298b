"""/hf/models/{model} driven by the real `huggingface_hub.InferenceClient`, unmodified, over real
HTTP: what it sends, what it parses, and the parameters refused by name."""

import numpy as np
import pytest
from conftest import post
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from service.inference.models import load_model
from training import artifacts

CONTEXT = (
    "The great wall stretches across northern China. The eiffel tower stands in Paris, France. "
    "Mount fuji is the tallest mountain in Japan."
)
LABELS = ["sports", "politics", "cooking"]


@pytest.fixture(autouse=True)
def _online(hf_client_online):
    pass


@pytest.fixture(scope="module")
def hf(service_url):
    return InferenceClient(base_url=f"{service_url}/hf/models/base")


@pytest.fixture(scope="module")
def runtime(store):
    return load_model(artifacts.model_dir(store, "base"))


def _status(err: pytest.ExceptionInfo) -> int:
    return err.value.response.status_code


def test_feature_extraction_is_the_runtimes_embedding(hf, runtime):
    one = hf.feature_extraction("the film was wonderful")
    assert one.shape == (1, runtime.embed(["x"]).shape[1]) and one.dtype == np.float32
    np.testing.assert_allclose(one[0], runtime.embed(["the film was wonderful"])[0], atol=1e-3)
    two = hf.feature_extraction(["a", "b"], dimensions=8)
    assert two.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(two, axis=1), 1.0, atol=1e-5)


def test_zero_shot_matches_classify(hf, service_url):
    text, template = "The striker scored twice.", "This text is about {}."
    got = hf.zero_shot_classification(text, LABELS, hypothesis_template=template)
    assert [e.label for e in got] == sorted(
        LABELS, key=lambda x: -next(e.score for e in got if e.label == x)
    )
    assert sum(e.score for e in got) == pytest.approx(1.0, abs=1e-5)
    status, body = post(
        f"{service_url}/v1/classify",
        {"model": "base", "inputs": [text], "labels": LABELS, "template": template},
    )
    assert status == 200
    for e in got:
        assert e.score == pytest.approx(body["results"][0]["scores"][e.label], abs=1e-5)


def test_question_answering_returns_a_span_of_the_context(hf):
    got = hf.question_answering(question="where is the eiffel tower", context=CONTEXT)
    assert CONTEXT[got.start : got.end] == got.answer and got.answer
    assert 0 < got.score <= 1


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda c: c.zero_shot_classification("x", LABELS, multi_label=True), "multi_label"),
        (lambda c: c.text_classification("x"), "zero_shot_classification"),
        (lambda c: c.fill_mask("Paris is the [MASK] of France."), "no masked-LM head"),
        (lambda c: c.question_answering(question="q", context="c.", top_k=2), "top_k"),
        (lambda c: c.question_answering(question="q", context="c.", doc_stride=8), "doc_stride"),
        (
            lambda c: c.question_answering(question="q", context="c.", max_answer_len=5),
            "max_answer_len",
        ),
        (
            lambda c: c.question_answering(
                question="q", context="c.", handle_impossible_answer=True
            ),
            "handle_impossible_answer is not served",
        ),
        (lambda c: c.feature_extraction("x", normalize=False), "normalize"),
        (lambda c: c.feature_extraction("x", prompt_name="query"), "prompt_name"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(hf, call, words):
    with pytest.raises(HfHubHTTPError) as err:
        call(hf)
    assert _status(err) == 400, err.value.response.text
    assert words in err.value.response.json()["error"]["message"]


def test_unknown_models_and_bad_bodies_get_the_one_error_body(service_url):
    status, body = post(f"{service_url}/hf/models/nope", {"inputs": "x"})
    assert status == 404 and body["error"]["param"] == "model", body
    status, body = post(f"{service_url}/hf/models/base", {"inputs": "x", "surprise": 1})
    assert status == 422 and set(body) == {"error"}, body
    status, body = post(f"{service_url}/hf/models/base", {"inputs": ["x"] * 65})
    assert status == 422 and body["error"]["param"] == "inputs", body
