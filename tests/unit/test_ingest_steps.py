"""The ingestion steps after attribution, each on its own: pure functions from one request's
state to the next state, a drop with its reason, or a refusal."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from evothesis.domain import (
    BotKind,
    BotPolicy,
    ClientConfig,
    ConsentMode,
    DropReason,
    EventSource,
    PrivacyLevel,
    RejectReason,
    RequestContext,
)
from evothesis.enrich.useragent import UNKNOWN, UserAgentInfo
from evothesis.errors import InvalidEvent, InvalidWriteKey, OriginMismatch, WriteKeyRequired
from evothesis.ingest.enrichment import Enricher, RequestEnrichment, build_enricher
from evothesis.ingest.envelope import parse_envelope
from evothesis.ingest.outcomes import Outcomes
from evothesis.ingest.privacy import request_privacy
from evothesis.ingest.steps import (
    Dropped,
    Intake,
    accept,
    authorize,
    build_rows,
    decide_privacy,
    drop_bots,
    enrich_request,
    protect,
    steps,
)
from evothesis.registry.secrets import hash_write_key

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACME = ClientConfig("acme", ip_salt=b"s" * 32, write_key_sha256=hash_write_key("wk_acme"))
OTHER = ClientConfig("other")
OFF = Enricher()


def envelope(**fields: Any) -> Any:
    body = {"eventType": "pageview", "siteId": "acme.com", "visitorId": "v1", **fields}
    return parse_envelope(orjson.dumps(body), max_batch_events=10, now=NOW)


def intake(
    client: ClientConfig = ACME,
    *,
    page_owner: ClientConfig | None = ACME,
    origin: str | None = "https://acme.com",
    write_key: str | None = None,
    dnt: bool = False,
    user_agent: str = "Mozilla/5.0",
    **fields: Any,
) -> Intake:
    context = RequestContext(
        client_ip="203.0.113.9",
        user_agent=user_agent,
        received_at=NOW,
        origin=origin,
        write_key=write_key,
        dnt=dnt,
    )
    return Intake(envelope(**fields), context, client, page_owner)


def through_privacy(state: Intake) -> Intake:
    decided = decide_privacy(state)
    assert isinstance(decided, Intake)
    return decided


# ------------------------------------------------------------------------------ authorize


def test_a_page_of_the_sites_client_is_authorized_as_a_browser() -> None:
    state = intake()
    assert authorize(state) is state
    assert state.source is EventSource.BROWSER


@pytest.mark.parametrize("owner", [OTHER, None], ids=["another client", "nobody"])
def test_a_page_of_another_client_or_of_nobody_is_refused(owner: ClientConfig | None) -> None:
    with pytest.raises(OriginMismatch, match=r"'acme\.com' does not belong to client 'acme'"):
        authorize(intake(page_owner=owner))


def test_a_key_must_be_the_clients_whatever_else_the_request_carries() -> None:
    for page_owner, origin in ((ACME, "https://acme.com"), (OTHER, "https://other.com")):
        with pytest.raises(InvalidWriteKey):
            authorize(intake(page_owner=page_owner, origin=origin, write_key="wk_other"))
        with pytest.raises(InvalidWriteKey):
            authorize(intake(page_owner=page_owner, origin=origin, write_key=""))
        state = authorize(intake(page_owner=page_owner, origin=origin, write_key="wk_acme"))
        assert state.source is EventSource.SERVER_KEY


def test_without_key_or_page_events_are_unverified_unless_the_client_requires_its_key() -> None:
    state = authorize(intake(origin=None, page_owner=None))
    assert state.source is EventSource.UNVERIFIED
    strict = ClientConfig("acme", require_write_key=True, write_key_sha256=ACME.write_key_sha256)
    with pytest.raises(WriteKeyRequired) as missing:
        authorize(intake(strict, origin=None, page_owner=None))
    assert not isinstance(missing.value, InvalidWriteKey)
    assert authorize(intake(strict, origin=None, page_owner=None, write_key="wk_acme")).source
    assert authorize(intake(strict, page_owner=strict)).source is EventSource.BROWSER


# ------------------------------------------------------------------------- decide privacy


def test_privacy_is_decided_and_carried_on() -> None:
    state = through_privacy(intake())
    assert state.privacy is not None and state.privacy.stored_ip == "203.0.113.9"


@pytest.mark.parametrize("level", list(PrivacyLevel))
def test_dnt_drops_above_standard_whatever_the_clients_setting(level: PrivacyLevel) -> None:
    client = ClientConfig("acme", privacy_level=level, honour_dnt=False, ip_salt=b"s" * 32)
    outcome = decide_privacy(intake(client, page_owner=client, dnt=True))
    if level is PrivacyLevel.STANDARD:
        assert isinstance(outcome, Intake)
    else:
        assert outcome == Dropped(DropReason.DO_NOT_TRACK, 1)


def test_missing_consent_drops_with_its_own_reason() -> None:
    client = ClientConfig("acme", consent_mode=ConsentMode.REQUIRED)
    assert decide_privacy(intake(client, page_owner=client)) == Dropped(DropReason.NO_CONSENT, 1)
    assert isinstance(decide_privacy(intake(client, page_owner=client, consent=True)), Intake)


def test_a_batch_drop_counts_the_envelope_and_every_inner_event() -> None:
    client = ClientConfig("acme", consent_mode=ConsentMode.REQUIRED)
    state = intake(client, page_owner=client, eventType="batch", events=[{"eventType": "a"}] * 3)
    assert decide_privacy(state) == Dropped(DropReason.NO_CONSENT, 4)


# ------------------------------------------------------------------------------ drop bots


def with_agent(state: Intake, agent: UserAgentInfo) -> Intake:
    state.enrichment = RequestEnrichment(agent, ())
    return state


BOT = UserAgentInfo("curl", None, None, "bot", BotKind.HTTP_CLIENT)


def test_bots_are_dropped_by_kind_only_for_clients_who_drop_them() -> None:
    dropping = ClientConfig("acme", bot_policy=BotPolicy.DROP)
    state = through_privacy(intake(dropping, page_owner=dropping))
    assert drop_bots(with_agent(state, BOT)) == Dropped(DropReason.BOT_HTTP_CLIENT, 1)
    assert drop_bots(with_agent(state, UNKNOWN)).enrichment is not None  # a person: kept
    keeping = through_privacy(intake())
    assert isinstance(drop_bots(with_agent(keeping, BOT)), Intake)


def test_a_dropped_bot_batch_counts_its_invalid_inner_events_too() -> None:
    dropping = ClientConfig("acme", bot_policy=BotPolicy.DROP)
    batch = intake(dropping, page_owner=dropping, eventType="batch", events=[{"eventType": "a"}, 7])
    state = with_agent(through_privacy(batch), BOT)
    assert drop_bots(state) == Dropped(DropReason.BOT_HTTP_CLIENT, 3)


# ------------------------------------------------------------------------ protect, rows


def test_protect_redacts_before_anything_is_built() -> None:
    state = protect(enrich_request(OFF, through_privacy(intake(eventData={"e": "a@b.com"}))))
    assert state.payloads is not None
    assert state.payloads[0]["eventData"] == {"e": "[REDACTED]"}


def test_a_payload_too_deep_to_inspect_is_refused_not_stored() -> None:
    deep: Any = "x"
    for _ in range(70):
        deep = {"d": deep}
    state = enrich_request(OFF, through_privacy(intake()))
    state.envelope.events[0].payload["eventData"] = deep  # past the parser's own limits
    with pytest.raises(InvalidEvent, match="cannot be stored"):
        protect(state)


def test_rows_come_from_the_protected_payloads_with_the_stored_ip() -> None:
    state = protect(enrich_request(OFF, through_privacy(intake(url="https://acme.com/?e=a@b.com"))))
    accepted = build_rows(OFF.event, state)
    [row] = accepted.rows
    assert (row.client_id, row.site_id, row.ip_address) == ("acme", "acme.com", "203.0.113.9")
    assert "a@b.com" not in (row.url or "") and "a@b.com" not in row.raw_event_data
    assert accepted.failed == [] and accepted.audit is None


def test_rows_record_how_the_sender_was_authenticated() -> None:
    for state, source in (
        (intake(), EventSource.BROWSER),
        (intake(origin=None, page_owner=None), EventSource.UNVERIFIED),
        (intake(origin=None, page_owner=None, write_key="wk_acme"), EventSource.SERVER_KEY),
    ):
        authorized = authorize(state)
        [row] = build_rows(
            OFF.event, protect(enrich_request(OFF, through_privacy(authorized)))
        ).rows
        assert row.source == source


@pytest.mark.parametrize("client", [ACME, ClientConfig("acme", privacy_level=PrivacyLevel.HIPAA)])
def test_a_user_agent_is_stored_with_its_pii_redacted(client: ClientConfig) -> None:
    agent = "MyBot/1.0 (+mailto:judy@example.com; call 415-555-2671)"
    state = intake(client, page_owner=client, user_agent=agent)
    [row] = build_rows(OFF.event, protect(enrich_request(OFF, through_privacy(state)))).rows
    assert row.user_agent is not None and row.user_agent.startswith("MyBot/1.0")
    assert "judy" not in row.user_agent and "2671" not in row.user_agent


def test_an_id_repeated_within_a_request_is_stored_once_and_counted() -> None:
    repeated = "0190d4a8-0000-7000-8000-000000000001"
    batch = intake(
        eventType="batch",
        events=[{"eventType": "a", "eventId": repeated}, {"eventType": "b", "eventId": repeated}],
    )
    accepted = build_rows(
        OFF.event, protect(enrich_request(OFF, through_privacy(authorize(batch))))
    )
    assert [row.event_type for row in accepted.rows] == ["batch", "a"]
    assert accepted.duplicates == 1


def test_hipaa_batches_get_an_audit_record_and_invalid_inner_events_become_failed_rows() -> None:
    hipaa = ClientConfig("acme", privacy_level=PrivacyLevel.HIPAA, ip_salt=b"s" * 32)
    batch = intake(hipaa, page_owner=hipaa, eventType="batch", events=[{"eventType": "a"}, 7])
    accepted = build_rows(OFF.event, protect(enrich_request(OFF, through_privacy(batch))))
    assert len(accepted.rows) == 2
    assert all(row.ip_address is None for row in accepted.rows)
    assert accepted.audit is not None and accepted.audit.events == 2
    assert accepted.audit.ip_hash is not None and "203.0.113.9" not in accepted.audit.ip_hash
    [failed] = accepted.failed
    assert (failed.position, failed.reason) == (1, RejectReason.NOT_AN_OBJECT)


def test_accept_gives_the_same_rows_after_crossing_a_process_boundary() -> None:
    """Large bodies are accepted in a worker process: what goes there and what comes back
    must pickle, and arrive meaning the same (an enricher that does work included)."""
    hipaa = ClientConfig("acme", privacy_level=PrivacyLevel.HIPAA, ip_salt=b"s" * 32)
    state = enrich_request(
        OFF,
        through_privacy(
            intake(
                hipaa,
                page_owner=hipaa,
                eventType="batch",
                url="https://acme.com/?utm_source=news",
                events=[{"eventType": "a", "eventData": {"e": "a@b.com"}}, 7],
            )
        ),
    )
    columns = build_enricher(enabled=True, geoip_database=None).event
    inline = accept(columns, state)
    shipped = pickle.loads(pickle.dumps((columns, state)))
    assert pickle.loads(pickle.dumps(accept(*shipped))) == inline
    assert inline.rows[1].utm_source == "news" and "a@b.com" not in inline.rows[1].raw_event_data


@pytest.mark.parametrize(
    "body",
    [
        {"eventType": "pageview", "siteId": "not a host"},
        {"eventType": "batch", "siteId": "acme.com", "events": "nope"},
    ],
)
def test_an_error_of_a_worker_arrives_with_its_field_and_reason(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_envelope(orjson.dumps(body), max_batch_events=10, now=NOW)
    arrived = pickle.loads(pickle.dumps(raised.value))
    assert type(arrived) is InvalidEvent
    assert (arrived.message, arrived.field, arrived.reason) == (
        raised.value.message,
        raised.value.field,
        raised.value.reason,
    )


def test_the_steps_run_in_order_and_stop_at_a_drop() -> None:
    names = [getattr(step, "func", step).__name__ for step in steps(OFF)]
    assert names == ["authorize", "decide_privacy", "enrich_request", "drop_bots"]
    client = ClientConfig("acme", privacy_level=PrivacyLevel.GDPR, ip_salt=b"s" * 32)
    state: Intake | Dropped = intake(client, page_owner=client, dnt=True)
    for step in steps(OFF):
        assert isinstance(state, Intake)
        state = step(state)
        if isinstance(state, Dropped):
            break
    assert state == Dropped(DropReason.DO_NOT_TRACK, 1)


# ------------------------------------------------------------------------------ outcomes


def test_outcomes_show_what_was_counted_under_the_names_health_uses() -> None:
    outcomes = Outcomes()
    assert outcomes.as_dict() == {}
    outcomes.refused[OriginMismatch.refusal] += 1
    outcomes.dropped[DropReason.for_bot(BotKind.CRAWLER)] += 3
    outcomes.rejected[RejectReason.TOO_LONG] += 2
    outcomes.anonymized += 5
    assert outcomes.as_dict() == {
        "origin_mismatch": 1,
        "dropped_bot_crawler": 3,
        "rejected_too_long": 2,
        "anonymized": 5,
    }


def test_every_drop_reason_explains_itself() -> None:
    for reason in DropReason:
        assert reason.explanation
    assert request_privacy(ACME, intake().context, None).decision.drop_reason is None
