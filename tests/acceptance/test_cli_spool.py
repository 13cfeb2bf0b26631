"""`evothesis spool …` as an operator runs it: the console script in a subprocess, on a spool
folder left by a stopped collector and a quarantine holding what an earlier version and
this one set aside, against the test database."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import psycopg

from evothesis.storage.spool import Spool
from evothesis.storage.spool_format import encode_record
from tests.support.cli import clean_env, evothesis
from tests.support.spool import legacy_record, record_spans, segment_files, spooled_row


def spool_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """``clean_env``, keeping PYTHONPATH: a worktree tested with another checkout's
    virtualenv must run its own code in the subprocess too."""
    env = clean_env(tmp_path / "data", **extra)
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def event_ids(*records: bytes) -> list[str]:
    return [i for record in records for span in record_spans(record) for i in span.event_ids]


def stored_counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT event_id::text, count(*) FROM events_log GROUP BY 1")
        return {event_id: count for event_id, count in rows}


def test_spool_commands_show_the_backlog_and_recover_the_quarantine(
    tmp_path: Path, database_url: str
) -> None:
    spool_dir = tmp_path / "spool"
    stopped = Spool(spool_dir, max_bytes=10**9)  # a collector that stopped with a backlog
    for _ in range(2):
        stopped.append([spooled_row(), spooled_row()], [])
    stopped.close()
    [segment] = segment_files(spool_dir)
    quarantine = spool_dir / "quarantine"
    quarantine.mkdir()
    # A tail an earlier version set aside whole: one damaged record, three intact ones.
    tail = [legacy_record([spooled_row(), spooled_row()]) for _ in range(4)]
    damaged = bytearray(tail[0])
    damaged[30] ^= 0x01
    old = quarantine / "oldhost-41-0123abcd-segment-000000000001.spool-0.bad"
    old.write_bytes(bytes(damaged) + b"".join(tail[1:]))
    # Records whose checksums held but which another version could not read: all intact.
    alien = [encode_record([spooled_row()], []) for _ in range(2)]
    readable = quarantine / "host-1-00000000.segment-000000000001.0-999.undecodable.bad"
    readable.write_bytes(b"".join(alien))
    # A damaged range with nothing left in it.
    garbage = quarantine / "host-1-00000000.segment-000000000002.0-7.bad-magic.bad"
    garbage.write_bytes(b"garbage")
    env = spool_env(tmp_path, SPOOL_DIR=str(spool_dir), DATABASE_URL=database_url)

    status = evothesis("spool", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert orjson.loads(status.stdout) == {
        "folder": str(spool_dir),
        "max_bytes": 1 << 30,
        "folders": 1,
        "segments": 1,
        "bytes": segment.stat().st_size,
        "quarantined_files": 3,
        "quarantined_bytes": old.stat().st_size + readable.stat().st_size + 7,
    }

    listing = evothesis("spool", "quarantine", env=env)
    assert listing.returncode == 0, listing.stderr
    table = [line.split() for line in listing.stdout.splitlines()]
    assert table == [
        ["FILE", "BYTES", "ORIGIN", "REASON", "RECORDS", "EVENTS", "DAMAGED"],
        [
            readable.name,
            str(readable.stat().st_size),
            "host-1-00000000/segment-000000000001.spool@0",
            "undecodable",
            "2",
            "2",
            "0",
        ],
        [
            garbage.name,
            "7",
            "host-1-00000000/segment-000000000002.spool@0",
            "bad-magic",
            "0",
            "0",
            "7",
        ],
        [
            old.name,
            str(old.stat().st_size),
            "oldhost-41-0123abcd/segment-000000000001.spool@0",
            "unknown",
            "3",
            "6",
            str(len(tail[0])),
        ],
    ]

    replay = evothesis("spool", "replay-quarantine", env=env)
    assert replay.returncode == 0, replay.stderr
    assert orjson.loads(replay.stdout) == {
        "files": 3,
        "records": 5,
        "events": 8,
        "removed": [readable.name],
        "kept": [
            {"file": garbage.name, "records": 0, "damaged_bytes": 7},
            {"file": old.name, "records": 3, "damaged_bytes": len(tail[0])},
        ],
    }
    recovered = event_ids(*tail[1:], *alien)
    assert stored_counts(database_url) == dict.fromkeys(recovered, 1)
    assert sorted(path.name for path in quarantine.iterdir()) == sorted([old.name, garbage.name])
    assert segment.exists()  # the backlog is the collectors' to replay, not this command's

    again = evothesis("spool", "replay-quarantine", env=env)
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["records"] == 3
    assert stored_counts(database_url) == dict.fromkeys(recovered, 1)  # still exactly once


def test_spool_commands_on_a_spool_that_was_never_used(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    env = spool_env(tmp_path, SPOOL_DIR=str(spool_dir))
    status = evothesis("spool", "status", env=env)
    assert status.returncode == 0, status.stderr
    body = orjson.loads(status.stdout)
    assert (body["segments"], body["bytes"], body["quarantined_files"]) == (0, 0, 0)
    listing = evothesis("spool", "quarantine", env=env)
    assert listing.stdout.strip() == "The spool's quarantine is empty."
    assert not spool_dir.exists()  # looking changes nothing


def test_the_spool_group_is_listed_in_the_help(tmp_path: Path) -> None:
    result = evothesis("spool", "--help", env=spool_env(tmp_path))
    assert result.returncode == 0
    for command in ("status", "quarantine", "replay-quarantine"):
        assert command in result.stdout
