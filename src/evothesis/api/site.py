"""The tracker script and the demo site, served by the collector itself.

With the embedded default a newcomer opens http://localhost:8000/ and sees the pixel at
work without installing a web server.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from evothesis.tracker import render_tracker

router = APIRouter(tags=["tracker"])

#: Browsers revalidate after this many seconds; the ETag makes that a cheap 304.
TRACKER_MAX_AGE = 300


@cache
def _generic_tracker() -> tuple[bytes, str]:
    body = render_tracker(None)
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@router.get("/tracking.js", summary="The tracker, configured by window.EvothesisConfig")
async def tracking_js(request: Request) -> Response:
    body, etag = _generic_tracker()
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={TRACKER_MAX_AGE}"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/javascript; charset=utf-8", headers=headers)


def mount_demo(app: FastAPI) -> None:
    """Serve the demo pages at ``/``; mounted last so API routes take precedence."""
    folder = resources.files("evothesis").joinpath("static/demo")
    app.mount("/", StaticFiles(directory=str(folder), html=True), name="demo")
