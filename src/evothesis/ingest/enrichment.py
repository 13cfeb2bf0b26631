"""The enrichment step: what the collector adds to every stored event, after privacy.

User agent and client IP are the same for every event of a request, so they are looked up
once per request (from caches, nearly always); the referrer class and UTM parameters depend
on each event's page and referrer, which inner events usually inherit, so that lookup is
cached too. Geolocation reads the raw IP, before the privacy step hashes or drops it, and
the client's privacy level decides how much of the answer may be stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from evothesis.domain import ClientConfig, PrivacyLevel, RequestContext
from evothesis.enrich.geo import GeoLocator, open_geo_database
from evothesis.enrich.referrer import attribute, sent_utm
from evothesis.enrich.useragent import UNKNOWN, UserAgentInfo, UserAgentParser

__all__ = [
    "NOT_ENRICHED",
    "Enricher",
    "EventEnrichment",
    "RequestEnrichment",
    "build_enricher",
    "event_columns",
]

_Text = str | None
#: A row's columns from its request: browser, browser_version, os, device_type, is_bot,
#: country, region, city.
RequestColumns = tuple[_Text, _Text, _Text, _Text, bool, _Text, _Text, _Text]
#: A row's columns from its event: referrer class and the five UTM values.
EventColumns = tuple[_Text, _Text, _Text, _Text, _Text, _Text]

#: What adds the per-event columns to a row: from a protected payload and its site's host.
EventEnrichment = Callable[[dict[str, Any], str], EventColumns]

#: The request part of a row with enrichment off.
_BLANK_REQUEST: Final[RequestColumns] = (None, None, None, None, False, None, None, None)
#: The event part with enrichment off.
NOT_ENRICHED: Final[EventColumns] = (None, None, None, None, None, None)


@dataclass(frozen=True, slots=True)
class RequestEnrichment:
    """What one request contributes to each of its rows."""

    user_agent: UserAgentInfo
    columns: RequestColumns


_OFF: Final = RequestEnrichment(UNKNOWN, _BLANK_REQUEST)


class Enricher:
    """User agent, bots, geo, referrer and UTM enrichment. Without a parser and a locator
    (``Enricher()``, what ``ENRICHMENT=off`` builds) it adds nothing and loads nothing,
    which is also what the benchmark compares against."""

    def __init__(
        self, *, user_agents: UserAgentParser | None = None, geo: GeoLocator | None = None
    ) -> None:
        self._user_agents = user_agents
        self._geo = geo
        #: ``referrer_class`` and the UTM values of one protected event payload: a
        #: module-level function, which pickles, so a worker process can build rows too.
        self.event: EventEnrichment = event_columns if self.enabled else _no_event_columns

    @property
    def enabled(self) -> bool:
        return self._user_agents is not None and self._geo is not None

    def request(
        self,
        client: ClientConfig,
        context: RequestContext,
        *,
        user_agent: str | None,
        anonymize: bool,
    ) -> RequestEnrichment:
        """The per-request columns, from ``user_agent`` (as it may be stored) and the
        client's address. Only standard clients' identified visitors get region and city:
        gdpr, hipaa and anonymised visitors get the country alone."""
        if self._user_agents is None or self._geo is None:
            return _OFF
        agent = self._user_agents.parse(user_agent)
        place = self._geo.locate(context.client_ip)
        if client.privacy_level is not PrivacyLevel.STANDARD or anonymize:
            place = place.country_only()
        return RequestEnrichment(agent, (*agent[:4], agent.is_bot, *place))


def event_columns(payload: dict[str, Any], site_host: str) -> EventColumns:
    """``referrer_class`` and the UTM values of one protected event payload."""
    return attribute(
        _text(payload.get("url")),
        _text(payload.get("referrer")),
        site_host,
        sent_utm(payload.get("attribution")),
    )


def _no_event_columns(payload: dict[str, Any], site_host: str) -> EventColumns:
    return NOT_ENRICHED


def build_enricher(*, enabled: bool, geoip_database: Path | None) -> Enricher:
    """The enricher ``ENRICHMENT`` and ``GEOIP_DATABASE`` ask for (loads its data: blocking)."""
    if not enabled:
        return Enricher()
    return Enricher(
        user_agents=UserAgentParser(), geo=GeoLocator(open_geo_database(geoip_database))
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
