"""The seed documents' contract, replayed: what they tell a user to do works as written.

The five seed documents the product was specified from (kept outside this repository)
show users curl commands, docker compose commands, settings, paths and file shapes, and
users copy them. Each is transcribed here as the seed writes it and replayed against the
real thing, and its documented outcome is checked:

* **requests**: the seeds' ``curl`` commands, run by bash as written, with only the hosts
  replaced (``SEED_HOSTS``) by a real ``evothesis serve`` on the test PostgreSQL
  (``DATABASE_URL``), in development and without tokens, as the seeds' commands expect.
  An ``evothesis worker`` runs the export schedule beside it, as the compose stack's worker
  service does, and the seeds' names carry the settings (``CLIENT_S3_BUCKET`` with its
  ``CLIENT_S3_*`` keys on a moto S3, ``S3_BACKUP_BUCKET``, ``EXPORT_SCHEDULE=hourly``,
  ``CLIENT_NAME``, the pool sizes);
* **operations**: ``docker compose logs fastapi | grep …`` on that collector's log, and
  ``docker compose exec postgres psql -U postgres -c "…"`` with the test server's psql in
  the postgres container's environment (``PGDATABASE``, ``deploy/postgres/psqlrc``);
* **files**: the export shapes (seed 004's JSON document, JSON Lines, CSV, Parquet) after
  the seeds' ``POST /export/run`` and ``POST /process/run``;
* **deployment**: the seeds' env-file recipes through ``docker compose config`` (no Docker
  engine here): every setting of a copied, edited env file reaches the containers, and
  nothing else does;
* **settings**: the seeds' names are read, and names that disagree stop start-up.

Where DESIGN.md deliberately departs from a seed, the case checks the departure and says
so in its comment. The seeds' example data is replaced where it names things a test
stack does not have (``client_acme_corp``: the embedded default's ``client_test``).

Adding a case: a request goes into ``REQUESTS`` (or ``COLLECT`` when it stores events), an
operations command into ``OPERATIONS``, each as a ``Seed(documents, command, check)``; the
replay, the substitutions and the shared stack do the rest. One collector and one worker
serve the whole module.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyarrow.parquet as pq
import pytest

from evothesis.config import check_environment
from evothesis.export.formats import PARQUET_METADATA_KEY
from tests.support.cli import EVOTHESIS, clean_env, evothesis
from tests.support.compose import (
    APPLICATION_SERVICES,
    env_file_values,
    passed_through,
    resolved,
    service_environment,
)
from tests.support.loopback import free_port
from tests.support.nginx import ROOT
from tests.support.postgres import TEMPLATE, PostgresServer, fresh_database, postgres_binaries
from tests.support.s3 import ACCESS_KEY, REGION, S3, SECRET_KEY
from tests.support.seed import SEED_SETTINGS
from tests.support.servers import killed_on_exit, start_process, stop_process

#: The hosts the seeds' commands name, longest first, all meaning "the collector".
SEED_HOSTS = (
    "https://client-vm.evothesis.com",
    "http://localhost:8000",
    "http://vm-hostname:8000",
    "https://pixel-management-url.run.app",
    "http://localhost",
)
#: The seeds' example client, which a test stack has as the embedded default's.
SEED_EXAMPLE_CLIENT = "client_acme_corp"
#: Clients of the other export formats (``json`` is the development client's).
FORMAT_CLIENTS = {"client_jsonl": "jsonl", "client_csv": "csv", "client_parquet": "parquet"}
#: The columns seed 004's export examples show, in their order (ours add more between).
SEED_EVENT_COLUMNS = (
    "id",
    "event_id",
    "event_type",
    "session_id",
    "visitor_id",
    "site_id",
    "timestamp",
    "url",
    "path",
    "raw_event_data",
)
#: How long the stack may take for what the seeds expect at once (a file, a round).
SETTLE_SECONDS = 60


# ------------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    url: str
    #: The shell the seeds' commands run in (also the collector's and the worker's).
    env: dict[str, str]
    #: What `docker compose logs fastapi` shows.
    log: Path
    database_url: str
    s3: S3
    #: CLIENT_S3_BUCKET: the processed bucket, on moto, with the CLIENT_S3_* keys.
    client_bucket: str
    #: S3_BACKUP_BUCKET: metering records, in a folder.
    backup_folder: Path


@pytest.fixture(scope="module")
def stack(
    postgres: PostgresServer, s3: S3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """`evothesis serve` and `evothesis worker` on one database, configured by the seeds'
    names; the clients of the other export formats registered with the CLI."""
    work = tmp_path_factory.mktemp("seed-contract")
    client_bucket = s3.new_bucket("client-analytics-bucket")
    backup_folder = work / "evothesis-backup-bucket"
    with fresh_database(postgres, template=TEMPLATE) as database_url:
        env = clean_env(
            work / "data",
            DATABASE_URL=database_url,
            ENVIRONMENT="development",
            LOG_LEVEL="INFO",
            EXPORT_IN_SERVE="false",
            EXPORT_SCHEDULE="hourly",
            EXPORT_FORMAT="json",
            CLIENT_NAME="client-company",
            CLIENT_S3_BUCKET=client_bucket,
            CLIENT_S3_ACCESS_KEY=ACCESS_KEY,
            CLIENT_S3_SECRET_KEY=SECRET_KEY,
            S3_ENDPOINT_URL=s3.endpoint,
            S3_REGION=REGION,
            S3_BACKUP_BUCKET=backup_folder.as_uri(),
            DATABASE_POOL_SIZE="3",
            DATABASE_MAX_OVERFLOW="2",
        )
        for client_id, fmt in FORMAT_CLIENTS.items():
            domain = f"{fmt}.example"
            added = evothesis(
                *("clients", "add", client_id, "--name", client_id, "-d", domain),
                *("--export-format", fmt),
                env=env,
            )
            assert added.returncode == 0, added.stderr
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = work / "fastapi.log"
        serve = start_process(
            [EVOTHESIS, "serve", "--port", str(port)],
            env=env,
            log=log,
            health_url=f"{url}/health",
        )
        with killed_on_exit(serve):
            with (work / "worker.log").open("ab") as output:
                worker = subprocess.Popen(
                    [EVOTHESIS, "worker"], env=env, stdout=output, stderr=subprocess.STDOUT
                )
            with killed_on_exit(worker):
                running = Stack(url, env, log, database_url, s3, client_bucket, backup_folder)
                _wait_for_the_workers_first_round(running)
                yield running
                assert stop_process(worker) == 0
            assert stop_process(serve) == 0


def _wait_for_the_workers_first_round(stack: Stack) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        scheduler = httpx.get(f"{stack.url}/pipeline/status", timeout=10).json()["scheduler"]
        if scheduler["running"] and scheduler["last_round_at"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the worker recorded no round in {SETTLE_SECONDS} s")


# ------------------------------------------------------------------------------ replaying


@dataclass(frozen=True)
class Seed:
    """One thing a seed document shows: ``documents`` names them (``000``…``004``),
    ``command`` is as written there, ``check`` gets its output."""

    documents: str
    command: str
    check: Callable[[str], None]

    def __str__(self) -> str:
        return f"{self.documents}: {' '.join(self.command.split())[:100]}"


def replay(stack: Stack, command: str) -> str:
    """Run a seed's command in bash, as a user pastes it (pipes fail as a whole)."""
    for host in SEED_HOSTS:
        command = command.replace(host, stack.url)
    command = command.replace(SEED_EXAMPLE_CLIENT, "client_test")
    command = command.replace("docker compose logs fastapi", f"cat {stack.log}")
    env = {**stack.env, "PIXEL_MANAGEMENT_URL": stack.url}
    if command.startswith("docker compose exec postgres "):
        command = command.removeprefix("docker compose exec postgres ")
        env.update(postgres_container_env(stack.database_url))
    if command.startswith("open "):  # the seeds' browser step, as the browser fetches it
        command = "curl -s " + command.removeprefix("open ")
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail\n{command}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    return result.stdout


def postgres_container_env(database_url: str) -> dict[str, str]:
    """What `docker compose exec postgres` runs with: the compose file's PGDATABASE and
    PSQLRC (here the test server's socket, database and psql)."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    return {
        "PATH": f"{postgres_binaries()}:{os.environ['PATH']}",
        "PGHOST": query.get("host", [parts.hostname or ""])[0],
        "PGPORT": str(parts.port or query.get("port", ["5432"])[0]),
        "PGDATABASE": parts.path.lstrip("/"),
        "PSQLRC": str(ROOT / "deploy" / "postgres" / "psqlrc"),
    }


def json_values(text: str) -> list[Any]:
    """Every JSON value in ``text`` (what jq prints: values one after another)."""
    decoder = json.JSONDecoder()
    values, position, text = [], 0, text.strip()
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        while position < len(text) and text[position].isspace():
            position += 1
    return values


def one_json(text: str) -> Any:
    [value] = json_values(text)
    return value


# ------------------------------------------------------------------------ checks (outputs)


def stored(count: int) -> Callable[[str], None]:
    """The seed's answer to /collect: success, the count with the envelope, the client."""

    def check(output: str) -> None:
        answer = one_json(output)
        assert answer["status"] == "success", answer
        assert answer["events_processed"] == count
        assert answer["message"].startswith(f"{count} event(s) received and stored")
        assert answer["client_id"] == "client_test"
        assert answer["timestamp"]
        if count == 1:  # seed 004: a single event's answer carries its id
            assert uuid.UUID(answer["event_id"])

    return check


def refused_without_site(output: str) -> None:
    """DESIGN departure: a batch without siteId cannot be attributed to a client, so it is a
    clear 4xx naming the field instead of the seed's implied success."""
    answer = one_json(output)
    assert answer["status"] == "error"
    assert answer["error"]["code"] == "invalid_event"
    assert answer["error"]["field"] == "siteId"


def names_what_it_needs(output: str) -> None:
    """Seed 000's "endpoint reachable" check, a bare GET: a JSON error naming the field the
    image pixel needs first, not an HTML page or an empty answer."""
    answer = one_json(output)
    assert answer["status"] == "error"
    assert answer["error"]["code"] == "invalid_event"
    assert answer["error"]["field"] == "eventType"


def healthy(output: str) -> None:
    answer = one_json(output)
    assert answer["status"] == "healthy"
    assert answer["database"] == "connected"
    assert answer["timestamp"]


def is_connected(output: str) -> None:
    assert one_json(output) == "connected"


def counted(output: str) -> None:
    answer = one_json(output)
    assert answer["count"] >= COLLECTED_EVENTS
    assert answer["by_client"]["client_test"] >= COLLECTED_EVENTS
    assert answer["buffer"]["count"] <= answer["count"]
    assert set(answer["definitions"]) == {"count", "buffer"}


def recent_events(output: str) -> None:
    events = one_json(output)
    assert 1 <= len(events) <= 10
    assert all(event["client_id"] for event in events)
    assert "client_test" in {event["client_id"] for event in events}


def recent_at_most_ten(output: str) -> None:
    assert 1 <= len(one_json(output)) <= 10


def some_attributed(output: str) -> None:
    events = json_values(output)
    assert events and all(event["client_id"] == "client_test" for event in events)


def none_unattributed(output: str) -> None:
    assert json_values(output) == []


def fields_present(*names: str) -> Callable[[str], None]:
    def check(output: str) -> None:
        objects = json_values(output)
        assert objects
        for item in objects:
            assert list(item) == list(names)
            assert all(item[name] is not None for name in names), item

    return check


def domain_config(output: str) -> None:
    assert one_json(output)["client_id"] == "client_test"


def unknown_domain(output: str) -> None:
    assert one_json(output)["error"]["code"] == "not_found"


def tracker_of(client_id: str) -> Callable[[str], None]:
    def check(output: str) -> None:
        assert client_id in output and "/collect" in output

    return check


def generic_tracker(output: str) -> None:
    assert "EvothesisConfig" in output and "/collect" in output


def pixel_gif(output: str) -> None:
    assert output == "200 image/gif"


def demo_page(output: str) -> None:
    assert "<html" in output.lower() and "tracking.js" in output


def export_status(output: str) -> None:
    status = one_json(output)
    for key in ("last_run", "lag_seconds", "pending_rows", "exported_events", "failed_batches"):
        assert key in status, key


def export_config(output: str) -> None:
    """Seed 004's VM-per-client names, as the pipeline uses them."""
    config = one_json(output)
    assert config["client_name"] == "client-company"
    assert config["buckets"]["processed"]["url"].startswith("s3://client-analytics-bucket-")
    assert config["buckets"]["processed"]["credentials"] is True  # CLIENT_S3_*
    assert config["buckets"]["backup"]["url"].endswith("/evothesis-backup-bucket")
    assert config["default_format"] == "json"
    # EXPORT_SCHEDULE=hourly, seed 004's "Default export frequency": when clients without a
    # schedule of their own get their files; the raw export runs every EXPORT_INTERVAL.
    assert config["default_schedule"] == "hourly"
    assert config["interval_seconds"] == 60


def process_status(output: str) -> None:
    status = one_json(output)
    assert "unprocessed_objects" in status and "clients" in status


def pipeline_status(output: str) -> None:
    """The worker exports; this collector does not (EXPORT_IN_SERVE=false), and says who
    does (its rounds every EXPORT_INTERVAL, by default a minute)."""
    scheduler = one_json(output)["scheduler"]
    assert scheduler["running"] is True
    assert scheduler["ran_by"]["role"] == "worker"
    assert scheduler["last_round_at"] and scheduler["next_due_at"]
    assert [runner["interval_seconds"] for runner in scheduler["runners"]] == [60]


def ran(kind: str) -> Callable[[str], None]:
    def check(output: str) -> None:
        answer = one_json(output)
        assert answer["status"] == "success", answer
        assert kind in answer

    return check


def lines_with(*patterns: str) -> Callable[[str], None]:
    def check(output: str) -> None:
        found = output.splitlines()
        assert found
        for pattern in patterns:
            assert any(re.search(pattern, line) for line in found), (pattern, found[:5])

    return check


def at_least(minimum: int) -> Callable[[str], None]:
    def check(output: str) -> None:
        assert int(output.strip()) >= minimum

    return check


def psql_rows(*needles: str) -> Callable[[str], None]:
    def check(output: str) -> None:
        assert re.search(r"\(\d+ rows?\)", output), output
        for needle in needles:
            assert needle in output, (needle, output)

    return check


def inserts_counted(output: str) -> None:
    [row] = [line for line in output.splitlines() if "events_log" in line]
    schema, table, inserted, _, _ = (cell.strip() for cell in row.split("|"))
    assert (schema, table) == ("public", "events_log") and int(inserted) > 0


def accepting(output: str) -> None:
    assert "accepting connections" in output


# -------------------------------------------------------------------------------- the cases

#: Requests that store events (replayed first, once; ``collected`` holds their outputs).
COLLECT = (
    Seed(
        "001",
        """curl -X POST http://localhost:8000/collect -H "Content-Type: application/json" \\
  -d '{"eventType":"test","sessionId":"test_session","siteId":"localhost"}'""",
        stored(1),
    ),
    Seed(
        "000 001",
        """curl -X POST http://localhost:8000/collect -H "Content-Type: application/json" \\
  -d '{"eventType":"batch","sessionId":"test","siteId":"localhost","events":[{"eventType":"click"},{"eventType":"scroll"}]}'""",  # noqa: E501
        stored(3),
    ),
    Seed(
        "002",
        """curl -X POST http://localhost:8000/collect \\
  -H "Content-Type: application/json" \\
  -d '{
    "eventType": "test_single",
    "sessionId": "test_session_001",
    "siteId": "localhost"
  }'""",
        stored(1),
    ),
    Seed(
        "002",
        """curl -X POST http://localhost:8000/collect \\
  -H "Content-Type: application/json" \\
  -d '{
    "eventType": "batch",
    "sessionId": "test_session_002",
    "siteId": "localhost",
    "events": [
      {"eventType": "click", "eventData": {"element": "button1"}},
      {"eventType": "scroll", "eventData": {"depth": 25}},
      {"eventType": "form_focus", "eventData": {"field": "email"}}
    ]
  }'""",
        stored(4),
    ),
    Seed(
        "003",
        """curl -X POST http://localhost:8000/collect \\
  -H "Content-Type: application/json" \\
  -d '{
    "eventType": "batch",
    "sessionId": "test_session",
    "siteId": "localhost",
    "events": [
      {"eventType": "click", "eventData": {"element": "test1"}},
      {"eventType": "scroll", "eventData": {"depth": 50}}
    ]
  }'""",
        stored(3),
    ),
    Seed(
        "004",
        """curl -X POST http://localhost:8000/collect \\
  -H "Content-Type: application/json" \\
  -d '{
    "eventType": "test",
    "sessionId": "test_session",
    "visitorId": "test_visitor",
    "siteId": "localhost"
  }'""",
        stored(1),
    ),
    Seed(
        "001",
        """curl -X POST http://localhost:8000/collect -H "Content-Type: application/json" \\
  -d '{"eventType":"batch","events":[{"eventType":"test1"},{"eventType":"test2"}]}'""",
        refused_without_site,
    ),
    # Seed 004's "query parameter support": the image pixel of the README's <noscript>.
    Seed(
        "004",
        "curl -s -o /dev/null -w '%{http_code} %{content_type}' "
        "'http://localhost:8000/collect?eventType=pageview&siteId=localhost&url=http%3A%2F%2Flocalhost%2F'",
        pixel_gif,
    ),
)
#: Events the accepted commands above stored (the seed's count: envelopes included).
COLLECTED_EVENTS = 1 + 3 + 1 + 4 + 3 + 1 + 1

#: Requests that read (after ``COLLECT``).
REQUESTS = (
    Seed("000 001 002 004", "curl http://localhost:8000/health", healthy),
    Seed("000", "curl http://localhost:8000/collect", names_what_it_needs),
    Seed("002", "curl http://localhost:8000/health | jq '.database'", is_connected),
    Seed("001", "curl http://vm-hostname:8000/events/count", counted),
    Seed("000 002 004", "curl http://localhost:8000/events/recent", recent_events),
    Seed("002", "curl http://localhost:8000/events/recent?limit=10", recent_at_most_ten),
    Seed(
        "000",
        "curl http://localhost:8000/events/recent | jq '.[] | select(.client_id != null)'",
        some_attributed,
    ),
    Seed(
        "002 003",
        "curl http://localhost:8000/events/recent | jq '.[] | select(.client_id == null)'",
        none_unattributed,
    ),
    Seed(
        "002",
        "curl http://localhost:8000/events/recent | jq '.[] | {eventType, client_id, created_at}'",
        fields_present("eventType", "client_id", "created_at"),
    ),
    Seed(
        "003",
        "curl http://localhost:8000/events/recent | jq '.[] | {eventType, client_id, siteId}'",
        fields_present("eventType", "client_id", "siteId"),
    ),
    Seed("000", "curl $PIXEL_MANAGEMENT_URL/api/v1/config/domain/localhost", domain_config),
    Seed(
        "003",
        "curl https://pixel-management-url.run.app/api/v1/config/domain/evil-site.com",
        unknown_domain,
    ),
    Seed(
        "003",
        "curl http://localhost/pixel/client_acme_corp/tracking.js",
        tracker_of("client_test"),
    ),
    Seed("001 003", "open http://localhost", demo_page),
    # Seed 001's "Pixel Deployment" tag loads this (a browser runs it in
    # tests/acceptance/test_seed_snippets_browser.py).
    Seed("001", "curl https://client-vm.evothesis.com/js/tracking.js", generic_tracker),
    Seed("000 001 004", "curl http://localhost:8000/export/status", export_status),
    Seed("001", "curl http://localhost:8000/export/config", export_config),
    Seed("002", "curl http://localhost:8000/process/status", process_status),
    Seed("002", "curl http://localhost:8000/pipeline/status", pipeline_status),
)

#: The seeds' export triggers (replayed by ``exported``, after every event is in).
EXPORT_RUNS = (
    Seed("001 002 004", "curl -X POST http://localhost:8000/export/run", ran("export")),
    Seed("002", "curl -X POST http://localhost:8000/process/run", ran("process")),
)

#: Operations commands (after the exports, so that every kind of line is in the log).
OPERATIONS = (
    Seed(
        "000 001 002 003",
        'docker compose logs fastapi | grep "Bulk inserted"',
        lines_with(
            r"INFO:evothesis\.ingest:Bulk inserted \d+ events for client client_test "
            r"from site localhost"
        ),
    ),
    Seed(
        "000 001 002 003",
        'docker compose logs fastapi | grep "Processing batch"',
        lines_with(r"Processing batch with 3 individual events for client client_test"),
    ),
    Seed(
        "000 002 003",
        'docker compose logs fastapi | grep "Domain.*authorized"',
        lines_with(r"Domain localhost authorized for client client_test"),
    ),
    Seed(
        "000 001 002",
        'docker compose logs fastapi | grep -i "pool"',
        lines_with(r"Connection pool open: \d+ connection\(s\), keeps 3, at most 5"),
    ),
    Seed("002", 'docker compose logs fastapi | grep "Bulk inserted" | wc -l', at_least(1)),
    Seed("002", 'docker compose logs fastapi | grep "authorized for client" | wc -l', at_least(1)),
    Seed(
        "003",
        'docker compose logs fastapi | grep "batch with" | grep -o "with [0-9]*" | sort | uniq -c',
        lines_with(r"^\s*\d+ with 3$", r"^\s*\d+ with 2$"),
    ),
    Seed("003", 'docker compose logs fastapi | grep "client_test"', lines_with("client_test")),
    Seed(
        "004",
        "docker compose logs fastapi | grep -i s3",
        lines_with(r"Successfully uploaded \d+ events to raw S3: raw-events/"),
    ),
    Seed(
        "000 001",
        'docker compose exec postgres psql -U postgres -c "SHOW shared_buffers;"',
        psql_rows("shared_buffers"),
    ),
    Seed(
        "000 001",
        'docker compose exec postgres psql -U postgres -c "SHOW work_mem;"',
        psql_rows("work_mem"),
    ),
    Seed(
        "000",
        """docker compose exec postgres psql -U postgres -c "
SELECT client_id, COUNT(*) as events,
       DATE_TRUNC('hour', created_at) as hour
FROM events_log
GROUP BY client_id, hour
ORDER BY hour DESC LIMIT 20;\"""",
        psql_rows("client_test", "client_csv"),
    ),
    Seed(
        "002",
        """docker compose exec postgres psql -U postgres -c "
SELECT client_id, COUNT(*), MIN(created_at), MAX(created_at)
FROM events_log
WHERE created_at > NOW() - INTERVAL '1 hour'
GROUP BY client_id;\"""",
        psql_rows("client_test"),
    ),
    Seed(
        "002",
        """docker compose exec postgres psql -U postgres -c "
SELECT schemaname, tablename, n_tup_ins, n_tup_upd, n_tup_del
FROM pg_stat_user_tables
WHERE tablename = 'events_log';\"""",
        inserts_counted,
    ),
    Seed("004", "docker compose exec postgres pg_isready -U postgres", accepting),
)


# ------------------------------------------------------------------------- replayed stages


@pytest.fixture(scope="module")
def collected(stack: Stack) -> dict[Seed, str]:
    """Every ``COLLECT`` command replayed once, in order: its output."""
    return {seed: replay(stack, seed.command) for seed in COLLECT}


@dataclass
class Exported:
    runs: dict[Seed, str]
    #: processed key -> bytes, of every client (manifests included).
    files: dict[str, bytes]
    #: Events stored per client when the runs started.
    stored: dict[str, int]


@pytest.fixture(scope="module")
def exported(stack: Stack, collected: dict[Seed, str]) -> Exported:
    """Events for the clients of the other formats, then the seeds' export and processing
    runs; every client's files once they hold every event (the worker may be processing
    some of them: its work is waited for, within ``SETTLE_SECONDS``)."""
    for client_id, fmt in FORMAT_CLIENTS.items():
        site = f"{fmt}.example"
        body = {
            "eventType": "batch",
            "sessionId": "sess_abc123",
            "visitorId": "vis_xyz789",
            "siteId": site,
            "url": f"https://{site}/page",
            "events": [
                {"eventType": "click", "eventData": {"element": "button1"}},
                {"eventType": "scroll", "eventData": {"depth": 25}},
            ],
        }
        answer = httpx.post(f"{stack.url}/collect", json=body, timeout=10).json()
        assert answer["client_id"] == client_id and answer["events_processed"] == 3
    counts = httpx.get(f"{stack.url}/events/count", timeout=10).json()["by_client"]
    runs = {seed: replay(stack, seed.command) for seed in EXPORT_RUNS}
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        files = {
            key: stack.s3.get(stack.client_bucket, key)
            for key in stack.s3.keys(stack.client_bucket, "processed-events/")
        }
        if all(
            sum(len(rows) for rows in client_rows(files, client_id).values()) == count
            for client_id, count in counts.items()
        ):
            return Exported(runs, files, counts)
        assert time.monotonic() < deadline, f"files incomplete: {sorted(files)}"
        time.sleep(0.5)


def client_rows(files: dict[str, bytes], client_id: str) -> dict[str, list[dict[str, Any]]]:
    """A client's data files (manifests left out), each as its rows."""
    rows = {}
    for key, data in files.items():
        if key.startswith(f"processed-events/{client_id}/") and not key.endswith(".manifest.json"):
            rows[key] = decode(key, data)
    return rows


def decode(key: str, data: bytes) -> list[dict[str, Any]]:
    if key.endswith(".json"):
        events: list[dict[str, Any]] = json.loads(data)["events"]
        return events
    if key.endswith(".jsonl"):
        return [json.loads(line) for line in data.splitlines()]
    if key.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    return pq.read_table(io.BytesIO(data)).to_pylist()


# ------------------------------------------------------------------------------- requests


@pytest.mark.parametrize("seed", COLLECT, ids=str)
def test_collect_commands(seed: Seed, collected: dict[Seed, str]) -> None:
    seed.check(collected[seed])


@pytest.mark.parametrize("seed", REQUESTS, ids=str)
def test_requests(seed: Seed, stack: Stack, collected: dict[Seed, str]) -> None:
    seed.check(replay(stack, seed.command))


@pytest.mark.parametrize("seed", EXPORT_RUNS, ids=str)
def test_export_runs(seed: Seed, exported: Exported) -> None:
    seed.check(exported.runs[seed])


@pytest.mark.parametrize("seed", OPERATIONS, ids=str)
def test_operations(seed: Seed, stack: Stack, exported: Exported) -> None:
    seed.check(replay(stack, seed.command))


def test_the_count_is_all_time_and_says_which_number_is_which(
    stack: Stack, exported: Exported
) -> None:
    """Seed 001: "GET /events/count: Total event count for monitoring and billing"."""
    counts = httpx.get(f"{stack.url}/events/count", timeout=10).json()
    assert counts["by_client"]["client_test"] == COLLECTED_EVENTS
    assert counts["by_client"] == exported.stored
    assert counts["count"] == sum(exported.stored.values())
    assert counts["buffer"]["count"] <= counts["count"]
    assert "all time" in counts["definitions"]["count"]


def test_the_pool_is_in_the_metrics(stack: Stack) -> None:
    """Seeds 000, 002: "Monitor connection pool", with DATABASE_POOL_SIZE and
    DATABASE_MAX_OVERFLOW sizing it."""
    text = httpx.get(f"{stack.url}/metrics", timeout=10).text
    values = dict(
        line.split(" ", 1) for line in text.splitlines() if line.startswith("evothesis_db_pool")
    )
    assert values["evothesis_db_pool_max_connections"] == "5"
    for name in ("connections", "connections_in_use", "waiting", "waits_total"):
        assert f"evothesis_db_pool_{name}" in values, name


# ---------------------------------------------------------------------------------- files


def test_the_json_export_is_seed_004s_document(exported: Exported) -> None:
    """``{"export_metadata": {export_id, export_time, event_count, time_range}, "events":
    [...]}``, each event with the seed's keys and ``raw_event_data`` an object."""
    files = client_rows(exported.files, "client_test")
    assert files and all(key.endswith(".json") for key in files)
    for key in files:
        document = json.loads(exported.files[key])
        assert list(document) == ["export_metadata", "events"]
        metadata = document["export_metadata"]
        for name in ("export_id", "export_time", "event_count", "time_range"):
            assert name in metadata, name
        assert set(metadata["time_range"]) == {"start", "end"}
        assert metadata["event_count"] == len(document["events"])
        for event in document["events"]:
            assert [name for name in event if name in SEED_EVENT_COLUMNS] == list(
                SEED_EVENT_COLUMNS
            )
            assert isinstance(event["raw_event_data"], dict)
            assert event["client_id"] == "client_test"


def test_json_lines_is_its_own_format(exported: Exported) -> None:
    files = client_rows(exported.files, "client_jsonl")
    assert files and all(key.endswith(".jsonl") for key in files)
    for key, rows in files.items():
        assert len(rows) == len(exported.files[key].splitlines())
        for row in rows:
            assert [name for name in row if name in SEED_EVENT_COLUMNS] == list(SEED_EVENT_COLUMNS)
            assert isinstance(row["raw_event_data"], dict)


def test_csv_has_the_seeds_columns_in_their_order(exported: Exported) -> None:
    files = client_rows(exported.files, "client_csv")
    assert files and all(key.endswith(".csv") for key in files)
    for key, rows in files.items():
        header = exported.files[key].split(b"\r\n", 1)[0].decode().split(",")
        assert [name for name in header if name in SEED_EVENT_COLUMNS] == list(SEED_EVENT_COLUMNS)
        assert all(json.loads(row["raw_event_data"]) for row in rows)


def test_parquet_is_columnar_with_the_seeds_columns(exported: Exported) -> None:
    files = client_rows(exported.files, "client_parquet")
    assert files and all(key.endswith(".parquet") for key in files)
    for key in files:
        table = pq.read_table(io.BytesIO(exported.files[key]))
        assert [name for name in table.column_names if name in SEED_EVENT_COLUMNS] == list(
            SEED_EVENT_COLUMNS
        )
        metadata = json.loads(table.schema.metadata[PARQUET_METADATA_KEY])
        assert metadata["event_count"] == table.num_rows


def test_metering_goes_to_the_backup_bucket_seed_004_names(
    stack: Stack, exported: Exported
) -> None:
    """S3_BACKUP_BUCKET (seed 004's name): billing's records land there, not in a folder of
    the collector's data directory."""
    records = [
        json.loads(line)
        for path in (stack.backup_folder / "metering").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sum(r["events"] for r in records) == sum(exported.stored.values())
    assert not (Path(stack.env["EVOTHESIS_DATA_DIR"]) / "buckets" / "backup").exists()


# ------------------------------------------------------------------------------- settings


def test_every_seed_setting_name_is_in_the_help() -> None:
    """``evothesis --help`` lists every variable it reads, the seeds' other names too."""
    result = evothesis("--help", env=clean_env(Path("/nonexistent")), timeout=60)
    assert result.returncode == 0, result.stderr
    for name in SEED_SETTINGS:
        assert name in result.stdout, name


def test_two_names_of_one_setting_that_disagree_stop_start_up(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path, CLIENT_S3_BUCKET="client-analytics-bucket", PROCESSED_S3_BUCKET="other"
    )
    result = evothesis("serve", env=env, timeout=60)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "PROCESSED_S3_BUCKET and CLIENT_S3_BUCKET" in line


def test_a_misspelt_setting_is_warned_about(tmp_path: Path) -> None:
    env = clean_env(tmp_path, EXPORT_INTERVAL="off", EXPORT_FORMATT="csv")
    result = evothesis("worker", env=env, timeout=60)
    assert "WARNING:evothesis.config:Nothing reads EXPORT_FORMATT" in result.stderr


# ----------------------------------------------------------------------------- deployment


def edit(path: Path, values: dict[str, str]) -> None:
    """What a user does to a copied env file: set each value on its line (uncommenting it
    when the template leaves it commented), or add the line."""
    lines = path.read_text().splitlines()
    for name, value in values.items():
        pattern = re.compile(rf"^(# ?)?{re.escape(name)}=")
        for number, line in enumerate(lines):
            if pattern.match(line):
                lines[number] = f"{name}={value}"
                break
        else:
            lines.append(f"{name}={value}")
    path.write_text("\n".join(lines) + "\n")


#: Seed 004's client settings and seed 000's pixel-management URL, as a user fills them in.
CLIENT_EDITS = {
    "CLIENT_S3_BUCKET": "client-analytics-bucket",
    "CLIENT_S3_ACCESS_KEY": "AKIACLIENTEXAMPLE",
    "CLIENT_S3_SECRET_KEY": "client-secret-example",
    "PIXEL_MANAGEMENT_URL": "https://pixel-management-url.run.app",
    "BACKUP_S3_BUCKET": "evothesis-analytics-backup",
    "EXPORT_SCHEDULE": "hourly",
    "CLIENT_NAME": "client-company",
}


@pytest.mark.parametrize(
    ("source", "copy", "edits"),
    [
        # Seeds 001 and 004: the client recipe.
        (".env.development", ".env.client", CLIENT_EDITS),
        # Seed 000: production from the development template.
        (".env.development", ".env.production", CLIENT_EDITS),
        # The same from the production template, its empty values filled in.
        (
            ".env.production",
            ".env.client",
            {
                **CLIENT_EDITS,
                "POSTGRES_PASSWORD": "from-the-operator",
                "EVOTHESIS_SECRET_KEY": "aozwL6s9st98KuPuHHM841rK4AbpxYoWv1Mwxh5fCcs=",
                "PIXEL_MANAGEMENT_TOKEN": "service-token",
                "EVOTHESIS_ADMIN_TOKEN": "admin-token",
                "EVOTHESIS_OPERATOR_TOKEN": "operator-token",
            },
        ),
    ],
)
def test_a_copied_and_edited_env_file_is_what_the_containers_get(
    source: str, copy: str, edits: dict[str, str], tmp_path: Path
) -> None:
    """``cp SOURCE COPY``, edit it, ``docker compose --env-file COPY up -d``: each
    application container gets exactly the settings of the edited copy."""
    edited = tmp_path / copy
    shutil.copyfile(ROOT / source, edited)
    edit(edited, edits)
    # The edited file starts: no two names of one setting disagree in it.
    assert check_environment(env_file_values(edited)).conflicts == ()
    config = resolved(edited)
    expected = {
        name: value for name, value in env_file_values(edited).items() if name in passed_through()
    }
    for service in APPLICATION_SERVICES:
        got = service_environment(config, service)
        assert {name: got[name] for name in got if name in passed_through()} == expected
        for name, value in edits.items():
            if name in passed_through():
                assert got[name] == value, (service, name)
    postgres = " ".join(config["services"]["postgres"]["command"])
    assert f"shared_buffers={env_file_values(edited)['POSTGRES_SHARED_BUFFERS']}" in postgres


def test_values_exported_in_the_shell_reach_the_stack(tmp_path: Path) -> None:
    """Seed 001: ``export POSTGRES_SHARED_BUFFERS=2GB``, ``export CLIENT_S3_BUCKET=…``, then
    compose: the shell's value wins over the file's, as for every compose variable."""
    config = resolved(
        ".env.development",
        POSTGRES_SHARED_BUFFERS="2GB",
        CLIENT_S3_BUCKET="client-analytics-bucket",
    )
    assert "shared_buffers=2GB" in config["services"]["postgres"]["command"]
    assert service_environment(config, "fastapi")["CLIENT_S3_BUCKET"] == "client-analytics-bucket"


@pytest.mark.parametrize("env_file", [".env.development", ".env.production"])
def test_the_seeds_stack_has_their_services_ports_and_role(env_file: str) -> None:
    """``docker compose --env-file .env.development up -d``: postgres, fastapi on 8000 (the
    name `docker compose logs fastapi` uses), nginx on 80; the postgres role the seeds'
    ``psql -U postgres`` uses."""
    config = resolved(env_file, POSTGRES_PASSWORD="from-the-operator")
    services = config["services"]
    assert {"postgres", "fastapi", "nginx"} <= set(services)
    assert "8000" in container_ports(services["fastapi"])
    assert "80" in container_ports(services["nginx"])
    assert service_environment(config, "postgres")["POSTGRES_USER"] == "postgres"


def container_ports(service: dict[str, Any]) -> set[str]:
    """The container side of a service's published ports, in either of Compose's spellings
    (``{published, target}``, or ``host:published:target/proto``)."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(str(port["target"]))
        else:
            ports.add(str(port).split("/")[0].rsplit(":", 1)[-1])
    return ports


def test_the_license_is_mit_as_the_seeds_say() -> None:
    """Seed 001: "MIT License - See LICENSE file for details"."""
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
