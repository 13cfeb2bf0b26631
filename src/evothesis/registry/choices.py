"""The closed sets of client settings, shared by the admin API, the CLI and their help.

The database enforces the same sets with CHECK constraints; naming them here lets pydantic
and typer reject a typo before anything reaches the store, with the valid values listed.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["BotPolicy", "ConsentMode", "ExportFormat", "IpCollection", "PrivacyLevel"]


class PrivacyLevel(StrEnum):
    """How strictly a client's events are treated (see the privacy table in DESIGN.md)."""

    STANDARD = "standard"
    GDPR = "gdpr"
    HIPAA = "hipaa"


class IpCollection(StrEnum):
    """What happens to the visitor's IP address before it is stored."""

    FULL = "full"
    ANONYMIZED = "anonymized"
    NONE = "none"


class ConsentMode(StrEnum):
    """Whether the tracker waits for the page to report consent."""

    NONE = "none"
    REQUIRED = "required"
    ANONYMOUS_WITHOUT_CONSENT = "anonymous_without_consent"


class BotPolicy(StrEnum):
    """What happens to events whose user agent is a crawler, headless browser or monitor."""

    KEEP = "keep"
    DROP = "drop"


class ExportFormat(StrEnum):
    """The file format of a client's processed exports."""

    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"
