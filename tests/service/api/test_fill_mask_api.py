"""/v1/fill-mask and the Hugging Face client's fill_mask, over real HTTP against an encoder
exported with its masked-LM head (as a pretraining run exports it), checked against PyTorch."""

import pytest
import torch
from conftest import post
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from testdata import write_fill_mask_encoder
from tokenizers import Tokenizer

from service.inference.models import load_model
from service.inference.requests import FillMaskItem, Refused
from training import artifacts
from training.fill_mask_graph import MaskLogits

MODEL = "mlm-encoder"
TEXT = "the eiffel tower stands in [MASK] france"


@pytest.fixture(scope="module")
def mlm(store, tiny_encoder_dir):
    return write_fill_mask_encoder(store, MODEL, tiny_encoder_dir, seed=3)


@pytest.fixture(scope="module")
def torch_probs(mlm, store):
    """PyTorch's probabilities at each mask of a text (what the service must match)."""
    tok = Tokenizer.from_file(str(artifacts.model_dir(store, MODEL) / "tokenizer/tokenizer.json"))
    mask_id = tok.token_to_id("[MASK]")

    def probs(text: str) -> torch.Tensor:
        e = tok.encode(text)
        ids = torch.tensor([e.ids])
        with torch.no_grad():
            logits = MaskLogits(mlm, mask_id)(ids, torch.ones_like(ids), torch.zeros_like(ids))
        return logits.softmax(-1)

    return probs, tok


def test_the_top_tokens_are_pytorchs(service_url, torch_probs):
    probs, tok = torch_probs
    status, body = post(f"{service_url}/v1/fill-mask", {"model": MODEL, "inputs": TEXT, "top_k": 3})
    assert status == 200, body
    (result,) = body["results"]
    (mask,) = result["masks"]
    want = probs(TEXT)[0].topk(3)
    assert [c["token"] for c in mask] == want.indices.tolist()
    assert [c["score"] for c in mask] == pytest.approx(want.values.tolist(), abs=1e-4)
    for c in mask:
        assert c["token_str"] == tok.decode([c["token"]])
        assert "[MASK]" not in c["sequence"] and c["sequence"].startswith("the eiffel tower")


def test_only_an_encoder_with_a_head_lists_fill_mask(service_url, mlm):
    from conftest import get

    assert "fill-mask" in get(f"{service_url}/v1/models/{MODEL}")[1]["endpoints"]
    assert "fill-mask" not in get(f"{service_url}/v1/models/base")[1]["endpoints"]


def test_every_mask_of_every_text_is_filled(service_url, torch_probs):
    probs, _ = torch_probs
    texts = ["[MASK] film was [MASK]", "where is the [MASK] tower"]
    status, body = post(f"{service_url}/v1/fill-mask", {"model": MODEL, "inputs": texts})
    assert status == 200, body
    assert [len(r["masks"]) for r in body["results"]] == [2, 1]
    first = probs(texts[0])
    for k, mask in enumerate(body["results"][0]["masks"]):
        assert len(mask) == 5 and mask[0]["token"] == int(first[k].argmax())
    # each candidate fills its own mask and leaves the other
    assert body["results"][0]["masks"][1][0]["sequence"].startswith("[MASK] film was ")


def test_targets_rank_only_those_tokens_with_whole_vocabulary_scores(service_url, torch_probs):
    probs, tok = torch_probs
    targets = ["paris", "japan", "china"]
    status, body = post(
        f"{service_url}/v1/fill-mask", {"model": MODEL, "inputs": TEXT, "targets": targets}
    )
    assert status == 200, body
    mask = body["results"][0]["masks"][0]
    assert {c["token_str"] for c in mask} == set(targets)
    p = probs(TEXT)[0]
    for c in mask:
        assert c["score"] == pytest.approx(float(p[tok.token_to_id(c["token_str"])]), abs=1e-4)
    assert [c["score"] for c in mask] == sorted((c["score"] for c in mask), reverse=True)


@pytest.mark.parametrize(
    "body, status, param, words",
    [
        ({"model": "base", "inputs": TEXT}, 400, "model", "no masked-LM head"),
        ({"model": MODEL, "inputs": "no mask here"}, 400, "inputs[0]", "no [MASK]"),
        ({"model": MODEL, "inputs": ["a [MASK]", "b"]}, 400, "inputs[1]", "no [MASK]"),
        ({"model": MODEL, "inputs": "[MASK] " * 9}, 400, "inputs[0]", "at most 8"),
        ({"model": MODEL, "inputs": "the " * 80 + "[MASK]"}, 400, "inputs[0]", "max length"),
        ({"model": MODEL, "inputs": TEXT, "targets": ["eiffel tower"]}, 400, "targets[0]", "one token"),
        ({"model": MODEL, "inputs": TEXT, "top_k": 51}, 422, "top_k", ""),
        ({"model": MODEL, "inputs": TEXT, "targets": ["a", "a"]}, 422, "targets", ""),
        ({"model": "nope", "inputs": TEXT}, 404, "model", ""),
    ],
)  # fmt: skip
def test_bad_requests_get_a_clear_error(service_url, mlm, body, status, param, words):
    got, answer = post(f"{service_url}/v1/fill-mask", body)
    assert got == status and answer["error"]["param"] == param, answer
    assert words in answer["error"]["message"]


def test_a_refused_request_leaves_its_batch_answered(store, mlm):
    model = load_model(artifacts.model_dir(store, MODEL))
    good, bad = FillMaskItem([TEXT], 2), FillMaskItem(["no mask"], 2)
    out = model.fill_mask_many([good, bad, FillMaskItem([TEXT], 1, ["paris", "paris"])])
    assert len(out[0][0][0]) == 2 and isinstance(out[1], Refused) and out[1].status == 400
    assert [c["token_str"] for c in out[2][0][0]] == ["paris"]


@pytest.fixture
def hf(service_url, mlm, hf_client_online):
    return InferenceClient(base_url=f"{service_url}/hf/models/{MODEL}")


def test_the_hugging_face_client_fills_masks(hf, service_url):
    got = hf.fill_mask(TEXT, top_k=3)
    _, body = post(f"{service_url}/v1/fill-mask", {"model": MODEL, "inputs": TEXT, "top_k": 3})
    want = body["results"][0]["masks"][0]
    assert [(e.token, e.token_str, e.sequence) for e in got] == [
        (c["token"], c["token_str"], c["sequence"]) for c in want
    ]
    assert [e.score for e in got] == pytest.approx([c["score"] for c in want], abs=1e-6)
    only = hf.fill_mask(TEXT, targets=["paris", "china"])
    assert {e.token_str for e in only} == {"paris", "china"}


def test_the_hugging_face_client_is_refused_where_there_is_no_head(service_url, hf_client_online):
    base = InferenceClient(base_url=f"{service_url}/hf/models/base")
    with pytest.raises(HfHubHTTPError) as err:
        base.fill_mask("Paris is the [MASK] of France.")
    assert err.value.response.status_code == 400
    assert "no masked-LM head" in err.value.response.json()["error"]["message"]
