"""The ``evothesis`` command run as an operator runs it: the installed console script, in a
shell environment that holds only what the test gives it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.postgres import TEST_SECRET_KEY

#: The console script of the environment the tests run in.
EVOTHESIS = str(Path(sys.executable).parent / "evothesis")


def shell_env(**values: str) -> dict[str, str]:
    """An operator's shell holding ``PATH``, ``HOME`` and ``values`` only; and
    ``PYTHONPATH`` when set, so that a worktree tested with another checkout's virtualenv
    runs its own code in the command too (the console script's install points elsewhere)."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return {**env, **values}


def clean_env(data_dir: Path, *, secret_key: bool = True, **extra: str) -> dict[str, str]:
    """``shell_env`` with the data folder, the suite's secret key (unless the test wants the
    embedded default's own key file) and ``extra``: nothing of the operator's settings."""
    env = shell_env(EVOTHESIS_DATA_DIR=str(data_dir))
    if secret_key:
        env["EVOTHESIS_SECRET_KEY"] = TEST_SECRET_KEY
    return {**env, **extra}


def evothesis(
    *args: str, env: dict[str, str], timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``evothesis *args`` to completion, capturing its output as text."""
    return subprocess.run(
        [EVOTHESIS, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
