"""Named SQL statements, parsed once from ``queries.sql``.

Keeping statements as text in one file lets operators read exactly what the collector runs
and lets a test check every statement against the migrated schema.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z0-9_]+) --$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split ``-- name --`` sections; comment lines right under a header are dropped."""
    names = _HEADER.findall(text)
    bodies = _HEADER.split(text)[2::2]
    queries: dict[str, str] = {}
    for name, body in zip(names, bodies, strict=True):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = "\n".join(lines).strip()
    return queries


@cache
def queries() -> dict[str, str]:
    return parse_queries(resources.files(__package__).joinpath("queries.sql").read_text())


def query(name: str) -> str:
    return queries()[name]
