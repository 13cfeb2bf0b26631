"""Pure parts of billing: periods, usage aggregation, invoice amounts and CSV, and the
reconciliation of metering with the export ledger."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from evothesis.billing.invoice import CSV_COLUMNS, amount, invoice_csv, invoice_lines, table_rows
from evothesis.billing.period import Period, month_period, parse_period
from evothesis.billing.reconcile import LedgerBatch, days_to_read, reconcile
from evothesis.billing.source import parse_key
from evothesis.billing.usage import Usage, aggregate, grand_total, select
from evothesis.errors import InvalidPeriod
from evothesis.export.metering import MeteringRecord

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
MARCH = Period(D1, date(2026, 3, 31))


def record(
    batch: int,
    client: str,
    site: str,
    day: date,
    accepted: int,
    stored: int | None = None,
    rejected: Mapping[str, int] | None = None,
) -> MeteringRecord:
    stored = accepted if stored is None else stored
    return MeteringRecord(batch, client, site, day, accepted, stored, rejected or {}, 10 * stored)


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


# ------------------------------------------------------------------------------ periods


def test_periods_parse_and_include_both_ends() -> None:
    period = parse_period("2026-03-01", "2026-03-03")
    assert list(period.days()) == [D1, D2, D3]
    assert D3 in period and date(2026, 3, 4) not in period
    assert period.start == at(D1, 0)
    assert period.end == at(date(2026, 3, 4), 0)
    assert parse_period("2024-01-01", "2024-12-31").last == date(2024, 12, 31)  # 366 days


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("2026-03-xx", "2026-03-03", "from must be a date as YYYY-MM-DD"),
        ("2026-03-01", "03/04/2026", "to must be a date as YYYY-MM-DD"),
        ("2026-03-04", "2026-03-03", "is after to"),
        ("2025-01-01", "2026-01-02", "at most 366"),
    ],
)
def test_bad_periods_are_refused_with_a_clear_message(first: str, last: str, message: str) -> None:
    with pytest.raises(InvalidPeriod, match=message):
        parse_period(first, last)


@pytest.mark.parametrize(
    ("month", "last"),
    [
        ("2026-02", date(2026, 2, 28)),
        ("2024-02", date(2024, 2, 29)),
        ("2026-12", date(2026, 12, 31)),
    ],
)
def test_a_month_is_its_days(month: str, last: date) -> None:
    period = month_period(month)
    assert (period.first.day, period.last) == (1, last)


@pytest.mark.parametrize("month", ["2026-13", "2026", "March", "2026-03-01"])
def test_a_malformed_month_is_refused(month: str) -> None:
    with pytest.raises(InvalidPeriod, match="YYYY-MM"):
        month_period(month)


# -------------------------------------------------------------------------------- usage


def test_usage_sums_per_client_site_and_day_and_counts_a_batch_share_once() -> None:
    records = [
        record(1, "b", "b.test", D1, 5, 6, {"wrong_type": 1}),
        record(1, "a", "a.test", D1, 2),
        record(2, "a", "a.test", D1, 3, 4, {"wrong_type": 2, "missing_field": 1}),
        record(2, "a", "shop.a.test", D2, 1),
        record(2, "a", "shop.a.test", D2, 1),  # the same share from a second file
        record(3, "a", "a.test", date(2026, 4, 1), 100),  # outside the period
    ]
    clients = aggregate(select(records, MARCH))
    assert [c.client_id for c in clients] == ["a", "b"]
    a = clients[0]
    assert a.sites == ["a.test", "shop.a.test"]
    assert [(row.site_id, row.day, row.usage) for row in a.days] == [
        ("a.test", D1, Usage(5, 6, {"wrong_type": 2, "missing_field": 1}, 60)),
        ("shop.a.test", D2, Usage(1, 1, {}, 10)),
    ]
    assert a.totals == Usage(6, 7, {"wrong_type": 2, "missing_field": 1}, 70)
    assert a.totals.rejected_events == 3
    assert grand_total(clients) == Usage(11, 13, {"wrong_type": 3, "missing_field": 1}, 130)
    assert aggregate(select(records, MARCH, "b"))[0].as_dict() == {
        "client_id": "b",
        "totals": {
            "accepted_events": 5,
            "stored_events": 6,
            "rejected_events": 1,
            "rejected": {"wrong_type": 1},
            "bytes": 60,
        },
        "sites": ["b.test"],
        "days": [
            {
                "site_id": "b.test",
                "day": "2026-03-01",
                "accepted_events": 5,
                "stored_events": 6,
                "rejected_events": 1,
                "rejected": {"wrong_type": 1},
                "bytes": 60,
            }
        ],
    }


# ------------------------------------------------------------------------------ invoice


@pytest.mark.parametrize(
    ("events", "rate", "expected"),
    [
        (0, "0.01", "0.00"),
        (1000, "0.01", "0.01"),
        (1_234_567, "0.01", "12.35"),  # 12.34567 -> 12.35
        (500, "0.01", "0.01"),  # 0.005 rounds half up
        (499, "0.01", "0.00"),  # 0.00499
        (1500, "0.03", "0.05"),  # 0.045 rounds half up, not to even
        (10**9, "0.0125", "12500.00"),
    ],
)
def test_amounts_are_exact_decimals_rounded_half_up_to_cents(
    events: int, rate: str, expected: str
) -> None:
    assert amount(events, Decimal(rate)) == Decimal(expected)
    assert str(amount(events, Decimal(rate))) == expected


def test_invoice_lines_and_csv_one_line_per_client() -> None:
    clients = aggregate(
        [
            record(1, "a", "a.test", D1, 1500, 1600, {"wrong_type": 2}),
            record(1, "a", "shop.a.test", D2, 500),
            record(2, "b", "b.test", D1, 250),
        ]
    )
    lines = invoice_lines(clients, "2026-03", Decimal("0.01"), {"a": 1, "c": 1})
    rows = list(csv.reader(io.StringIO(invoice_csv(lines))))
    assert rows == [
        list(CSV_COLUMNS),
        ["a", "2026-03", "2000", "0.01", "0.02", "2", "1"],
        ["b", "2026-03", "250", "0.01", "0.00", "1", "0"],
        ["c", "2026-03", "0", "0.01", "0.00", "0", "1"],
    ]
    table = table_rows(lines)
    assert table[0] == ["a", "2", "1", "2000", "2100", "2", "21000", "0.02"]
    assert table[-1] == ["TOTAL", "3", "2", "2250", "2350", "2", "23500", "0.02"]


# ----------------------------------------------------------------------- reconciliation


def ledger(batch: int, first: datetime, last: datetime, **clients: int) -> LedgerBatch:
    return LedgerBatch(batch, "exported", first, last, clients)


def test_metering_equal_to_the_ledger_reconciles() -> None:
    period = Period(D1, D2)
    records = [record(1, "a", "a.test", D1, 3, 4), record(1, "b", "b.test", D2, 2)]
    batches = [ledger(1, at(D1), at(D2), a=4, b=2)]
    result = reconcile(period, records, [(1, D1), (1, D2)], batches, days_read=set(period.days()))
    assert result.as_dict() == {
        "reconciled": True,
        "batches_checked": 1,
        "mismatches": [],
        "missing_files": [],
        "unreadable_files": [],
    }


def test_a_changed_count_a_missing_file_and_an_unrecorded_batch_do_not_reconcile() -> None:
    period = Period(D1, D2)
    days = set(period.days())
    batches = [ledger(1, at(D1), at(D2), a=4, b=2), ledger(2, at(D2), at(D2), a=1)]
    records = [
        record(1, "a", "a.test", D1, 3, 5),  # tampered: the ledger says 4
        # batch 1's D2 file (b: 2 events) is missing
        record(2, "a", "a.test", D2, 1),
        record(3, "a", "a.test", D2, 7),  # metered, but the ledger has not recorded it
    ]
    files = [(1, D1), (2, D2), (3, D2)]
    pending = LedgerBatch(3, "pending", at(D2), at(D2), {})
    result = reconcile(period, records, files, [*batches, pending], days_read=days)
    assert not result.reconciled
    assert result.mismatches == [
        {
            "batch_id": 1,
            "client_id": "a",
            "metering_events": 5,
            "ledger_events": 4,
            "ledger_state": "exported",
        },
        {
            "batch_id": 1,
            "client_id": "b",
            "metering_events": 0,
            "ledger_events": 2,
            "ledger_state": "exported",
        },
        {
            "batch_id": 3,
            "client_id": "a",
            "metering_events": 7,
            "ledger_events": 0,
            "ledger_state": "pending",
        },
    ]
    assert result.missing_files == [{"batch_id": 1, "day": "2026-03-02"}]
    # Limited to client a, b's share of batch 1 is not checked.
    only_a = reconcile(period, records, files, [*batches, pending], days_read=days, client_id="a")
    assert [m["client_id"] for m in only_a.mismatches] == ["a", "a"]


def test_a_batch_straddling_the_period_is_compared_only_when_read_whole() -> None:
    period = Period(D2, D2)
    straddling = ledger(1, at(D1, 23), at(D2, 1), a=3)
    assert days_to_read(period, [straddling]) == {D1, D2}
    part = [record(1, "a", "a.test", D2, 1)]
    half = reconcile(period, part, [(1, D2)], [straddling], days_read={D2})
    assert (half.reconciled, half.batches_checked) == (True, 0)
    whole = [*part, record(1, "a", "a.test", D1, 2)]
    full = reconcile(period, whole, [(1, D1), (1, D2)], [straddling], days_read={D1, D2})
    assert (full.reconciled, full.batches_checked) == (True, 1)


def test_an_undecodable_file_never_reconciles() -> None:
    result = reconcile(Period(D1, D1), [], [], [], days_read={D1}, unreadable={"k": "bad"})
    assert result.unreadable_files == [{"key": "k", "error": "bad"}]
    assert not result.reconciled


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("metering/2026/03/01/batch-000000000042.jsonl", (42, D1)),
        ("prefix/metering/2026/03/02/batch-000000000007.jsonl", (7, D2)),
        ("metering/2026/03/01/notes.txt", None),
        ("metering/2026/13/01/batch-000000000001.jsonl", None),
        ("metering/2026/03/01/batch-x.jsonl", None),
    ],
)
def test_metering_keys_name_their_batch_and_day(
    key: str, expected: tuple[int, date] | None
) -> None:
    assert parse_key(key) == expected
