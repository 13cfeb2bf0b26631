"""`evothesis billing …` as an operator runs it: a subprocess against the test database
(DATABASE_URL) and the moto S3 backup bucket, after the real pipeline exported events of
chosen days."""

from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from tests.support.cli import clean_env, evothesis
from tests.support.rows import event_row, insert_rows
from tests.support.s3 import S3, Buckets, run_pipeline, s3_environment

MARCH_31 = datetime(2026, 3, 31, 23, 0, tzinfo=UTC)
APRIL_1 = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)


def billing_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """``clean_env``, keeping PYTHONPATH: a worktree tested with another checkout's
    virtualenv must run its own code in the subprocess too."""
    env = clean_env(data_dir, **extra)
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def test_billing_report_prints_the_month_and_writes_the_invoice(
    tmp_path: Path, database_url: str, s3: S3, buckets: Buckets
) -> None:
    insert_rows(
        database_url,
        [event_row("acme", "acme.test", MARCH_31 + timedelta(seconds=n)) for n in range(1500)]
        + [event_row("acme", "shop.acme.test", MARCH_31, "batch")]
        + [event_row("zeta", "zeta.test", MARCH_31)],
        # April: not in the March invoice.
        [event_row("acme", "acme.test", APRIL_1) for _ in range(7)],
    )
    env = s3_environment(s3, buckets)
    assert run_pipeline(database_url, lambda pipeline: pipeline.export(), **env).events == 1509
    shell = billing_env(
        tmp_path / "data", DATABASE_URL=database_url, **{k: str(v) for k, v in env.items()}
    )
    invoice = tmp_path / "march.csv"

    result = evothesis(
        "billing",
        "report",
        "--month",
        "2026-03",
        "--rate",
        "0.03",
        "--csv",
        str(invoice),
        env=shell,
    )
    assert result.returncode == 0, result.stderr
    table = [line.split() for line in result.stdout.splitlines()]
    assert table[0] == [
        "client",
        "sites",
        "new_sites",
        "accepted",
        "stored",
        "rejected",
        "bytes",
        "amount_usd",
    ]
    assert table[1][:6] == ["acme", "2", "2", "1500", "1501", "0"]
    assert table[1][7] == "0.05"  # 1500 x 0.03 / 1000 = 0.045, half up
    assert table[2][:6] == ["zeta", "1", "1", "1", "1", "0"]
    assert table[3][:4] == ["TOTAL", "3", "3", "1501"]
    assert f"written to {invoice}" in result.stdout
    assert "Warning" not in result.stderr
    assert list(csv.reader(io.StringIO(invoice.read_text()))) == [
        [
            "client_id",
            "month",
            "accepted_events",
            "rate_per_1000",
            "amount_usd",
            "sites",
            "new_sites",
        ],
        ["acme", "2026-03", "1500", "0.03", "0.05", "2", "2"],
        ["zeta", "2026-03", "1", "0.03", "0.00", "1", "1"],
    ]

    # The default rate (BILLING_RATE_PER_1000_EVENTS) and file name, one client.
    result = evothesis(
        "billing",
        "report",
        "--month",
        "2026-04",
        "--client",
        "acme",
        env={**shell, "BILLING_RATE_PER_1000_EVENTS": "2"},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "invoice-2026-04.csv").read_text().splitlines()[1] == (
        "acme,2026-04,7,2,0.01,1,0"
    )

    usage = evothesis("billing", "usage", "--from", "2026-03-31", "--to", "2026-04-01", env=shell)
    assert usage.returncode == 0, usage.stderr
    body = orjson.loads(usage.stdout)
    assert body["totals"]["accepted_events"] == 1508
    assert body["reconciliation"]["reconciled"] is True


def test_billing_refuses_a_bad_month_before_starting_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for args in (["report", "--month", "2026-13"], ["usage", "--from", "x", "--to", "y"]):
        result = evothesis("billing", *args, env=billing_env(data_dir))
        assert result.returncode == 2
        assert "YYYY-MM" in result.stderr
        assert "Traceback" not in result.stderr
    assert not data_dir.exists()
