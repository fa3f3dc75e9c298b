"""Who owns what: every model id resolved to its one canonical form, and the one check that a
caller may use it.

Ownership is data: the `models` row of a model says its tenant, or that it is `shared`. A job
writes its model's row when it registers it (owned by the job's tenant; shared when an admin
made it). A model the operator put in the store (the bundled base, one trained from the
command line) has no row until tenancy first meets it, and is then recorded as shared; an id
a job will make is never recorded so, it is the job's tenant's from the start.

Another tenant's model does not exist for a caller: the same 404 as a missing one, and an
error names only models the caller may use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from service.auth import Principal
from service.db import Database, Job, Model, now
from service.errors import Forbidden, ModelNotFound
from service.registry import Registry, ResolvedModel
from training.artifacts import Manifest

CACHE_S = 2.0  # what is not yet recorded is asked again after this


@dataclass(frozen=True)
class Owner:
    tenant: str | None
    shared: bool
    recorded: bool  # a row says so: it never changes (until the model is deleted)

    def lets(self, caller: Principal) -> bool:
        return caller.scope is None or self.shared or self.tenant == caller.scope


def owners(db: Database, models: dict[str, Manifest]) -> dict[str, Owner]:
    """The owner of each model (by stored id): its row; else, for an id a job makes, that
    job's tenant; else the operator's model, recorded as shared now."""
    with db.session() as s:
        rows = s.execute(
            select(Model.id, Model.tenant, Model.shared).where(Model.id.in_(list(models)))
        ).all()
        found = {mid: Owner(tenant, shared, True) for mid, tenant, shared in rows}
        missing = [m for m in models if m not in found]
        claims = dict(
            s.execute(
                select(Job.output_model, Job.tenant).where(Job.output_model.in_(missing))
            ).all()
        )
    for mid in missing:
        if mid in claims:
            found[mid] = Owner(claims[mid], False, False)
        else:
            found[mid] = _record_shared(db, models[mid])
    return found


def _record_shared(db: Database, manifest: Manifest) -> Owner:
    try:
        with db.session() as s:
            s.add(
                Model(
                    id=manifest.id,
                    tenant=None,
                    shared=True,
                    task=manifest.task,
                    base_model=manifest.base or "",
                    spec={},
                    metrics=manifest.metrics,
                    precision=manifest.precision,
                    created_at=now(),
                )
            )
        return Owner(None, True, True)
    except IntegrityError:  # recorded meanwhile, by a parallel request or a registration
        with db.session() as s:
            row = s.scalar(select(Model).where(Model.id == manifest.id))
        assert row is not None
        return Owner(row.tenant, row.shared, True)


class Tenancy:
    def __init__(self, registry: Registry, db: Database):
        self.registry, self.db = registry, db
        self._owners: dict[str, tuple[float, Owner]] = {}  # stored id -> (read at, owner)

    async def _owners_of(self, models: list[Manifest]) -> dict[str, Owner]:
        out, ask = {}, {}
        for m in models:
            cached = self._owners.get(m.id)
            if cached and (cached[1].recorded or time.monotonic() - cached[0] < CACHE_S):
                out[m.id] = cached[1]
            else:
                ask[m.id] = m
        if ask:
            for mid, owner in (await self.db.call(owners, ask)).items():
                self._owners[mid] = (time.monotonic(), owner)
                out[mid] = owner
        return out

    async def visible(self, caller: Principal, models: list[ResolvedModel]) -> list[str]:
        """The ids (as requested) of the models the caller may use."""
        if caller.scope is None:
            return [m.id for m in models]
        found = await self._owners_of([m.manifest for m in models])
        return [m.id for m in models if found[m.manifest.id].lets(caller)]

    async def listing(self, caller: Principal) -> list[ResolvedModel]:
        """Every model of the store the caller may use, `base` first."""
        models = self.registry.list()
        shown = set(await self.visible(caller, models))
        return [m for m in models if m.id in shown]

    async def resolve(self, caller: Principal, model_id: str) -> ResolvedModel:
        """The model, if it exists under this very id and the caller may use it; else a 404
        naming only the models the caller may use."""
        try:
            model = self.registry.resolve(model_id)
        except ModelNotFound:
            model = None
        if model is None or not await self.visible(caller, [model]):
            known = [m.id for m in await self.listing(caller)]
            raise ModelNotFound(
                f"model {model_id!r} does not exist; available models: "
                f"{', '.join(known) or 'none'} (GET /v1/models lists them)",
                param="model",
            )
        return model

    async def check_may_delete(self, caller: Principal, model: ResolvedModel) -> None:
        """A tenant may delete only its own models; the admin any."""
        owner = (await self._owners_of([model.manifest]))[model.manifest.id]
        if caller.scope is not None and (owner.shared or owner.tenant != caller.scope):
            raise Forbidden(f"model {model.id!r} is shared: only the admin key deletes it")

    async def forget(self, caller: Principal, model: ResolvedModel) -> None:
        """Drop a model's row, once the caller is known to own it. Its folder is the
        registry's to remove."""
        await self.check_may_delete(caller, model)
        await self.db.call(_delete_row, model.manifest.id)
        self._owners.pop(model.manifest.id, None)


def _delete_row(db: Database, stored_id: str) -> None:
    with db.session() as s:
        s.execute(delete(Model).where(Model.id == stored_id))
