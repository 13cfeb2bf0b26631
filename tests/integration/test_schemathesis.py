"""Schemathesis against a real collector's own /openapi.json: no input makes it answer 5xx.

Every documented operation is exercised with generated requests, valid ("positive") and
invalid ("negative"), as an authenticated admin and as a page of the development site, so
generation reaches past the token and Origin checks into the handlers. The guarantee
checked is DESIGN.md's "bad input gets a clear 4xx ... and never a 500"; the run is bounded
(few examples, no deadline) so the file takes well under a minute.

Why not ``schemathesis.pytest.from_fixture``: with pytest 9.2 it fails on the removed
``Node._nodeid`` (schemathesis 4.32), and the schema is only known once a collector runs.
So operations are listed at collection time from ``create_app``'s own schema (no server
needed), and each test drives the operation from the schema the running collector serves,
with schemathesis strategies under Hypothesis's ``@given``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case

from evothesis.app import create_app
from evothesis.config import Settings
from tests.support.postgres import TEMPLATE, PostgresServer, fresh_database, register_client
from tests.support.servers import LOCAL_ORIGIN, RunningCollector, run_collector

ADMIN_TOKEN = "schemathesis-admin-token"
#: A client the generated admin calls may change, deactivate and re-key.
FUZZ_CLIENT = "client_fuzz"
#: Every request carries both: without the token the admin API only answers 401, and
#: /collect refuses senders without an Origin (or write key); a fuzzer that only ever
#: meets the guards tests nothing behind them.
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Origin": LOCAL_ORIGIN}
#: A client's write key, once the module's collector has registered it: a client's own
#: endpoints answer only 401 without it.
FUZZ_WRITE_KEY: list[str] = []
#: Generated requests per operation: enough to reach every parameter's edges.
MAX_EXAMPLES = 40
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch"})


def _documented_operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation, from the app's schema; nothing is started."""
    settings = Settings(_env_file=None, ENVIRONMENT="test", EVOTHESIS_ADMIN_TOKEN=ADMIN_TOKEN)
    app = create_app(settings, database_url="postgresql://unused/unused")
    paths = app.api.openapi()["paths"]
    return sorted(
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if method in HTTP_METHODS
    )


OPERATIONS = _documented_operations()


@pytest.fixture(scope="module")
def collector_and_schema(
    postgres: PostgresServer,
) -> Iterator[tuple[RunningCollector, schemathesis.BaseSchema]]:
    """One collector for the module (operations share what the admin calls create), and
    the schema it serves at /openapi.json."""
    with fresh_database(postgres, template=TEMPLATE) as database_url:
        register_client(database_url, FUZZ_CLIENT, "fuzz.example")
        # Not FUZZ_CLIENT, whose key the generated admin calls rotate.
        FUZZ_WRITE_KEY.append(register_client(database_url, "client_asks", "asks.example"))
        collector = run_collector(
            database_url, EVOTHESIS_ADMIN_TOKEN=ADMIN_TOKEN, PIXEL_MANAGEMENT_TOKEN=ADMIN_TOKEN
        )
        try:
            config = schemathesis.Config.from_dict(
                {"base-url": collector.url, "headers": HEADERS, "request-timeout": 10}
            )
            schema = schemathesis.openapi.from_url(f"{collector.url}/openapi.json", config=config)
            yield collector, schema
        finally:
            collector.stop()


def test_the_served_schema_lists_the_same_operations(
    collector_and_schema: tuple[RunningCollector, schemathesis.BaseSchema],
) -> None:
    _, schema = collector_and_schema
    served = sorted(
        (operation.method.upper(), operation.path)
        for operation in (result.ok() for result in schema.get_all_operations())
    )
    assert served == OPERATIONS


def _strategies(
    operation: schemathesis.APIOperation, method: str, path: str
) -> list[st.SearchStrategy[Case]]:
    """Valid and invalid requests, plus valid ones aimed past "not found" and "not yours".

    Invalid ("negative") alone is not enough: an operation whose parameters are all
    free-form strings has no invalid form. Random client ids never exist and random
    siteIds are never registered, so some valid requests name ``FUZZ_CLIENT`` or the
    development site, and reach the code behind the lookup.
    """
    positive = schemathesis.GenerationMode.POSITIVE
    strategies = [
        operation.as_strategy(generation_mode=positive),
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
    ]
    if "{client_id}" in path:
        strategies.append(
            operation.as_strategy(
                generation_mode=positive, path_parameters={"client_id": FUZZ_CLIENT}
            )
        )
    if "{domain}" in path and method == "GET":
        strategies.append(
            operation.as_strategy(generation_mode=positive, path_parameters={"domain": "localhost"})
        )
    if (method, path) == ("POST", "/client/deliveries"):
        strategies.append(operation.as_strategy(generation_mode=positive).map(_with_write_key))
    if (method, path) == ("POST", "/collect"):
        strategies.append(operation.as_strategy(generation_mode=positive).map(_from_local_site))
    if (method, path) == ("POST", "/api/v1/clients"):
        ids = st.from_regex(r"[a-z][a-z0-9_-]{1,20}", fullmatch=True)
        strategies.append(
            st.tuples(operation.as_strategy(generation_mode=positive), ids).map(_with_client_id)
        )
    return strategies


def _from_local_site(case: Case) -> Case:
    """Attribute the event (and any inner events) to the development site."""
    if isinstance(case.body, dict):
        case.body["siteId"] = "localhost"
    return case


def _with_write_key(case: Case) -> Case:
    case.headers["X-Write-Key"] = FUZZ_WRITE_KEY[-1]
    return case


def _with_client_id(drawn: tuple[Case, str]) -> Case:
    """The schema leaves client_id a free string, but the registry accepts 2-63 of
    ``[a-z0-9_-]`` (``registry.store.validate_client_id``): without valid ids generated
    creations never get past validation."""
    case, client_id = drawn
    if isinstance(case.body, dict):
        case.body["client_id"] = client_id
    return case


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_generated_request_gets_a_5xx(
    collector_and_schema: tuple[RunningCollector, schemathesis.BaseSchema],
    method: str,
    path: str,
) -> None:
    collector, schema = collector_and_schema
    operation = schema[path][method]
    cases = st.one_of(*_strategies(operation, method, path))
    statuses: list[int] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def run(case: Case) -> None:
        response = case.call_and_validate(
            base_url=collector.url, headers=HEADERS, checks=[not_a_server_error]
        )
        statuses.append(response.status_code)

    run()
    # The credentials worked: generation reached past the guards.
    assert statuses
    assert set(statuses) - {401, 403}, f"{method} {path} only answered {set(statuses)}"
