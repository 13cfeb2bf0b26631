"""What the collector refused, dropped, rejected and anonymised, counted by closed reason.

Nothing is refused, dropped or rejected silently: ``/health`` shows these counts and
``/metrics`` exports them, both read from here. Per process, on the event loop: no locks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from evothesis.domain import DropReason, Refusal, RejectReason

__all__ = ["Outcomes"]


@dataclass
class Outcomes:
    #: Requests refused as a whole (401/403).
    refused: Counter[Refusal] = field(default_factory=Counter)
    #: Events acknowledged but not stored.
    dropped: Counter[DropReason] = field(default_factory=Counter)
    #: Inner events of batches that failed validation (kept in ``failed_events``).
    rejected: Counter[RejectReason] = field(default_factory=Counter)
    #: Events stored without identifiers because of the visitor's privacy choices.
    anonymized: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts so far, for ``/health``: refusals by their code, drops and rejections
        prefixed ``dropped_`` and ``rejected_``, and ``anonymized``."""
        counts: dict[str, int] = {str(reason): n for reason, n in self.refused.items()}
        counts.update((f"dropped_{reason}", n) for reason, n in self.dropped.items())
        counts.update((f"rejected_{reason}", n) for reason, n in self.rejected.items())
        if self.anonymized:
            counts["anonymized"] = self.anonymized
        return counts
