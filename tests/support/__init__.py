"""Helpers the tests (and benchmarks) share; fixtures live in ``tests/conftest.py``."""
