"""Head-only variants served through their base's encoder pass (inference/heads.py): the
tiny base, real ONNX Runtime, heads written as a head run writes them."""

import shutil

import numpy as np
import pytest
from testdata import write_head_variant

from service.errors import Conflict
from service.inference.heads import HeadCache
from service.inference.models import EncoderModel, load_model
from service.inference.requests import ClassifyItem, Refused
from service.inference.session import Session
from service.registry import Registry
from training import artifacts

TEXTS = ["the film was wonderful", "a dull tedious mess", "where is the eiffel tower"]


@pytest.fixture
def home(store, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(artifacts.model_dir(store, "base"), artifacts.model_dir(home, "base"))
    return home


def _encoder(home) -> EncoderModel:
    folder = artifacts.model_dir(home, "base")
    return EncoderModel(Session(folder, artifacts.read_manifest(folder)))


def _cache(home, **limits) -> HeadCache:
    return HeadCache(Registry(home).resolve, **limits)


def test_heads_and_zero_shot_are_answered_from_one_encoder_pass(home):
    h1 = write_head_variant(home, "h1", ["a", "b"], 1)
    write_head_variant(home, "h2", ["x", "y", "z"], 2)
    encoder, cache = _encoder(home), _cache(home)
    item = ClassifyItem(TEXTS, ["happy", "sad"], None, ["h1", None, "h2"])
    (answers,) = encoder.classify_many([item], heads=cache)
    assert [len(a) for a in answers] == [3, 3, 3]
    assert answers[1] == encoder.classify(TEXTS, ["happy", "sad"])  # zero-shot, as alone
    logits = h1.logits(encoder.embed(TEXTS)).astype(np.float64)
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    for row, got in zip(want, answers[0], strict=True):
        np.testing.assert_allclose([got["scores"]["a"], got["scores"]["b"]], row, atol=1e-6)
    assert set(answers[2][0]["scores"]) == {"x", "y", "z"}
    assert (cache.stats.loads, cache.stats.hits, cache.stats.applied) == (2, 0, 2)
    encoder.classify_many([ClassifyItem(TEXTS[:1], None, None, ["h1"])], heads=cache)
    assert (cache.stats.loads, cache.stats.hits) == (2, 1)


def test_the_cache_is_bounded_by_count_and_bytes_and_reloads_a_replaced_head(home):
    for i in range(5):
        write_head_variant(home, f"h{i}", ["a", "b"], i)
    encoder = _encoder(home)
    cache = _cache(home, max_heads=3)
    for i in range(5):
        encoder.classify_many([ClassifyItem(TEXTS, None, None, [f"h{i}"])], heads=cache)
    assert cache.stats.heads == 3 and cache.stats.loads == 5
    one = cache.stats.bytes // 3
    small = _cache(home, max_bytes=2 * one)
    for i in range(5):
        encoder.classify_many([ClassifyItem(TEXTS, None, None, [f"h{i}"])], heads=small)
    assert small.stats.heads == 2 and small.stats.bytes == 2 * one
    # the same id, trained again: the new head answers
    before = encoder.classify_many([ClassifyItem(TEXTS, None, None, ["h4"])], heads=small)
    write_head_variant(home, "h4", ["c", "d"], 99)
    after = encoder.classify_many([ClassifyItem(TEXTS, None, None, ["h4"])], heads=small)
    assert set(before[0][0][0]["scores"]) == {"a", "b"} and set(after[0][0][0]["scores"]) == {
        "c",
        "d",
    }


def test_a_head_whose_base_changed_is_refused_naming_it_and_alone(home):
    """Refused as that request's answer, not raised: the other requests of its batch are
    answered from the same pass. A cached head is checked again against another base."""
    write_head_variant(home, "old", ["a", "b"], 1, base_sha256="0" * 64)
    write_head_variant(home, "ok", ["a", "b"], 2)
    encoder, cache = _encoder(home), _cache(home)
    stale, fine = encoder.classify_many(
        [ClassifyItem(TEXTS, None, None, ["old"]), ClassifyItem(TEXTS, None, None, ["ok"])],
        heads=cache,
    )
    assert isinstance(stale, Refused) and stale.status == 409
    assert "'old' is a head trained on another version of its base" in stale.message
    assert isinstance(fine, list) and len(fine[0]) == len(TEXTS)
    with pytest.raises(Conflict, match="another version of its base"):
        cache.get("ok", encoder.manifest, "1" * 64)  # cached, but checked against this base


def test_a_head_variant_is_not_loaded_as_a_model_of_its_own(home):
    write_head_variant(home, "h", ["a", "b"], 1)
    with pytest.raises(ValueError, match="served through its base"):
        load_model(artifacts.model_dir(home, "h"))
