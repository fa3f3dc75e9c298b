"""/v1/admin/keys: API keys, shown by id and hint; the key itself only when it is made."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from service.db import ApiKey
from service.schemas.fields import Request


class ApiKeyRequest(Request):
    tenant: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] = (
        Field(..., description="the tenant the key acts for", examples=["acme"])
    )


class ApiKeyView(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    tenant: str
    hint: str = Field(description="the key's first characters, to tell keys apart")
    created_at: int
    revoked_at: int | None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyView:
        return cls(
            id=row.id,
            tenant=row.tenant,
            hint=row.hint + "...",
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


class ApiKeyCreated(ApiKeyView):
    key: str = Field(description="the key: shown in this response only")


class ApiKeyRevoked(ApiKeyView):
    deleted: Literal[True] = True
