"""/console: the web console's static files (service/api/console/), public like any page.

The console is plain HTML, CSS and JavaScript modules written for this package: no build
step, nothing fetched from elsewhere at run time. It calls the public API with the key the
user enters (kept in the browser's session storage), so it has no power of its own: every
answer it shows is one that key would get from the API. The files are served with a strict
Content-Security-Policy (scripts and connections only to this origin, no inline script), so
text that reaches a page from the API (a label, a file name) can only ever be text.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "console"
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # the files are small and change with the package: a reload always gets this version's
    "cache-control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/console")
async def console_root() -> RedirectResponse:
    # relative: under a route prefix (/<prefix>/console) it still lands on the folder
    return RedirectResponse("console/", status_code=308)


class _Static(StaticFiles):
    """StaticFiles with the console's security headers on every answer."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console", _Static(directory=STATIC, html=True), name="console")
