"""What a route may ask for: the service's context, the caller (authenticated by the
middleware before the body was read), the admin check, and the model a request names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Header, Request

from service.auth import Authenticator, Principal
from service.db import Database
from service.deployments.models import ModelClient
from service.errors import Forbidden, InvalidRequest, LimitExceeded
from service.registry import Registry
from service.settings import Settings
from service.tenancy import Tenancy


@dataclass
class Context:
    """The ingress's state, built once per replica (api/ingress.py) and shared by routes."""

    settings: Settings
    home: Path
    db: Database
    auth: Authenticator
    registry: Registry
    tenancy: Tenancy
    models: ModelClient | None  # None where no model deployment is bound (schema only)


def _context(request: Request) -> Context:
    return request.app.state.context


def _caller(request: Request) -> Principal:
    return request.state.caller  # set by middleware.Authenticate


Ctx = Annotated[Context, Depends(_context)]
Caller = Annotated[Principal, Depends(_caller)]


def require_admin(who: Principal) -> None:
    if not who.admin:
        raise Forbidden("only the admin key (TUNESERVE_ADMIN_KEY) manages API keys")


# Named with hyphens: gateways and proxies drop headers with underscores.
ModelHeader = Annotated[
    str | None,
    Header(
        alias="serve-multiplexed-model-id",
        description="the model, when the body does not name it",
        max_length=128,
    ),
]


def model_named(request: Request, body_model: str | None, header_model: str | None) -> str:
    """The model a request names (the body wins over the header). The metrics call it
    `unknown` until tenancy has resolved it (`resolved`): a made-up id must neither grow the
    metrics nor show there whether it exists."""
    request.state.model_id = "unknown"
    model_id = body_model or header_model
    if not model_id:
        raise InvalidRequest(
            'name the model: "model" in the body (e.g. "base") or the '
            "serve-multiplexed-model-id header",
            param="model",
        )
    return model_id


def resolved(request: Request, model_id: str) -> None:
    """The model a request named exists and the caller may use it: the metrics may say so."""
    request.state.model_id = model_id


def limit_texts(
    settings: Settings, texts: list[str], param: str, *, per: int = 1, single: bool = False
) -> None:
    """The settings' limits on a request's inputs (the schema's are the hard ceiling)."""
    most = settings.max_inputs
    if len(texts) > most * per:
        raise LimitExceeded(
            f"{param}: at most {most} inputs a request (setting TUNESERVE_MAX_INPUTS)", param=param
        )
    chars = settings.max_text_chars
    for i, t in enumerate(texts):
        if len(t) > chars:
            where = param if single else f"{param}[{i // per}]"
            raise LimitExceeded(
                f"{where}: at most {chars} characters a text (setting TUNESERVE_MAX_TEXT_CHARS)",
                param=where,
            )
