"""Pure parts of the export pipeline: bucket URLs, durations and schedules, retry delays,
object keys and metering totals."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from evothesis.config import Settings
from evothesis.durations import parse_duration, parse_interval
from evothesis.export.keys import manifest_key, metering_key, processed_key, raw_key
from evothesis.export.metering import (
    MeteredEvent,
    MeteredFailure,
    MeteringRecord,
    decode_metering,
    encode_metering,
    meter,
)
from evothesis.export.timing import retry_delay
from evothesis.objects.buckets import BucketConfigError, BucketSpec, bucket_url, client_bucket
from evothesis.services import export_buckets

CLAIMED = datetime(2026, 3, 9, 23, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("acme-raw", "s3://acme-raw"),
        ("acme-raw/events/", "s3://acme-raw/events"),
        ("s3://acme/prefix", "s3://acme/prefix"),
        ("gs://acme", "gs://acme"),
        ("file:///srv/buckets/raw", "file:///srv/buckets/raw"),
    ],
)
def test_bucket_values_become_urls(value: str, expected: str) -> None:
    assert bucket_url(value, default_folder=Path("/unused")) == expected


def test_an_unset_bucket_is_a_local_folder(tmp_path: Path) -> None:
    assert bucket_url(None, default_folder=tmp_path / "raw") == (tmp_path / "raw").as_uri()


@pytest.mark.parametrize("value", ["ftp://host/x", "file://relative/path"])
def test_unusable_bucket_urls_are_refused_with_the_value_named(value: str) -> None:
    with pytest.raises(BucketConfigError, match=r"ftp|absolute"):
        bucket_url(value, default_folder=Path("/unused"))


def test_settings_default_to_folders_under_the_data_directory(tmp_path: Path) -> None:
    buckets = export_buckets(Settings(_env_file=None, EVOTHESIS_DATA_DIR=str(tmp_path)))
    assert buckets.raw.local_path == (tmp_path / "buckets" / "raw").resolve()
    assert buckets.processed.local_path == (tmp_path / "buckets" / "processed").resolve()
    assert buckets.backup.options == {}


def test_s3_settings_carry_endpoint_region_and_per_bucket_keys() -> None:
    buckets = export_buckets(
        Settings(
            _env_file=None,
            RAW_S3_BUCKET="raw-bucket",
            CLIENT_S3_BUCKET="client-bucket",
            S3_ENDPOINT_URL="http://127.0.0.1:9000",
            S3_REGION="eu-west-1",
            RAW_S3_ACCESS_KEY="AKIA-raw",
            RAW_S3_SECRET_KEY="raw-secret",
        )
    )
    assert buckets.raw.url == "s3://raw-bucket"
    assert buckets.raw.options["access_key_id"] == "AKIA-raw"
    assert buckets.processed.url == "s3://client-bucket"  # the seed's name is honoured
    assert "access_key_id" not in buckets.processed.options
    shown = orjson.dumps(buckets.describe()).decode()
    assert "raw-secret" not in shown and "AKIA-raw" not in shown
    assert buckets.describe()["raw"] == {
        "url": "s3://raw-bucket",
        "endpoint": "http://127.0.0.1:9000",
        "region": "eu-west-1",
        "credentials": True,
    }


def test_seed_004s_names_reach_the_processed_and_backup_buckets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 004's VM-per-client variables, as an operator exports them: the client's bucket
    gets the client's keys (not AWS_* or the instance role), metering goes to the backup
    bucket named by S3_BACKUP_BUCKET (not a folder in the container)."""
    for name, value in {
        "CLIENT_S3_BUCKET": "client-analytics-bucket",
        "CLIENT_S3_ACCESS_KEY": "AKIA-client",
        "CLIENT_S3_SECRET_KEY": "client-secret",
        "S3_BACKUP_BUCKET": "evothesis-backup-bucket",
    }.items():
        monkeypatch.setenv(name, value)
    buckets = export_buckets(Settings(_env_file=None))
    assert buckets.processed.url == "s3://client-analytics-bucket"
    assert buckets.processed.options["access_key_id"] == "AKIA-client"
    assert buckets.processed.options["secret_access_key"] == "client-secret"
    assert buckets.backup.url == "s3://evothesis-backup-bucket"
    assert "access_key_id" not in buckets.raw.options


def test_a_client_destination_replaces_the_default_and_refuses_unknown_keys() -> None:
    default = BucketSpec("s3://operator")
    assert client_bucket(None, None, default=default) is default
    own = client_bucket("s3://acme/exports", {"region": "eu-west-1"}, default=default)
    assert own == BucketSpec("s3://acme/exports", {"region": "eu-west-1"})
    with pytest.raises(BucketConfigError, match="passwd"):
        client_bucket("s3://acme", {"passwd": "x"}, default=default)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("6h", 21600.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        (" 2 H ", 7200.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "-1s", "1w"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m", 60.0), ("hourly", 3600.0), ("daily", 86400.0), ("minutely", 60.0), ("off", None)],
)
def test_intervals(text: str, seconds: float | None) -> None:
    assert parse_interval(text) == seconds


def test_a_bad_schedule_is_a_configuration_error_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="EXPORT_SCHEDULE"):
        Settings(_env_file=None, EXPORT_SCHEDULE="whenever")
    with pytest.raises(ValueError, match="EXPORT_SCHEDULE"):
        Settings(_env_file=None, EXPORT_SCHEDULE="5m")  # an interval is not a schedule
    with pytest.raises(ValueError, match="EXPORT_INTERVAL"):
        Settings(_env_file=None, EXPORT_INTERVAL="daily at noon")
    with pytest.raises(ValueError, match="BUFFER_RETENTION"):
        Settings(_env_file=None, BUFFER_RETENTION="0s")


def test_retry_delays_grow_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 5.0), (2, 10.0), (3, 20.0), (12, 900.0)]:
        delays = [retry_delay(attempt, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not one value


def test_object_keys_are_a_pure_function_of_the_batch() -> None:
    assert raw_key(42, CLAIMED) == "raw-events/2026/03/09/batch-000000000042.jsonl.gz"
    assert metering_key(42, CLAIMED.date()) == "metering/2026/03/09/batch-000000000042.jsonl"
    assert processed_key("acme", 42, CLAIMED, "parquet") == (
        "processed-events/acme/2026/03/09/batch-000000000042.parquet"
    )
    assert processed_key("acme", 42, CLAIMED, "json").endswith("/batch-000000000042.json")
    assert processed_key("acme", 42, CLAIMED, "jsonl").endswith("/batch-000000000042.jsonl")
    assert processed_key("acme", 42, CLAIMED, "csv").endswith(".csv")
    with pytest.raises(ValueError, match="not a file format"):
        processed_key("acme", 42, CLAIMED, "delta")
    assert manifest_key("a/b.csv") == "a/b.csv.manifest.json"
    assert raw_key(9, CLAIMED) < raw_key(10, CLAIMED)  # keys list in batch order


def test_metering_totals_per_event_day_client_and_site_in_a_stable_order() -> None:
    day1, day2 = date(2026, 3, 9), date(2026, 3, 10)
    events = [
        MeteredEvent("b", "b.test", day1, 100),
        MeteredEvent("a", "a.test", day2, 10),
        MeteredEvent("a", "a.test", day1, 20, envelope=True),
        MeteredEvent("a", "a.test", day1, 30),
    ]
    failures = [
        MeteredFailure("a", "a.test", day1, "wrong_type"),
        MeteredFailure("a", "a.test", day1, "missing_field"),
        MeteredFailure("a", "a.test", day1, "wrong_type"),
    ]
    days = meter(7, events, failures)
    assert list(days) == [day1, day2]
    assert [record.as_dict() for record in days[day1]] == [
        {
            "batch_id": 7,
            "client_id": "a",
            "site_id": "a.test",
            "day": "2026-03-09",
            "events": 2,
            "accepted_events": 1,
            "stored_events": 2,
            "rejected": {"missing_field": 1, "wrong_type": 2},
            "bytes": 50,
        },
        {
            "batch_id": 7,
            "client_id": "b",
            "site_id": "b.test",
            "day": "2026-03-09",
            "events": 1,
            "accepted_events": 1,
            "stored_events": 1,
            "rejected": {},
            "bytes": 100,
        },
    ]
    assert [record.as_dict() for record in days[day2]] == [
        {
            "batch_id": 7,
            "client_id": "a",
            "site_id": "a.test",
            "day": "2026-03-10",
            "events": 1,
            "accepted_events": 1,
            "stored_events": 1,
            "rejected": {},
            "bytes": 10,
        }
    ]
    assert meter(7, reversed(events), reversed(failures)) == days
    encoded = encode_metering(days[day1])
    assert encoded == encode_metering(meter(7, reversed(events), reversed(failures))[day1])
    assert decode_metering(encoded) == days[day1]


def test_metering_records_written_before_the_billing_fields_still_read() -> None:
    old = (
        b'{"batch_id":3,"client_id":"a","site_id":"a.test","day":"2026-03-09","events":4,"bytes":9}'
    )
    assert decode_metering(old + b"\n") == [
        MeteringRecord(3, "a", "a.test", date(2026, 3, 9), 4, 4, {}, 9)
    ]


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1]",
        b'{"batch_id":1}',
        b'{"batch_id":"1","client_id":"a","site_id":"s","day":"2026-01-01"}',
    ],
)
def test_a_damaged_metering_file_is_an_error_not_a_zero(line: bytes) -> None:
    with pytest.raises(ValueError, match="metering"):
        decode_metering(line)
