"""Where objects go: bucket URLs and connection options, decided without touching the network.

A bucket is named by a URL that obstore understands (``s3://bucket/prefix``, ``gs://…``,
``az://…``, ``file:///folder``) or by a bare S3 bucket name, as the seed's ``*_S3_BUCKET``
variables are. Unset buckets of the embedded default are folders under the data directory,
so the whole pipeline runs on one machine with nothing configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from evothesis.errors import BucketConfigError

#: Connection options that are never shown back (status pages, logs, errors).
SECRET_OPTIONS: Final = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "account_key",
        "sas_key",
        "client_secret",
        "service_account_key",
        "bearer_token",
    }
)
#: Options a client's sealed export credentials may carry (obstore's configuration keys).
CLIENT_OPTION_KEYS: Final = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "endpoint",
        "region",
        "service_account_key",
        "account_name",
        "account_key",
        "sas_key",
    }
)
_SCHEMES: Final = frozenset(
    {"s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "file", "memory", "http", "https"}
)


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """A store to open: its URL plus obstore options (credentials, endpoint, region)."""

    url: str
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.url.startswith("file://")

    @property
    def local_path(self) -> Path:
        return Path(urlsplit(self.url).path)

    def describe(self) -> dict[str, object]:
        """What operators may see: the URL and non-secret options."""
        public = {k: v for k, v in sorted(self.options.items()) if k not in SECRET_OPTIONS}
        return {
            "url": self.url,
            **public,
            "credentials": any(k in SECRET_OPTIONS for k in self.options),
        }


@dataclass(frozen=True, slots=True)
class ExportBuckets:
    """The operator's buckets: raw objects, default processed output, metering."""

    raw: BucketSpec
    processed: BucketSpec
    backup: BucketSpec

    def describe(self) -> dict[str, object]:
        return {name: getattr(self, name).describe() for name in ("raw", "processed", "backup")}


def bucket_url(value: str | None, *, default_folder: Path) -> str:
    """A URL for a configured value: unset -> the local folder, a bare name -> S3."""
    if not value:
        return default_folder.resolve().as_uri()
    value = value.strip()
    if "://" not in value:
        if "/" in value.strip("/"):
            bucket, _, prefix = value.strip("/").partition("/")
            return f"s3://{bucket}/{prefix}"
        return f"s3://{value.strip('/')}"
    scheme = value.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise BucketConfigError(
            f"unsupported bucket URL scheme {scheme!r} in {value!r} "
            "(use s3://, gs://, az://, file:// or a bare S3 bucket name)"
        )
    parts = urlsplit(value)
    if scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path):
        raise BucketConfigError(f"file bucket URLs need an absolute path: {value!r}")
    return value


def s3_options(
    *,
    endpoint: str | None,
    region: str | None,
    access_key: str | None,
    secret_key: str | None,
) -> dict[str, str]:
    """obstore options for the operator's buckets; unset values fall back to obstore's own
    reading of the standard ``AWS_*`` variables."""
    options: dict[str, str] = {}
    if endpoint:
        options["endpoint"] = endpoint
    if region:
        options["region"] = region
    if access_key:
        options["access_key_id"] = access_key
    if secret_key:
        options["secret_access_key"] = secret_key
    return options


def client_bucket(
    destination: str | None, credentials: Mapping[str, str] | None, *, default: BucketSpec
) -> BucketSpec:
    """A client's own destination when it has one, else the operator's processed bucket."""
    if not destination:
        return default
    url = bucket_url(destination, default_folder=Path("."))
    options = dict(credentials or {})
    unknown = sorted(set(options) - CLIENT_OPTION_KEYS)
    if unknown:
        raise BucketConfigError(
            f"unknown export credential key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(CLIENT_OPTION_KEYS))}"
        )
    return BucketSpec(url, options)
