"""The seed contract's example payloads (DESIGN.md), shared by every test that sends them."""

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
