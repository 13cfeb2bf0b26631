"""Evothesis: self-hosted, privacy-first event collection for data ownership."""

from __future__ import annotations

__version__ = "0.1.0"
