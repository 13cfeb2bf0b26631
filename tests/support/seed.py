"""The seed contract's example payloads (DESIGN.md) and setting names, shared by every test
that uses them."""

from __future__ import annotations

from typing import Any

SEED_SINGLE: dict[str, Any] = {
    "eventType": "pageview",
    "sessionId": "sess_abc123",
    "visitorId": "vis_xyz789",
    "siteId": "localhost",
    "timestamp": "2025-07-11T12:00:00Z",
    "url": "https://example.com/page",
    "path": "/page",
    "attribution": {"utmParams": {"utm_source": "google", "utm_medium": "cpc"}},
}

SEED_BATCH: dict[str, Any] = {
    "eventType": "batch",
    "sessionId": "sess_abc123",
    "visitorId": "vis_xyz789",
    "siteId": "localhost",
    "timestamp": "2025-07-11T12:00:00Z",
    "events": [
        {"eventType": "click", "eventData": {"element": "button1"}},
        {"eventType": "scroll", "eventData": {"depth": 25}},
        {"eventType": "form_focus", "eventData": {"field": "email"}},
    ],
}

#: Every configuration name the seed documents use for an Evothesis setting (POSTGRES_* are
#: the compose file's, for the postgres service).
SEED_SETTINGS: tuple[str, ...] = (
    "DATABASE_URL",
    "PIXEL_MANAGEMENT_URL",
    "RAW_S3_BUCKET",
    "PROCESSED_S3_BUCKET",
    "CLIENT_S3_BUCKET",
    "BACKUP_S3_BUCKET",
    "S3_BACKUP_BUCKET",
    "RAW_S3_ACCESS_KEY",
    "PROCESSED_S3_ACCESS_KEY",
    "CLIENT_S3_ACCESS_KEY",
    "CLIENT_S3_SECRET_KEY",
    "EXPORT_BATCH_SIZE",
    "EXPORT_SCHEDULE",
    "EXPORT_FORMAT",
    "DATABASE_POOL_SIZE",
    "DATABASE_MAX_OVERFLOW",
    "ENVIRONMENT",
    "CLIENT_NAME",
)
