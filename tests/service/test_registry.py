import pytest

from service.errors import InvalidRequest, ModelNotFound, WrongTask
from service.registry import BASE_MODEL_ID, Registry, check_endpoint, classify_route
from training import artifacts
from training.artifacts import Manifest


def _add(home, model_id, task, labels=()):
    with artifacts.staged_model_dir(home, model_id) as stage:
        artifacts.write_manifest(stage, Manifest(id=model_id, task=task, labels=list(labels)))


@pytest.fixture
def registry(tmp_path):
    _add(tmp_path, "minilm", "feature-extraction")
    _add(tmp_path, "ft:minilm:tickets:ab12", "text-classification", ["billing", "bug"])
    _add(tmp_path, "squad", "extractive-qa")
    return Registry(tmp_path, base_model="minilm")


def test_base_is_a_sentinel_for_the_configured_encoder(registry):
    model = registry.resolve(BASE_MODEL_ID)
    assert model.id == "base" and model.manifest.id == "minilm" and model.zero_shot
    listed = registry.list()
    assert listed[0].id == "base" and listed[0].manifest.id == "minilm"
    assert "minilm" not in [m.id for m in listed]


def test_only_the_stored_id_names_a_model(registry):
    """ft:minilm:tickets:ab12 is stored in the folder ft--minilm--tickets--ab12: another
    spelling that maps to that folder is not the model (it would dodge ownership checks)."""
    assert registry.resolve("ft:minilm:tickets:ab12").manifest.labels == ["billing", "bug"]
    for alias in (
        "ft--minilm--tickets--ab12",
        "ft:minilm--tickets:ab12",
        "ft--minilm:tickets--ab12",
    ):
        with pytest.raises(ModelNotFound):
            registry.resolve(alias)


def test_an_unknown_model_is_a_404_that_names_no_other_model(registry):
    with pytest.raises(ModelNotFound, match="'nope' does not exist") as exc:
        registry.resolve("nope")
    assert exc.value.status == 404 and exc.value.param == "model"
    assert "squad" not in exc.value.message  # which models a caller may see is tenancy's


def test_malformed_id_is_a_404_not_a_crash(registry):
    with pytest.raises(ModelNotFound):
        registry.resolve("../../etc/passwd")


def test_task_mismatch_names_the_models_task(registry):
    with pytest.raises(WrongTask, match="extractive-qa model"):
        check_endpoint(registry.resolve("squad"), "text-classification")
    with pytest.raises(WrongTask, match="text-classification model"):
        check_endpoint(registry.resolve("ft:minilm:tickets:ab12"), "extractive-qa")


def test_labels_are_required_for_base_and_refused_for_fine_tuned(registry):
    with pytest.raises(InvalidRequest, match="zero-shot and needs `labels`"):
        check_endpoint(registry.resolve("base"), "text-classification")
    fine_tuned = registry.resolve("ft:minilm:tickets:ab12")
    with pytest.raises(InvalidRequest, match=r"own labels \['billing', 'bug'\]"):
        check_endpoint(fine_tuned, "text-classification", ["a", "b"])
    check_endpoint(registry.resolve("base"), "extractive-qa")
    check_endpoint(registry.resolve("base"), "text-classification", ["a", "b"])


def test_a_new_model_is_seen_without_a_restart(registry, tmp_path):
    with pytest.raises(ModelNotFound):
        registry.resolve("later")
    _add(tmp_path, "later", "extractive-qa")
    assert registry.resolve("later").manifest.task == "extractive-qa"


def test_an_encoder_with_head_variants_is_not_deleted_until_they_are(registry, tmp_path):
    from service.errors import Conflict

    _add(tmp_path, "mlm-enc", "feature-extraction")
    with artifacts.staged_model_dir(tmp_path, "h1") as d:
        artifacts.write_manifest(
            d,
            Manifest(id="h1", task="text-classification", method="head", base="mlm-enc",
                     labels=["a", "b"]),
        )  # fmt: skip
    encoder = registry.resolve("mlm-enc")
    with pytest.raises(Conflict, match="base of 1 head variant"):
        registry.delete(encoder)
    registry.delete(registry.resolve("h1"))
    registry.delete(encoder)
    with pytest.raises(ModelNotFound):
        registry.resolve("mlm-enc")


def _head(home, model_id, base, labels=("a", "b")):
    with artifacts.staged_model_dir(home, model_id) as stage:
        manifest = Manifest(
            id=model_id, task="text-classification", method="head", base=base, labels=list(labels)
        )
        artifacts.write_manifest(stage, manifest)


def test_a_list_takes_head_variants_of_one_base_and_that_base(registry, tmp_path):
    _add(tmp_path, "other-encoder", "feature-extraction")
    _head(tmp_path, "h1", "minilm")
    _head(tmp_path, "h2", "minilm")
    _head(tmp_path, "h-other", "other-encoder")
    resolve = registry.resolve

    route = classify_route(
        registry, [resolve("h1"), resolve("base"), resolve("h2")], ["x", "y"], many=True
    )
    assert route.target == BASE_MODEL_ID and route.outputs == ["h1", None, "h2"]
    alone = classify_route(registry, [resolve("h-other")], None, many=False)
    assert alone.target == "other-encoder" and alone.outputs == ["h-other"]

    with pytest.raises(InvalidRequest, match="different bases") as exc:
        classify_route(registry, [resolve("h1"), resolve("h-other")], None, many=True)
    assert exc.value.status == 400 and exc.value.param == "model"
    assert "h1: base" in exc.value.message and "h-other: other-encoder" in exc.value.message
    with pytest.raises(InvalidRequest, match="'ft:minilm:tickets:ab12' is a full fine-tune"):
        classify_route(
            registry, [resolve("h1"), resolve("ft:minilm:tickets:ab12")], None, many=True
        )
