"""JSON responses rendered with orjson (UUIDs and datetimes serialise natively)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        # asyncpg hands back its own UUID type, which orjson does not know.
        return orjson.dumps(content, default=str)
