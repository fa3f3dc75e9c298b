"""/v1/files: upload a dataset (checked whole before it is accepted), list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi import File as FormFile
from fastapi.responses import FileResponse

from service import files
from service.api.deps import Caller, Ctx
from service.schemas.fields import after as after_id
from service.schemas.files import FileDeleted, FileView
from service.schemas.page import Page
from service.settings import Settings
from training.config import Purpose
from training.data import Limits

router = APIRouter(tags=["files"])
UPLOAD_PATH = "/v1/files"


def upload_limits(s: Settings) -> files.UploadLimits:
    return files.UploadLimits(
        max_bytes=s.max_upload_bytes,
        data=Limits(s.max_decompressed_bytes, s.max_line_chars),
        check_timeout_s=s.validation_timeout_s,
        tenant_bytes=s.max_tenant_bytes,
        tenant_files=s.max_tenant_files,
    )


@router.post(UPLOAD_PATH, response_model=FileView)
async def upload_file(
    ctx: Ctx,
    who: Caller,
    file: Annotated[UploadFile, FormFile(description="the dataset")],
    purpose: Annotated[Purpose, Form(description="what the file is for")],
) -> FileView:
    """Upload a dataset: classification JSON Lines or SQuAD JSON (purpose `fine-tune`), or
    text to pretrain on (purpose `pretrain`). It is checked whole before it is accepted."""
    record = await ctx.db.call(
        files.store,
        ctx.home,
        file.file,
        file.filename,
        purpose,
        limits=upload_limits(ctx.settings),
        tenant=who.tenant,
    )
    return FileView.of(record)


@router.get("/v1/files", response_model=Page[FileView])
async def list_files(
    ctx: Ctx,
    who: Caller,
    purpose: str | None = None,
    after: Annotated[
        str | None, after_id(r"^file-[0-9a-f]{24}$", "file-0123456789abcdef01234567")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> Page[FileView]:
    rows, more = await ctx.db.call(
        files.listing, tenant=who.scope, purpose=purpose, after=after, limit=limit
    )
    return Page[FileView].of([FileView.of(f) for f in rows], more)


@router.get("/v1/files/{file_id}", response_model=FileView)
async def get_file(ctx: Ctx, who: Caller, file_id: str) -> FileView:
    return FileView.of(await ctx.db.call(files.get, file_id, who.scope))


@router.get(
    "/v1/files/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"}},
)
async def file_content(ctx: Ctx, who: Caller, file_id: str) -> FileResponse:
    f = await ctx.db.call(files.get, file_id, who.scope)
    return FileResponse(f.path, filename=f.filename, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete_file(ctx: Ctx, who: Caller, file_id: str) -> FileDeleted:
    await ctx.db.call(files.delete, file_id, who.scope)
    return FileDeleted(id=file_id)
