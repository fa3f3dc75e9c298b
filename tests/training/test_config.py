import pytest
from pydantic import ValidationError

from training.config import FinetuneSpec, PretrainSpec, load_spec


def _errors(text):
    with pytest.raises(ValidationError) as exc:
        load_spec(text)
    return [(".".join(map(str, e["loc"][1:])), e["msg"]) for e in exc.value.errors()]


def test_defaults_and_task_dispatch():
    spec = load_spec('{"run_id": "r", "task": "extractive-qa", "train_file": "x.json"}')
    # QA has its own default learning rate (measured: see the README's QA section)
    assert isinstance(spec, FinetuneSpec) and spec.hyperparameters.learning_rate == 1.5e-4
    assert spec.hyperparameters.max_seq_length == 384
    classify = load_spec('{"run_id": "r", "task": "text-classification", "train_file": "x"}')
    assert classify.hyperparameters.learning_rate == 1e-4
    asked = load_spec(
        '{"run_id": "r", "task": "extractive-qa", "train_file": "x.json",'
        ' "hyperparameters": {"learning_rate": 3e-5}}'
    )
    assert asked.hyperparameters.learning_rate == 3e-5
    assert spec.model_id == "r"
    assert isinstance(
        load_spec('{"run_id": "r", "task": "masked-lm", "train_file": "c"}'), PretrainSpec
    )


@pytest.mark.parametrize(
    "body,field,says",
    [
        ('"task": "qa"', "", "does not match any of the expected tags"),
        (
            '"task": "text-classification", "hyperparameters": {"lr": 1}',
            "hyperparameters.lr",
            "Extra inputs",
        ),
        (
            '"task": "text-classification", "hyperparameters": {"learning_rate": 0}',
            "hyperparameters.learning_rate",
            "greater than 0",
        ),
        (
            '"task": "extractive-qa", "hyperparameters": {"doc_stride": 100, "max_seq_length": 128}',
            "",
            "doc_stride (100)",
        ),
        (
            '"task": "extractive-qa", "base_model": "scratch"',
            "",
            "scratch' works for task masked-lm only",
        ),
        ('"task": "masked-lm", "scaling": {"mixed_precision": "fp16"}', "scaling", "needs use_gpu"),
        (
            '"task": "masked-lm", "scaling": {"num_workers": 0}',
            "scaling.num_workers",
            "greater than or equal to 1",
        ),
    ],
)
def test_invalid_specs_name_the_field(body, field, says):
    errors = _errors('{"run_id": "r", "train_file": "f", ' + body + "}")
    assert any(loc == field and says in msg for loc, msg in errors), errors


def test_doc_stride_only_constrains_qa():
    load_spec(
        '{"run_id": "r", "task": "text-classification", "train_file": "f", "hyperparameters": {"max_seq_length": 64}}'
    )


def test_run_id_is_a_safe_name():
    assert _errors('{"run_id": "../x", "task": "masked-lm", "train_file": "f"}')[0][0] == "run_id"
