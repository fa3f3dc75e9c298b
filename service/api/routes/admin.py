"""/v1/admin/keys: the admin key makes, lists and revokes the tenants' API keys."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query

from service import auth
from service.api.deps import Caller, Ctx, require_admin
from service.schemas.admin import ApiKeyCreated, ApiKeyRequest, ApiKeyRevoked, ApiKeyView
from service.schemas.fields import after as after_id
from service.schemas.page import Page

router = APIRouter(tags=["admin"])
log = logging.getLogger("ray.serve")


@router.post("/v1/admin/keys", response_model=ApiKeyCreated)
async def create_key(ctx: Ctx, who: Caller, body: ApiKeyRequest) -> ApiKeyCreated:
    """A new API key for a tenant (admin key only). The key is in this response only."""
    require_admin(who)
    row, key = await ctx.db.call(auth.create_key, body.tenant)
    ctx.auth.forget()
    log.info("API key %s created for tenant %s", row.id, row.tenant)
    return ApiKeyCreated(**ApiKeyView.of(row).model_dump(), key=key)


@router.get("/v1/admin/keys", response_model=Page[ApiKeyView])
async def list_keys(
    ctx: Ctx,
    who: Caller,
    after: Annotated[
        str | None, after_id(r"^key_[0-9a-f]{24}$", "key_0123456789abcdef01234567")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Page[ApiKeyView]:
    require_admin(who)
    rows, more = await ctx.db.call(auth.list_keys, after=after, limit=limit)
    return Page[ApiKeyView].of([ApiKeyView.of(r) for r in rows], more)


@router.delete("/v1/admin/keys/{key_id}", response_model=ApiKeyRevoked)
async def revoke_key(ctx: Ctx, who: Caller, key_id: str) -> ApiKeyRevoked:
    """Revoke a key: it stops working at once."""
    require_admin(who)
    row = await ctx.db.call(auth.revoke_key, key_id)
    ctx.auth.forget()
    log.info("API key %s of tenant %s revoked", row.id, row.tenant)
    return ApiKeyRevoked(**ApiKeyView.of(row).model_dump())
