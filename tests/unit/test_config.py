"""Settings: the seed's environment variable names, parsed and validated once."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from evothesis.config import (
    KNOWN_PREFIXES,
    Settings,
    check_environment,
    environment_help,
    read_settings,
    setting_names,
)
from evothesis.errors import ConflictingSettings, SecretKeyError
from evothesis.registry.secrets import generate_key
from evothesis.services import secret_box
from tests.support.seed import SEED_SETTINGS


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def networks(*texts: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(text) for text in texts]


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("environment", "development"),
        ("database_url", None),
        ("data_dir", Path(".evothesis")),
        ("pool_size", 10),
        ("max_overflow", 20),
        ("pool_max_size", 30),
        ("pixel_management_url", None),
        ("registry_cache_ttl_s", 60.0),
        ("trusted_proxies", networks("127.0.0.1/32", "::1/128")),
        ("max_body_bytes", 1024 * 1024),
        ("max_batch_events", 500),
        ("buffer_max_events", 5000),
        ("buffer_max_delay_ms", 2.0),
        ("buffer_flush_concurrency", 4),
        ("recent_max_limit", 1000),
        ("serve_demo", True),
        ("log_level", "INFO"),
    ],
)
def test_defaults_match_the_seed(attribute: str, expected: object) -> None:
    assert getattr(settings(), attribute) == expected


# --------------------------------------------------------------------------- secret key


def test_development_keeps_a_key_file_and_production_requires_the_variable(
    tmp_path: Path,
) -> None:
    unset = {"EVOTHESIS_SECRET_KEY": None, "EVOTHESIS_DATA_DIR": str(tmp_path)}
    sealed = secret_box(settings(**unset)).seal(b"salt")
    key_file = tmp_path / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert secret_box(settings(**unset)).open(sealed) == b"salt"
    with pytest.raises(SecretKeyError, match="EVOTHESIS_SECRET_KEY is required in production"):
        secret_box(settings(**unset, ENVIRONMENT="production"))


def test_secret_keys_rotate_newest_first() -> None:
    old, new = generate_key(), generate_key()
    sealed = secret_box(settings(EVOTHESIS_SECRET_KEY=old)).seal(b"salt")
    rotated = secret_box(settings(EVOTHESIS_SECRET_KEY=f"{new}, {old}"))
    assert rotated.open(sealed) == b"salt"
    with pytest.raises(SecretKeyError, match="not the key it was sealed with"):
        secret_box(settings(EVOTHESIS_SECRET_KEY=new)).open(sealed)
    with pytest.raises(SecretKeyError, match="Fernet keys"):
        secret_box(settings(EVOTHESIS_SECRET_KEY="not-a-key"))


# --------------------------------------------------------------------------- TRUSTED_PROXIES


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.1", networks("10.0.0.1/32")),
        ("10.0.0.1, 192.168.0.0/16", networks("10.0.0.1/32", "192.168.0.0/16")),
        ("::1,fd00::/8", networks("::1/128", "fd00::/8")),
        ("192.168.1.7/16", networks("192.168.0.0/16")),
        ("  172.16.0.0/12 ,, 127.0.0.1 ", networks("172.16.0.0/12", "127.0.0.1/32")),
        ("", []),
    ],
)
def test_trusted_proxies_csv_holds_ips_and_cidrs(
    value: str, expected: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> None:
    assert settings(TRUSTED_PROXIES=value).trusted_proxies == expected


@pytest.mark.parametrize(
    ("value", "bad"), [("nope", "nope"), ("10.0.0.0/33", "10.0.0.0/33"), ("1.2.3.4, x", "'x'")]
)
def test_a_malformed_proxy_is_a_validation_error_naming_it(value: str, bad: str) -> None:
    with pytest.raises(ValidationError) as error:
        settings(TRUSTED_PROXIES=value)
    [problem] = error.value.errors()
    assert problem["loc"] == ("TRUSTED_PROXIES",)
    assert bad in problem["msg"]


# --------------------------------------------------------------------------- folders


def test_the_cache_folder_is_in_the_data_folder_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVOTHESIS_CACHE_DIR")  # the suite sets one for the whole run
    assert settings(EVOTHESIS_DATA_DIR="/srv/evo").cache_folder == Path("/srv/evo/cache")
    chosen = settings(EVOTHESIS_DATA_DIR="/srv/evo", EVOTHESIS_CACHE_DIR="/opt/cache")
    assert chosen.cache_folder == Path("/opt/cache")


# --------------------------------------------------------------------------- numbers and names


@pytest.mark.parametrize(
    ("size", "overflow", "expected"), [(1, 0, 1), (10, 20, 30), (5, 0, 5), (500, 500, 1000)]
)
def test_pool_max_size_is_pool_size_plus_overflow(size: int, overflow: int, expected: int) -> None:
    built = settings(DATABASE_POOL_SIZE=size, DATABASE_MAX_OVERFLOW=overflow)
    assert built.pool_max_size == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_POOL_SIZE", 0),
        ("DATABASE_POOL_SIZE", 501),
        ("DATABASE_POOL_SIZE", "abc"),
        ("DATABASE_MAX_OVERFLOW", -1),
        ("MAX_BODY_BYTES", 1023),
        ("MAX_BATCH_EVENTS", 0),
        ("WRITE_BUFFER_MAX_EVENTS", 0),
        ("WRITE_BUFFER_MAX_DELAY_MS", -0.5),
        ("WRITE_BUFFER_FLUSH_CONCURRENCY", 0),
        ("EVENTS_RECENT_MAX_LIMIT", 0),
        ("ENVIRONMENT", "staging"),
        ("EVOTHESIS_SERVE_DEMO", "sometimes"),
    ],
)
def test_an_out_of_range_value_is_a_validation_error_naming_the_variable(
    name: str, value: object
) -> None:
    with pytest.raises(ValidationError) as error:
        settings(**{name: value})
    assert [problem["loc"] for problem in error.value.errors()] == [(name,)]


@pytest.mark.parametrize(
    ("name", "text", "attribute", "expected"),
    [
        ("DATABASE_POOL_SIZE", "7", "pool_size", 7),
        ("DATABASE_URL", "postgresql://u@h/db", "database_url", "postgresql://u@h/db"),
        ("EVOTHESIS_DATA_DIR", "/var/lib/evothesis", "data_dir", Path("/var/lib/evothesis")),
        ("PIXEL_MANAGEMENT_URL", "http://pm:8001", "pixel_management_url", "http://pm:8001"),
        ("TRUSTED_PROXIES", "10.0.0.0/8", "trusted_proxies", networks("10.0.0.0/8")),
        ("EVOTHESIS_SERVE_DEMO", "false", "serve_demo", False),
        ("WRITE_BUFFER_MAX_DELAY_MS", "0.5", "buffer_max_delay_ms", 0.5),
        ("ENVIRONMENT", "production", "environment", "production"),
    ],
)
def test_values_are_read_from_the_environment_by_their_seed_names(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str, attribute: str, expected: object
) -> None:
    monkeypatch.setenv(name, text)
    assert getattr(settings(), attribute) == expected


def test_explicit_values_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_POOL_SIZE", "7")
    assert settings(DATABASE_POOL_SIZE=3).pool_size == 3


def test_fields_can_be_given_by_name_as_well_as_by_variable() -> None:
    assert settings(pool_size=3, max_overflow=4).pool_max_size == 7


def test_unknown_variables_are_ignored() -> None:
    assert settings(NOT_A_SETTING="x").pool_size == 10


def test_settings_are_frozen() -> None:
    built = settings()
    with pytest.raises(ValidationError):
        built.pool_size = 99  # type: ignore[misc]


def test_environment_help_has_a_described_line_for_every_setting() -> None:
    text = environment_help()
    assert text.startswith("Environment variables:")
    lines = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    for field in Settings.model_fields.values():
        assert field.description, f"{field.alias} has no description for --help"
        assert field.alias in lines
        assert field.description in lines[str(field.alias)]
        assert lines[str(field.alias)].count("(default") <= 1, f"{field.alias}: two defaults"
    assert lines["DATABASE_POOL_SIZE"].endswith("(default 10)")
    assert lines["TRUSTED_PROXIES"].endswith("(default 127.0.0.1/32, ::1/128)")
    assert "(default" not in lines["DATABASE_URL"]  # unset means what the text says


@pytest.mark.parametrize(("value", "umask"), [("077", 0o077), ("0o027", 0o027), ("0022", 0o022)])
def test_the_umask_is_written_in_octal(value: str, umask: int) -> None:
    assert settings(EVOTHESIS_UMASK=value).umask == umask


@pytest.mark.parametrize("value", ["", "8", "0o99", "-1", "1000"])
def test_a_umask_that_is_not_octal_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match=r"EVOTHESIS_UMASK|umask"):
        settings(EVOTHESIS_UMASK=value)


def test_by_default_files_are_the_owners_alone() -> None:
    assert settings().umask == 0o077


# --------------------------------------------------------------------------- the seeds' names


@pytest.mark.parametrize(
    ("name", "attribute"),
    [
        ("CLIENT_S3_BUCKET", "processed_bucket"),
        ("CLIENT_S3_ACCESS_KEY", "processed_access_key"),
        ("CLIENT_S3_SECRET_KEY", "processed_secret_key"),
        ("S3_BACKUP_BUCKET", "backup_bucket"),
    ],
)
def test_the_seeds_other_names_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, attribute: str
) -> None:
    monkeypatch.setenv(name, "from-the-seed")
    assert getattr(settings(), attribute) == "from-the-seed"
    assert name in setting_names()


def test_client_name_is_read() -> None:
    assert settings(CLIENT_NAME="client-company").client_name == "client-company"


def test_every_seed_configuration_name_is_read() -> None:
    """The names the five seed documents use for Evothesis settings (POSTGRES_* are the
    compose file's, for the postgres service)."""
    assert set(SEED_SETTINGS) <= setting_names()


def test_names_of_one_setting_that_agree_are_fine() -> None:
    check = check_environment({"PROCESSED_S3_BUCKET": "b", "CLIENT_S3_BUCKET": "b"})
    assert check.conflicts == () and check.conflict_message() is None


@pytest.mark.parametrize(
    ("environ", "pair"),
    [
        (
            {"PROCESSED_S3_BUCKET": "s3://ours", "CLIENT_S3_BUCKET": "s3://theirs"},
            ("PROCESSED_S3_BUCKET", "CLIENT_S3_BUCKET"),
        ),
        (
            {"BACKUP_S3_BUCKET": "s3://ours", "S3_BACKUP_BUCKET": "s3://theirs"},
            ("BACKUP_S3_BUCKET", "S3_BACKUP_BUCKET"),
        ),
        (
            {"PROCESSED_S3_SECRET_KEY": "secret-1", "CLIENT_S3_SECRET_KEY": ""},
            ("PROCESSED_S3_SECRET_KEY", "CLIENT_S3_SECRET_KEY"),
        ),
        (
            {"client_s3_access_key": "AKIA-1", "PROCESSED_S3_ACCESS_KEY": "AKIA-2"},
            ("PROCESSED_S3_ACCESS_KEY", "client_s3_access_key"),
        ),
    ],
)
def test_names_of_one_setting_that_disagree_are_a_conflict_naming_both(
    environ: dict[str, str], pair: tuple[str, str]
) -> None:
    check = check_environment(environ)
    assert check.conflicts == (pair,)
    message = check.conflict_message()
    assert message is not None and pair[0] in message and pair[1] in message
    for value in environ.values():  # values may be secrets: never repeated
        assert not value or value not in message


def test_read_settings_refuses_a_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_S3_BUCKET", "s3://ours")
    monkeypatch.setenv("S3_BACKUP_BUCKET", "s3://seed")
    with pytest.raises(ConflictingSettings, match="BACKUP_S3_BUCKET and S3_BACKUP_BUCKET"):
        read_settings()
    monkeypatch.setenv("S3_BACKUP_BUCKET", "s3://ours")
    built, check = read_settings()
    assert built.backup_bucket == "s3://ours" and check.conflicts == ()


def test_variables_that_look_like_settings_but_are_none_are_unread() -> None:
    check = check_environment(
        {
            "EXPORT_FORMATT": "csv",  # misspelt
            "DATABASE_POOL": "5",
            "S3_BACKUP_BUCKETS": "x",
            "EXPORT_FORMAT": "csv",  # a setting
            "CLIENT_S3_BUCKET": "b",  # a seed name
            "EVOTHESIS_VERSION": "dev",  # docker-compose.yml's
            "PATH": "/bin",  # no known prefix
            "POSTGRES_PASSWORD": "x",
        }
    )
    assert check.unread == ("DATABASE_POOL", "EXPORT_FORMATT", "S3_BACKUP_BUCKETS")
    message = check.unread_message()
    assert message is not None and "EXPORT_FORMATT" in message
    assert check_environment({"PATH": "/bin"}).unread_message() is None


def test_every_setting_has_a_known_prefix_or_is_known_by_name() -> None:
    """A misspelling of most settings is caught by its prefix; the rest are short single
    names (ENVIRONMENT, LOG_LEVEL, ...), where a prefix would mostly match other programs'."""
    unprefixed = {name for name in setting_names() if not name.startswith(KNOWN_PREFIXES)}
    assert unprefixed == {
        "ENVIRONMENT",
        "LOG_LEVEL",
        "TRUSTED_PROXIES",
        "MAX_BODY_BYTES",
        "MAX_BATCH_EVENTS",
        "BODY_READ_TIMEOUT",
        "HEADER_READ_TIMEOUT",
        "MAX_HEADER_BYTES",
        "MAX_HEADERS",
        "MAX_IDLE_CONNECTIONS",
        "ENRICHMENT",
        "CLIENT_NAME",
    }


def test_help_names_the_other_names() -> None:
    lines = {line.split()[0]: line for line in environment_help().splitlines()[1:] if line}
    assert "also read as CLIENT_S3_BUCKET" in lines["PROCESSED_S3_BUCKET"]
    assert "also read as S3_BACKUP_BUCKET" in lines["BACKUP_S3_BUCKET"]
