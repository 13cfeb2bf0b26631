"""A collector's process loads no library it never calls: pyarrow, delta-rs and pyiceberg
(a hundred megabytes resident) are imported by the export's worker processes only, which
get the work ``ByName``; and glibc keeps two malloc arenas, not eight per core."""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import subprocess
import sys

import evothesis
from evothesis.heap import MALLOC_ARENAS
from evothesis.objects.cpu import ByName, run_in_worker

#: Libraries only the export's worker processes need.
WORKER_ONLY = ("pyarrow", "deltalake", "pyiceberg")


def test_serving_modules_import_no_worker_library() -> None:
    program = (
        "import sys\n"
        "import evothesis.app, evothesis.server, evothesis.services, evothesis.cli.main\n"
        f"print(sorted(m for m in {WORKER_ONLY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == "[]"


def test_every_function_given_by_name_exists() -> None:
    given: list[ByName[object]] = []
    for module in pkgutil.walk_packages(evothesis.__path__, "evothesis."):
        if ".migrations." in module.name or module.name.endswith("__main__"):
            continue
        namespace = vars(importlib.import_module(module.name))
        given += [value for value in namespace.values() if isinstance(value, ByName)]
    assert {f"{g.module}.{g.name}" for g in given} >= {
        "evothesis.export.render.split_object",
        "evothesis.export.tables.work.append_rows",
    }
    for function in given:
        assert callable(getattr(importlib.import_module(function.module), function.name))


def test_a_function_given_by_name_runs_in_a_worker() -> None:
    dumps: ByName[str] = ByName("json", "dumps")
    assert asyncio.run(run_in_worker(dumps, {"a": [1]})) == '{"a": [1]}'


def test_the_cli_keeps_two_malloc_arenas_and_hands_the_limit_to_its_children() -> None:
    program = (
        "import ctypes, os\n"
        "from evothesis.heap import limit_malloc_arenas\n"
        "limit_malloc_arenas()\n"
        "print(os.environ['MALLOC_ARENA_MAX'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    run = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == str(MALLOC_ARENAS)
    own = subprocess.run(
        [sys.executable, "-c", program],
        env={**env, "MALLOC_ARENA_MAX": "4"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert own.stdout.strip() == "4"
