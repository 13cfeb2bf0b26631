"""Reproducible benchmarks, run from the repository root as modules
(``.venv/bin/python -m benchmarks.run``), so they share ``tests/support`` without editing
``sys.path``."""
