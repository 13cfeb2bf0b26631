"""The operators' endpoints the console is built on and that were added with it, over real
HTTP against PostgreSQL and a moto S3 server: the newest events filtered, failed events
with their reasons, a destination test, retry-now of a paused client (as the console's
button asks for it), and invoice lines (JSON and CSV). Each is also in the CLI
(tests/acceptance/test_cli_operator_actions.py)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from tests.support.postgres import register_client
from tests.support.s3 import S3, Buckets, client_credentials, s3_environment
from tests.support.servers import RunningCollector

ADMIN = "operator-actions-admin-token"
BEARER = {"Authorization": f"Bearer {ADMIN}"}
StartCollector = Callable[..., RunningCollector]


def post(collector: RunningCollector, site: str, *events: dict[str, object]) -> httpx.Response:
    """One batch from a page of ``site``."""
    body = {"eventType": "batch", "siteId": site, "visitorId": "vis_1", "events": list(events)}
    with collector.client(origin=f"https://{site}") as client:
        response = client.post("/collect", json=body)
    assert response.status_code == 200, response.text
    return response


def admin(collector: RunningCollector) -> httpx.Client:
    return httpx.Client(base_url=collector.url, timeout=60, headers=BEARER)


@pytest.fixture
def shops(database_url: str) -> None:
    register_client(database_url, "client_shop", "shop.example", "*.shop.example")
    register_client(database_url, "client_blog", "blog.example")


def test_recent_events_are_filtered_by_client_site_and_type(
    shops: None, start_collector: StartCollector
) -> None:
    collector = start_collector(EVOTHESIS_ADMIN_TOKEN=ADMIN)
    post(collector, "shop.example", {"eventType": "pageview"}, {"eventType": "click"})
    post(collector, "eu.shop.example", {"eventType": "pageview"})
    post(collector, "blog.example", {"eventType": "pageview"})
    with collector.client(origin=None) as reader:

        def recent(**filters: str) -> list[tuple[str, str, str]]:
            response = reader.get("/events/recent", params={"limit": 100, **filters})
            assert response.status_code == 200, response.text
            return sorted((e["client_id"], e["site_id"], e["event_type"]) for e in response.json())

        assert len(recent()) == 7  # three batches' envelopes and four events
        assert recent(client_id="client_shop", event_type="pageview") == [
            ("client_shop", "eu.shop.example", "pageview"),
            ("client_shop", "shop.example", "pageview"),
        ]
        # A site as an operator types it is read as the host it is stored as.
        assert recent(site_id="HTTPS://EU.Shop.Example:443/x", event_type="pageview") == [
            ("client_shop", "eu.shop.example", "pageview")
        ]
        assert recent(client_id="client_blog", site_id="shop.example") == []
        assert recent(client_id="no_such_client") == []
        refused = reader.get("/events/recent", params={"site_id": "not a host"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "bad_request")


def test_failed_events_are_listed_with_their_reasons_per_client(
    shops: None, start_collector: StartCollector
) -> None:
    collector = start_collector(EVOTHESIS_ADMIN_TOKEN=ADMIN)
    post(collector, "shop.example", {"eventType": "click", "eventData": "not an object"})
    post(collector, "blog.example", {"eventType": "pageview"}, {"eventData": {}})
    with collector.client(origin=None) as reader:
        failed = reader.get("/events/failed").json()
        assert [(f["client_id"], f["reason"], f["field"]) for f in failed] == [
            ("client_blog", "missing_field", "events[1].eventType"),
            ("client_shop", "wrong_type", "events[0].eventData"),
        ]
        assert failed[1]["payload"] == {"eventType": "click", "eventData": "not an object"}
        assert failed[1]["visitor_id"] == "vis_1"
        only = reader.get("/events/failed", params={"client_id": "client_shop"}).json()
        assert [f["client_id"] for f in only] == ["client_shop"]
    with collector.client(origin=None, operator=False) as anonymous:
        assert anonymous.get("/events/failed").status_code == 401


def test_a_destination_test_writes_and_deletes_or_shows_the_stores_error(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    bucket = s3.new_bucket("dest")
    register_client(
        database_url,
        "client_s3",
        "s3.example",
        export_destination=f"s3://{bucket}/exports",
        export_credentials=client_credentials(s3),
    )
    register_client(
        database_url,
        "client_odd",
        "odd.example",
        export_destination=f"s3://{bucket}",
        export_credentials={"password": "x"},
    )
    collector = start_collector(**s3_environment(s3, buckets), EVOTHESIS_ADMIN_TOKEN=ADMIN)
    with admin(collector) as client:
        works = client.post("/api/v1/clients/client_s3/destination/test")
        assert works.status_code == 200, works.text
        result = works.json()
        assert result["destination"]["url"] == f"s3://{bucket}/exports"
        assert result["destination"]["credentials"] is True
        assert "secret_access_key" not in works.text
        assert result["key"].startswith("evothesis-destination-test-")
        assert s3.keys(bucket) == []  # written, then deleted
        # Without its own destination: the operator's processed bucket, tested the same way.
        default = client.post("/api/v1/clients/client_test/destination/test").json()
        assert default["destination"]["url"] == f"s3://{buckets.processed}"
        assert s3.keys(buckets.processed) == []

        s3.client.delete_bucket(Bucket=bucket)
        gone = client.post("/api/v1/clients/client_s3/destination/test")
        assert gone.status_code == 502
        assert gone.json()["error"]["code"] == "object_store_error"
        assert (
            f"could not write s3://{bucket}/exports/evothesis-destination-test-"
            in (gone.json()["error"]["message"])
        )
        odd = client.post("/api/v1/clients/client_odd/destination/test")
        assert odd.status_code == 502
        assert "unknown export credential key(s) password" in odd.json()["error"]["message"]
        assert client.post("/api/v1/clients/nobody/destination/test").status_code == 404
    with collector.client(origin=None) as operator:  # the operator token only reads
        assert operator.post("/api/v1/clients/client_s3/destination/test").status_code == 401


def test_retry_now_delivers_a_paused_clients_files_at_once(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    """The console's retry button is POST /process/retry?client_id=: the store's error
    while the destination is still broken, the client's files once it works."""
    bucket = f"late-{uuid.uuid4().hex[:10]}"  # not there yet: deliveries fail
    register_client(
        database_url,
        "client_late",
        "late.example",
        export_destination=f"s3://{bucket}",
        export_credentials=client_credentials(s3),
    )
    collector = start_collector(**s3_environment(s3, buckets), EVOTHESIS_ADMIN_TOKEN=ADMIN)
    post(collector, "late.example", {"eventType": "pageview"})
    late = {"client_id": "client_late"}
    with admin(collector) as client:
        assert client.post("/export/run").status_code == 200
        failed = client.post("/process/run")
        assert failed.status_code == 502
        status = client.get("/process/status").json()
        assert status["paused_clients"] == ["client_late"]

        still = client.post("/process/retry", params=late)
        assert still.status_code == 502  # the bucket is still missing: the error, again
        assert still.json()["retried_deliveries"] == 1
        assert bucket in still.json()["error"]["message"]

        s3.client.create_bucket(Bucket=bucket)
        retried = client.post("/process/retry", params=late)
        assert retried.status_code == 200, retried.text
        answer = retried.json()
        assert (answer["retried_deliveries"], answer["process"]["deliveries"]) == (1, 1)
        assert "1 delivery(ies) and 0 replay(s) retried" in answer["message"]
        assert [k for k in s3.keys(bucket) if not k.endswith(".manifest.json")]
        assert client.get("/process/status").json()["paused_clients"] == []

        nothing = client.post("/process/retry", params=late)
        assert nothing.status_code == 200
        assert (nothing.json()["retried_deliveries"], nothing.json()["process"]["events"]) == (0, 0)
        too_long = client.post("/process/retry", params={"client_id": "x" * 201})
        assert too_long.status_code == 422
    with collector.client(origin=None) as operator:
        assert operator.post("/process/retry", params=late).status_code == 401


def test_invoice_lines_and_their_csv_come_from_the_same_usage(
    shops: None, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    collector = start_collector(
        **s3_environment(s3, buckets),
        EVOTHESIS_ADMIN_TOKEN=ADMIN,
        BILLING_RATE_PER_1000_EVENTS="2.5",
    )
    post(collector, "shop.example", *({"eventType": "click"} for _ in range(3)))
    post(collector, "blog.example", {"eventType": "pageview"})
    month = datetime.now(UTC).strftime("%Y-%m")
    with admin(collector) as client:
        assert client.post("/export/run").status_code == 200
        invoice = client.get("/billing/invoice", params={"month": month})
        assert invoice.status_code == 200, invoice.text
        body = invoice.json()
        lines = {line["client_id"]: line for line in body["lines"]}
        assert lines["client_shop"]["accepted_events"] == 3
        assert lines["client_shop"]["amount_usd"] == "0.01"  # 3 x 2.5 / 1000, half up
        assert lines["client_blog"]["accepted_events"] == 1
        assert body["rate_per_1000"] == "2.5" and body["reconciliation"]["reconciled"] is True
        file = client.get("/billing/invoice.csv", params={"month": month})
        assert file.headers["content-disposition"] == f'attachment; filename="invoice-{month}.csv"'
        rows = {row["client_id"]: row for row in csv.DictReader(io.StringIO(file.text))}
        assert {client_id: row["accepted_events"] for client_id, row in rows.items()} == {
            client_id: str(line["accepted_events"]) for client_id, line in lines.items()
        }
        one = client.get("/billing/invoice", params={"month": month, "client_id": "client_blog"})
        assert [line["client_id"] for line in one.json()["lines"]] == ["client_blog"]
        bad = client.get("/billing/invoice", params={"month": "2026-13"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_period")
