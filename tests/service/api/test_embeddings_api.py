"""/v1/embeddings over real HTTP, driven by the real `openai` client (which asks for base64 by
default) and by plain JSON: the runtime's own vectors, OpenAI's shape, the limits."""

import numpy as np
import openai
import pytest
from conftest import post

from service.inference.models import load_model
from training import artifacts

TEXTS = ["the film was wonderful", "a dull tedious mess", "where is the eiffel tower"]
# int8 scales each activation over its batch: a text embedded in another batch moves a little
OTHER_BATCH = 1e-3


@pytest.fixture(scope="module")
def client(service_url):
    return openai.OpenAI(base_url=f"{service_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def direct(store):
    model = load_model(artifacts.model_dir(store, "base"))
    return model, model.embed(TEXTS)


def test_the_openai_client_gets_the_runtimes_vectors(client, direct):
    model, want = direct
    got = client.embeddings.create(model="base", input=TEXTS)  # base64 on the wire
    assert got.object == "list" and got.model == "base"
    assert [d.index for d in got.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in got.data])
    assert vectors.shape == want.shape
    np.testing.assert_allclose(vectors, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    tokens = sum(len(e.ids) for e in model.session.encode(TEXTS))
    assert got.usage.prompt_tokens == got.usage.total_tokens == tokens
    floats = client.embeddings.create(model="base", input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, want[0], atol=OTHER_BATCH)


def test_dimensions_shorten_and_renormalize_and_too_many_are_refused(client, direct):
    _, want = direct
    got = client.embeddings.create(model="base", input=TEXTS[:1], dimensions=8)
    v = np.array(got.data[0].embedding)
    assert v.shape == (8,)
    np.testing.assert_allclose(v, want[0][:8] / np.linalg.norm(want[0][:8]), atol=OTHER_BATCH)
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, atol=1e-5)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="base", input="x", dimensions=want.shape[1] + 1)
    assert err.value.body["param"] == "dimensions"
    assert str(want.shape[1]) in err.value.body["message"]


def test_token_ids_are_the_models_own(service_url, direct):
    model, want = direct
    ids = model.session.tokenizer.encode(TEXTS[0], add_special_tokens=False).ids
    status, body = post(f"{service_url}/v1/embeddings", {"model": "base", "input": [ids]})
    assert status == 200, body
    np.testing.assert_allclose(body["data"][0]["embedding"], want[0], atol=OTHER_BATCH)
    status, body = post(f"{service_url}/v1/embeddings", {"model": "base", "input": ids})
    assert status == 200 and len(body["data"]) == 1, body
    status, body = post(f"{service_url}/v1/embeddings", {"model": "base", "input": [10**7]})
    assert status == 400 and body["error"]["param"] == "input", body
    assert "10000000" in body["error"]["message"] and "vocabulary" in body["error"]["message"]


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"model": "base", "input": []}, 422, "input"),
        ({"model": "base", "input": [""]}, 422, None),
        ({"model": "base", "input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"model": "base", "input": "x" * 100_001}, 422, None),
        ({"model": "base", "input": "x", "dimensions": 0}, 422, "dimensions"),
        ({"model": "no-such-model", "input": "x"}, 404, "model"),
        ({"model": "base", "input": ["x"] * 65}, 422, "input"),
        ({"model": "base", "input": "x", "surprise": 1}, 422, None),
    ],
)
def test_bad_requests_get_a_clear_error(service_url, body, status, param):
    got, err = post(f"{service_url}/v1/embeddings", body)
    assert got == status, err
    assert set(err) == {"error"} and err["error"]["message"]
    if param:
        assert err["error"]["param"].startswith(param), err


def test_a_refused_request_leaves_its_batch_answered(direct):
    """Refused as its own answer, not raised: the batch's pass serves the others."""
    from service.inference.requests import EmbedItem, Refused

    model, want = direct
    ok, bad, short = model.embed_many(
        [EmbedItem(TEXTS), EmbedItem([[10**7]]), EmbedItem(TEXTS[:1], dimensions=4)]
    )
    assert isinstance(bad, Refused) and bad.status == 400 and bad.param == "input"
    np.testing.assert_allclose(ok["vectors"], want, atol=OTHER_BATCH)
    assert short["vectors"].shape == (1, 4)
