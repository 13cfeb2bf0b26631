"""The tracker script and the demo site, served by the collector itself.

With the embedded default a newcomer opens http://localhost:8000/ and sees the pixel at
work without installing a web server.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from evothesis.api.conditional import script_response, strong_etag
from evothesis.tracker import render_tracker

router = APIRouter(tags=["tracker"])


@cache
def _generic_tracker() -> tuple[bytes, str]:
    body = render_tracker(None)
    return body, strong_etag(body)


@router.get("/tracking.js", summary="The tracker, configured by window.EvothesisConfig")
@router.get(
    "/js/tracking.js",
    summary="The tracker at the seed documents' path",
    description="The same script as /tracking.js, where seed 001's snippet loads it.",
)
async def tracking_js(request: Request) -> Response:
    body, etag = _generic_tracker()
    return script_response(request, body, etag=etag)


def mount_demo(app: FastAPI) -> None:
    """Serve the demo pages at ``/``; mounted last so API routes take precedence."""
    folder = resources.files("evothesis").joinpath("static/demo")
    app.mount("/", StaticFiles(directory=str(folder), html=True), name="demo")
