"""The delivery: the unit in which a client receives its events (pure, no I/O).

The raw export cuts the buffer into numbered, immutable raw batches; each client's events in
one batch are a *share*. A **delivery** is a set of one client's shares, cut at once by the
client's schedule or by a trigger:

* **identity** ``(client_id, seq)``: ``seq`` numbers a client's deliveries 1, 2, 3, … in
  the order they were cut, without gaps;
* **content** its shares (each share belongs to exactly one delivery), its ``format`` and
  ``cut_at`` (the manifests' export time), all fixed when it is cut and never changed;
* **files** one per claim day (UTC) of its batches, in its format, each with a manifest:
  ``processed-events/<client>/YYYY/MM/DD/delivery-<seq>.<ext>`` (``export_date=YYYY-MM-DD/``
  in the Hive-style ``layout``, also fixed when it is cut). A real-time delivery (one
  share, cut as soon as its batch is exported) keeps the per-batch name ``batch-<n>.<ext>``
  the pipeline always used.

Everything written is a pure function of the delivery (and of the raw objects, which never
change but for a data-subject deletion): a delivery retried after a crash, or written again
by a replay, writes the same keys with the same bytes. A destination that is not a folder of
files (a table format, ``export.tables``) takes the same unit: all of a delivery's rows go
into one commit that carries its ``delivery_id``, named as its files are, by which the table
recognises a delivery it already holds (a retry, a replay, a racing exporter).

How big a cut may be is bounded (``MAX_DELIVERY_EVENTS``): a period with more events than
that is cut into several deliveries, each one file per day, so that no delivery is more
than a bounded amount of memory to render.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from evothesis.domain import DeliveryTrigger
from evothesis.export.keys import batch_name, delivery_key, delivery_name, processed_key
from evothesis.schedules import DeliverySchedule

__all__ = [
    "MAX_DELIVERY_EVENTS",
    "ON_DEMAND_EXPIRY",
    "Cut",
    "Delivery",
    "PendingClient",
    "Share",
    "due_cut",
    "next_delivery",
    "split_shares",
]

#: Most events one cut puts in a delivery (unless one share alone holds more).
MAX_DELIVERY_EVENTS: Final = 100_000
#: An on-demand request is answered by the next delivery of the client; one that found
#: nothing to deliver for this long is forgotten.
ON_DEMAND_EXPIRY: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Share:
    """One client's events in one raw batch."""

    batch_id: int
    claimed_at: datetime
    raw_key: str
    event_count: int

    @property
    def day(self) -> date:
        """The UTC day the batch was claimed: the folder of the file that carries it."""
        return self.claimed_at.astimezone(UTC).date()


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one client is sent at once (see the module docstring)."""

    client_id: str
    seq: int
    trigger: DeliveryTrigger
    format: str
    cut_at: datetime
    #: In batch order.
    shares: tuple[Share, ...]
    attempts: int = 0
    #: The folders of its files (``domain.FileLayout``).
    layout: str = "dated"

    @property
    def event_count(self) -> int:
        return sum(share.event_count for share in self.shares)

    @property
    def batch_ids(self) -> list[int]:
        return [share.batch_id for share in self.shares]

    @property
    def per_batch(self) -> bool:
        """A real-time delivery: one share, named after its batch."""
        return self.trigger is DeliveryTrigger.REAL_TIME

    @property
    def days(self) -> list[date]:
        """The days of its files, in order."""
        return sorted({share.day for share in self.shares})

    def file_key(self, day: date, fmt: str | None = None) -> str:
        """The key of its file of ``day`` in ``fmt`` (its own format unless a replay says
        otherwise)."""
        fmt = fmt or self.format
        if self.per_batch:
            (share,) = self.shares
            return processed_key(self.client_id, share.batch_id, share.claimed_at, fmt, self.layout)
        return delivery_key(self.client_id, self.seq, day, fmt, self.layout)

    def shares_of(self, day: date) -> list[Share]:
        return [share for share in self.shares if share.day == day]

    @property
    def delivery_id(self) -> str:
        """The delivery's name among every client's, as its files are named (by batch in
        real time, else by number): what a table commit of it carries."""
        if self.per_batch:
            return f"exp_{batch_name(self.shares[0].batch_id)}_{self.client_id}"
        return f"exp_{delivery_name(self.seq)}_{self.client_id}"

    def export_id(self, day: date) -> str:
        if self.per_batch:
            return self.delivery_id
        return f"{self.delivery_id}_{day.isoformat()}"


# --------------------------------------------------------------------------------- cutting


@dataclass(frozen=True, slots=True)
class PendingClient:
    """A client with exported events in no delivery yet, and its triggers' state."""

    client_id: str
    pending_events: int
    oldest_claimed_at: datetime
    schedule: DeliverySchedule
    threshold: int | None
    last_tick: datetime | None
    requested_at: datetime | None


@dataclass(frozen=True, slots=True)
class Cut:
    """A decision to cut: why, the batches it may take (claimed before ``before``; any when
    ``None``), and the schedule tick it answers (``None``: not the schedule)."""

    trigger: DeliveryTrigger
    before: datetime | None = None
    tick: datetime | None = None


def due_cut(client: PendingClient, now: datetime, *, caught_up: bool = True) -> Cut | None:
    """Whether the client's pending events are to be cut into a delivery now, and how.

    Real time and a reached threshold cut at once, everything exported. An on-demand
    request cuts everything exported, and a schedule at each tick what was claimed before
    it (the first tick after the oldest pending batch or after the last tick cut, whichever
    is later: missed ticks make one delivery, not one each); both wait while the raw export
    has yet to catch up with the buffer (``caught_up`` false), so that they hold what was
    waiting when the client asked or the tick came.
    """
    schedule = client.schedule
    if schedule.real_time:
        return Cut(DeliveryTrigger.REAL_TIME)
    if client.threshold is not None and client.pending_events >= client.threshold:
        return Cut(DeliveryTrigger.THRESHOLD)
    if not caught_up:
        return None
    if client.requested_at is not None and now - client.requested_at < ON_DEMAND_EXPIRY:
        return Cut(DeliveryTrigger.ON_DEMAND)
    tick = schedule.last_tick(now)
    covered = schedule.last_tick(client.oldest_claimed_at)
    assert tick is not None and covered is not None  # not real time
    if client.last_tick is not None:
        covered = max(covered, client.last_tick)
    if tick > covered:
        return Cut(DeliveryTrigger.SCHEDULE, before=tick, tick=tick)
    return None


def next_delivery(
    schedule: DeliverySchedule, now: datetime, last_tick: datetime | None
) -> datetime | None:
    """When the schedule next delivers: the tick that is due and not yet cut, else the next
    one; ``None`` in real time (every batch, as it is exported)."""
    tick = schedule.last_tick(now)
    if tick is None:
        return None
    if last_tick is not None and last_tick < tick:
        return tick
    return schedule.next_tick(now)


def split_shares(
    shares: Sequence[tuple[int, int]], *, real_time: bool, max_events: int = MAX_DELIVERY_EVENTS
) -> list[list[tuple[int, int]]]:
    """``(batch_id, events)`` shares, in batch order, grouped into deliveries: one each in
    real time, else consecutive runs of at most ``max_events`` (at least one share each)."""
    if real_time:
        return [[share] for share in shares]
    groups: list[list[tuple[int, int]]] = []
    total = 0
    for share in shares:
        if groups and total + share[1] <= max_events:
            groups[-1].append(share)
            total += share[1]
        else:
            groups.append([share])
            total = share[1]
    return groups
