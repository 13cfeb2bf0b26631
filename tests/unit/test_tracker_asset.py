"""The tracker asset as served: configuration embedding, script-safety, size budget."""

from __future__ import annotations

import gzip

import orjson
import pytest

from evothesis.tracker import (
    EMBEDDED_GLOBAL,
    GZIP_BUDGET_BYTES,
    embedded_config_line,
    render_tracker,
    tracker_size_report,
    tracker_source,
)

LOAD_LOG = "[Evothesis] Analytics pixel loaded for client: "
PREFIX = f"{EMBEDDED_GLOBAL} = "


def split_embedded(rendered: bytes) -> tuple[object, bytes]:
    """Return the embedded configuration (decoded) and the script that follows it."""
    first, _, rest = rendered.partition(b"\n")
    text = first.decode("utf-8")
    assert text.startswith(PREFIX)
    assert text.endswith(";")
    return orjson.loads(text[len(PREFIX) : -1]), rest


def test_source_is_the_readable_packaged_file() -> None:
    source = tracker_source()
    assert "w.evothesis = api;" in source  # the one global the tracker defines
    assert "/*" in source  # comments survive in the source, not in the served file


def test_without_config_the_minified_tracker_is_served_alone() -> None:
    rendered = render_tracker(None)
    assert not rendered.startswith(EMBEDDED_GLOBAL.encode())
    assert len(rendered) < len(tracker_source().encode())
    assert b"/*" not in rendered


def test_config_is_embedded_on_the_first_line() -> None:
    config = {"client_id": "client_acme_corp", "privacy_mode": "gdpr", "batch_size": 25}
    embedded, script = split_embedded(render_tracker(config))
    assert embedded == config
    assert script == render_tracker(None)


def test_nested_values_and_unicode_round_trip() -> None:
    config = {"client_id": "c", "custom_fields": {"tenant": "tenant_123", "city": "Zürich"}}
    embedded, _ = split_embedded(render_tracker(config))
    assert embedded == config


def test_embedding_is_deterministic() -> None:
    a = render_tracker({"b": 1, "a": 2})
    b = render_tracker({"a": 2, "b": 1})
    assert a == b


@pytest.mark.parametrize(
    "hostile",
    [
        "</script><script>alert(1)</script>",
        "</SCRIPT>",
        "<!-- comment",
        "a & b > c",
        "line\u2028separator\u2029paragraph",
    ],
)
def test_values_cannot_break_out_of_a_script_element(hostile: str) -> None:
    config = {"client_id": "c", "note": hostile}
    line = embedded_config_line(config)
    for forbidden in ("<", ">", "&", "\u2028", "\u2029"):
        assert forbidden not in line
    embedded, _ = split_embedded(render_tracker(config))
    assert embedded == config  # escaping changes bytes, never meaning


def test_unserialisable_config_is_refused() -> None:
    with pytest.raises(TypeError):
        render_tracker({"client_id": object()})


def test_minified_output_keeps_the_load_log_line() -> None:
    assert LOAD_LOG.encode() in render_tracker(None)
    assert LOAD_LOG.encode() in render_tracker({"client_id": "client_test"})


def test_unminified_variant_serves_the_source() -> None:
    rendered = render_tracker({"client_id": "c"}, minified=False)
    _, script = split_embedded(rendered)
    assert script == tracker_source().encode()


def test_gzipped_tracker_is_within_budget() -> None:
    report = tracker_size_report()
    assert report["gzipped"] < GZIP_BUDGET_BYTES == 10 * 1024
    assert report["gzipped"] == len(gzip.compress(render_tracker(None), 9, mtime=0))
    assert report["raw"] > report["minified"] > report["gzipped"] > 0
