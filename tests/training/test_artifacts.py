import json

import pytest

from training import artifacts
from training.artifacts import Manifest


def _manifest(model_id="m1", **kw):
    return Manifest(id=model_id, task="feature-extraction", **kw)


def test_manifest_round_trip(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    written = _manifest(labels=["a", "b"], files={"onnx_fp32": "onnx/model.onnx"})
    artifacts.write_manifest(folder, written)
    read = artifacts.read_manifest(folder)
    assert read == written
    assert read.onnx_file() == "onnx/model.onnx"
    # no temporary file left behind by the atomic write
    assert [p.name for p in folder.iterdir()] == ["manifest.json"]


def test_onnx_file_for_missing_precision_names_the_model():
    with pytest.raises(KeyError, match="m1.*int8"):
        _manifest(precision="int8").onnx_file()


def test_staged_dir_becomes_the_model_only_when_complete(tmp_path):
    with artifacts.staged_model_dir(tmp_path, "m1") as stage:
        assert not artifacts.model_dir(tmp_path, "m1").exists()
        artifacts.write_manifest(stage, _manifest())
    assert (artifacts.model_dir(tmp_path, "m1") / "manifest.json").is_file()
    assert [m.id for m in artifacts.list_manifests(tmp_path)] == ["m1"]


def test_failed_export_leaves_nothing_and_keeps_the_old_model(tmp_path):
    with artifacts.staged_model_dir(tmp_path, "m1") as stage:
        artifacts.write_manifest(stage, _manifest(labels=["old"]))
    with (
        pytest.raises(RuntimeError, match="boom"),
        artifacts.staged_model_dir(tmp_path, "m1", replace=True) as stage,
    ):
        artifacts.write_manifest(stage, _manifest(labels=["new"]))
        raise RuntimeError("boom")
    assert artifacts.read_manifest(artifacts.model_dir(tmp_path, "m1")).labels == ["old"]
    assert [p.name for p in artifacts.models_root(tmp_path).iterdir()] == ["m1"]


def test_stage_without_manifest_is_refused(tmp_path):
    with (
        pytest.raises(RuntimeError, match="no manifest"),
        artifacts.staged_model_dir(tmp_path, "m1"),
    ):
        pass
    assert not artifacts.model_dir(tmp_path, "m1").exists()


def test_existing_model_is_not_overwritten_unless_asked(tmp_path):
    with artifacts.staged_model_dir(tmp_path, "m1") as stage:
        artifacts.write_manifest(stage, _manifest())
    with pytest.raises(FileExistsError), artifacts.staged_model_dir(tmp_path, "m1"):
        pass


def test_list_skips_unreadable_and_staging_folders(tmp_path):
    root = artifacts.models_root(tmp_path)
    (root / ".staging-x").mkdir(parents=True)
    (root / ".staging-x" / "manifest.json").write_text(
        json.dumps({"id": "x", "task": "feature-extraction"})
    )
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{not json")
    assert artifacts.list_manifests(tmp_path) == []


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "-x", "x" * 200, "a b"])
def test_invalid_model_ids_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="invalid model id"):
        artifacts.model_dir(tmp_path, bad)


def test_fine_tuned_ids_map_to_portable_folder_names(tmp_path):
    assert artifacts.model_dir(tmp_path, "ft:base:tickets:ab12").name == "ft--base--tickets--ab12"
