"""One module per training task, each implementing `base.TrainingTask`; `make_task` picks
the one a spec names."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from training.config import FinetuneSpec, PretrainSpec
from training.tasks.base import TrainingTask, load_tokenizer
from training.tasks.classification import ClassificationTask
from training.tasks.masked_lm import MaskedLMTask
from training.tasks.qa import QATask

__all__ = ["TrainingTask", "load_tokenizer", "make_task", "task_class"]

_CLASSES: dict[str, type[TrainingTask]] = {
    "text-classification": ClassificationTask,
    "extractive-qa": QATask,
    "masked-lm": MaskedLMTask,
}


def task_class(name: str) -> type[TrainingTask]:
    return _CLASSES[name]


def make_task(
    spec: PretrainSpec | FinetuneSpec, tokenizer: PreTrainedTokenizerFast, labels: list[str]
) -> TrainingTask:
    if isinstance(spec, FinetuneSpec) and spec.task == "text-classification":
        return ClassificationTask(spec, tokenizer, labels)
    if isinstance(spec, FinetuneSpec):
        return QATask(spec, tokenizer)
    return MaskedLMTask(spec, tokenizer)
