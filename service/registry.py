"""Which models exist and what they serve; `base` is a named sentinel for the base encoder.

The registry reads the model store (`training.artifacts`). A manifest is cached by its file's
modification time, so a new or replaced model is seen on the next request without a redeploy.
Who may use a model is tenancy.py's business, not this module's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from service.errors import Conflict, InvalidRequest, ModelNotFound, WrongTask
from training import artifacts
from training.artifacts import Manifest

# The id every client may use for the deployment's base encoder, whatever its stored id.
BASE_MODEL_ID = "base"

# Which endpoints a model's head serves. An encoder serves both tasks zero-shot, and its
# sentence embeddings.
ENDPOINTS: dict[str, list[str]] = {
    "feature-extraction": ["text-classification", "extractive-qa", "embeddings", "fill-mask"],
    "text-classification": ["text-classification"],
    "extractive-qa": ["extractive-qa"],
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model as a request sees it: the id it asked for, and where the artifact lives."""

    id: str
    folder: Path
    manifest: Manifest

    @property
    def zero_shot(self) -> bool:
        return self.manifest.task == "feature-extraction"


class Registry:
    def __init__(self, home: str | Path, base_model: str = BASE_MODEL_ID):
        self.home = Path(home)
        self.base_model = base_model
        self._cache: dict[Path, tuple[float, Manifest]] = {}

    def stored_id(self, model_id: str) -> str:
        """The id a model is stored under: `base` names the deployment's base encoder."""
        return self.base_model if model_id == BASE_MODEL_ID else model_id

    def _manifest(self, folder: Path) -> Manifest | None:
        path = folder / artifacts.MANIFEST
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None
        cached = self._cache.get(folder)
        if cached and cached[0] == mtime:
            return cached[1]
        manifest = artifacts.read_manifest(folder)
        self._cache[folder] = (mtime, manifest)
        return manifest

    def resolve(self, model_id: str) -> ResolvedModel:
        """The model named `model_id`, or ModelNotFound (which names no other model). Only the
        id a model is stored under names it: another spelling that maps to the same folder
        (`ft--x` for `ft:x`) is not that model."""
        stored = self.stored_id(model_id)
        try:
            folder = artifacts.model_dir(self.home, stored)
        except ValueError as exc:
            raise ModelNotFound(str(exc), param="model") from None
        manifest = self._manifest(folder)
        if manifest is None or manifest.id != stored:
            raise ModelNotFound(f"model {model_id!r} does not exist", param="model")
        return ResolvedModel(id=model_id, folder=folder, manifest=manifest)

    def list(self) -> list[ResolvedModel]:
        """Every model of the store, `base` first (under that id)."""
        found = []
        for manifest in artifacts.list_manifests(self.home):
            shown = BASE_MODEL_ID if manifest.id == self.base_model else manifest.id
            found.append(
                ResolvedModel(shown, artifacts.model_dir(self.home, manifest.id), manifest)
            )
        return sorted(found, key=lambda m: (m.id != BASE_MODEL_ID, m.id))

    def delete(self, model: ResolvedModel) -> None:
        """Remove a model's folder: renamed aside first, so no request ever loads half of it."""
        self.check_deletable(model)
        artifacts.remove_model_dir(self.home, model.manifest.id)

    def check_deletable(self, model: ResolvedModel) -> None:
        """Conflict for the base, and for an encoder that head variants serve through."""
        if model.manifest.id == self.base_model:
            raise Conflict("the base model is the deployment's own: it cannot be deleted")
        heads = [
            m
            for m in artifacts.list_manifests(self.home)
            if m.head_only and m.base == model.manifest.id
        ]
        if heads:  # counted, not named: they may be other tenants'
            raise Conflict(
                f"model {model.id!r} is the base of {len(heads)} head variant(s), which serve "
                "through it; delete them first",
                param="model_id",
            )


def check_endpoint(model: ResolvedModel, endpoint: str, labels: list[str] | None = None) -> None:
    """Refuse a model for an endpoint its task does not serve, and a misuse of `labels`."""
    task = model.manifest.task
    if endpoint not in ENDPOINTS.get(task, []):
        raise WrongTask(
            f"model {model.id!r} is a {task} model and cannot serve {endpoint}; use a model "
            f"whose task is {endpoint}",
            param="model",
        )
    if endpoint == "fill-mask" and not model.manifest.fill_mask:
        raise WrongTask(
            f"model {model.id!r} has no masked-LM head: it was exported as a sentence encoder "
            "only (the bundled all-MiniLM-L6-v2 ships without one). A pretraining job's "
            "encoder keeps its head and fills masks",
            param="model",
        )
    if endpoint != "text-classification":
        return
    if model.zero_shot and labels is None:
        raise InvalidRequest(
            f"model {model.id!r} is a base encoder: classification with it is zero-shot "
            "and needs `labels`, the candidate labels (2-32)",
            param="labels",
        )
    if not model.zero_shot and labels is not None:
        raise InvalidRequest(
            f"model {model.id!r} was fine-tuned with its own labels "
            f"{model.manifest.labels}; remove `labels` from the request",
            param="labels",
        )


@dataclass(frozen=True)
class ClassifyRoute:
    """Where a classify request goes, and what it asks for there."""

    target: str  # the model replicas' multiplexed id: the model, or a head variant's base
    # head variants' stored ids (None: the base zero-shot, with `labels`), answered in this
    # order from one encoder pass; None: the target itself answers
    outputs: list[str | None] | None


def classify_route(
    registry: Registry, models: list[ResolvedModel], labels: list[str] | None, *, many: bool
) -> ClassifyRoute:
    """A head-only variant goes to its base's replicas (no replica loads an encoder for a
    head); a list of models must be head-only variants of one base, and that base."""
    for model in models:
        asked = labels if not many or model.zero_shot else None  # a list's labels: the base's
        check_endpoint(model, "text-classification", asked)
    if not many:
        (model,) = models
        if not model.manifest.head_only:
            return ClassifyRoute(model.id, None)
        return ClassifyRoute(_base_of(registry, model), [model.manifest.id])
    full = [m.id for m in models if not (m.manifest.head_only or m.zero_shot)]
    if full:
        raise InvalidRequest(
            f"a list of models takes head-only variants of one base and that base; {full[0]!r} "
            "is a full fine-tune, with an encoder of its own: ask it in a request of its own",
            param="model",
        )
    bases = {m.id: _base_of(registry, m) for m in models}
    if len(set(bases.values())) > 1:
        raise InvalidRequest(
            "the models ride on different bases "
            f"({', '.join(f'{m}: {b}' for m, b in bases.items())}); one request takes the "
            "variants of one base",
            param="model",
        )
    zero_shot = any(m.zero_shot for m in models)
    if zero_shot != (labels is not None):
        raise InvalidRequest(
            "`labels` are for the base in the list, answering zero-shot: give them with it, "
            "and only with it",
            param="labels",
        )
    outputs = [None if m.zero_shot else m.manifest.id for m in models]
    return ClassifyRoute(next(iter(bases.values())), outputs)


def _base_of(registry: Registry, model: ResolvedModel) -> str:
    """The id the model replicas know the encoder by: a head variant's base, or the encoder."""
    stored = model.manifest.base if model.manifest.head_only else model.manifest.id
    return BASE_MODEL_ID if stored == registry.base_model else str(stored)
