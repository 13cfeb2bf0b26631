"""Who may read stored data and pipeline state, against a running collector: every such
endpoint, every kind of caller. Nothing that reads stored data is public outside
development, and in development only to a caller on the collector's own machine."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.servers import RunningCollector

#: Every endpoint that reads stored events, counts, pipeline state or metrics.
READERS = (
    "/events/recent?limit=1000",
    "/events/count",
    "/export/status",
    "/export/config",
    "/process/status",
    "/pipeline/status",
    "/metrics",
    "/export/replays",
    "/process/dead-letters",
    "/process/notices",
)
RUNS = ("/export/run", "/process/run", "/process/retry")
ADMIN = "admin-token-for-access-tests"
OPERATOR = "operator-token-for-access-tests"
StartCollector = Callable[..., RunningCollector]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("headers", "reads", "runs"),
    [
        pytest.param({}, 401, 401, id="nobody"),
        pytest.param(bearer("wrong"), 401, 401, id="wrong-token"),
        pytest.param({"Authorization": "Basic b3BlcmF0b3I6"}, 401, 401, id="basic-auth"),
        pytest.param(bearer(OPERATOR), 200, 401, id="operator-reads-only"),
        pytest.param(bearer(ADMIN), 200, 200, id="admin"),
    ],
)
def test_outside_development_reading_needs_a_token_and_running_the_admin_one(
    start_collector: StartCollector, headers: dict[str, str], reads: int, runs: int
) -> None:
    collector = start_collector(
        ENVIRONMENT="production",
        EVOTHESIS_ADMIN_TOKEN=ADMIN,
        EVOTHESIS_OPERATOR_TOKEN=OPERATOR,
    )
    with collector.client(operator=False, headers=headers) as http:
        for path in READERS:
            response = http.get(path)
            assert response.status_code == reads, path
            if reads == 401:
                assert response.json()["error"]["code"] == "unauthorized"
                assert "EVOTHESIS_OPERATOR_TOKEN" in response.json()["error"]["message"]
        for path in RUNS:
            assert http.post(path).status_code in ((runs,) if runs == 401 else (200, 502)), path
        health = http.get("/health")
        assert health.status_code == 200
        assert (set(health.json()) == {"status"}) == (reads == 401)


def test_without_tokens_nothing_is_readable_outside_development(
    start_collector: StartCollector,
) -> None:
    collector = start_collector(EVOTHESIS_OPERATOR_TOKEN=None)
    with collector.client(operator=False) as http:
        for path in READERS:
            response = http.get(path)
            assert response.status_code == 401, path
            assert "only a development process" in response.json()["error"]["message"]


def test_development_answers_its_own_machine_but_not_what_a_proxy_forwards(
    start_collector: StartCollector,
) -> None:
    collector = start_collector(ENVIRONMENT="development", EVOTHESIS_OPERATOR_TOKEN=None)
    with collector.client(operator=False) as local:
        for path in READERS:
            assert local.get(path).status_code == 200, path
        assert set(local.get("/health").json()) > {"status", "database"}
    # nginx on the same machine is a trusted proxy: the caller is who it forwarded for.
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    with collector.client(operator=False, headers=forwarded) as outsider:
        for path in READERS:
            assert outsider.get(path).status_code == 401, path
        for path in RUNS:
            assert outsider.post(path).status_code == 401, path
        assert outsider.get("/health").json() == {"status": "healthy"}


def test_development_with_a_token_configured_asks_for_it(
    start_collector: StartCollector,
) -> None:
    collector = start_collector(ENVIRONMENT="development")  # has the test operator token
    with collector.client(operator=False) as anonymous, collector.client() as operator:
        assert anonymous.get("/events/count").status_code == 401
        assert operator.get("/events/count").status_code == 200
