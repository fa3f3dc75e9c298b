"""Who owns what: the one check that a caller may use a model.

A model a job made (an `ft:` id) belongs to the job's tenant; every other model (the bundled
base, models trained from the command line) belongs to no tenant, and everyone may use it.
Another tenant's model does not exist for a caller: the same 404 as a missing one, and an
error names only models the caller may use. What the database says of an id is kept for
`CACHE_S` (for ever, once a job is known to have made it: a model's owner never changes).
"""

from __future__ import annotations

import time

from sqlalchemy import select

from service.auth import Principal
from service.db import Database, Job
from service.errors import ModelNotFound
from service.registry import Registry, ResolvedModel

CACHE_S = 2.0
JOB_MODEL_PREFIX = "ft:"


def model_owners(db: Database, model_ids: list[str]) -> dict[str, str | None]:
    """For each id a job makes (or made), the job's tenant. Ids no job names are absent."""
    with db.session() as s:
        rows = s.execute(
            select(Job.output_model, Job.tenant).where(Job.output_model.in_(model_ids))
        ).all()
    return {model: tenant for model, tenant in rows}


class Tenancy:
    def __init__(self, registry: Registry, db: Database):
        self.registry, self.db = registry, db
        # model id -> (read at, owning tenant or None, made by a job)
        self._owners: dict[str, tuple[float, str | None, bool]] = {}

    async def owners(self, model_ids: list[str]) -> dict[str, str | None]:
        """The tenant each model belongs to (None: everyone's)."""
        out: dict[str, str | None] = {}
        ask = []
        for mid in model_ids:
            cached = self._owners.get(mid)
            if not mid.startswith(JOB_MODEL_PREFIX):
                out[mid] = None
            elif cached and (cached[2] or time.monotonic() - cached[0] < CACHE_S):
                out[mid] = cached[1]
            else:
                ask.append(mid)
        if ask:
            found = await self.db.call(model_owners, ask)
            for mid in ask:
                self._owners[mid] = (time.monotonic(), found.get(mid), mid in found)
                out[mid] = found.get(mid)
        return out

    async def visible(self, caller: Principal, model_ids: list[str]) -> list[str]:
        """The ids among `model_ids` that the caller may use."""
        if caller.scope is None:
            return model_ids
        owners = await self.owners(model_ids)
        return [m for m in model_ids if owners[m] in (None, caller.scope)]

    async def resolve(self, caller: Principal, model_id: str) -> ResolvedModel:
        """The model, if it exists and the caller may use it; else a 404 naming the models
        the caller may use."""
        try:
            model = self.registry.resolve(model_id)
        except ModelNotFound:
            model = None
        if model is None or not await self.visible(caller, [model_id]):
            known = await self.visible(caller, [m.id for m in self.registry.list()])
            raise ModelNotFound(
                f"model {model_id!r} does not exist; available models: "
                f"{', '.join(known) or 'none'} (GET /v1/models lists them)",
                param="model",
            )
        return model
