"""Object storage behind one small interface over obstore: S3 and S3-compatible stores, GCS,
Azure, and local folders all take the same code path.

Every failure of a store (network, credentials, missing bucket, bad configuration) comes out
as ``ObjectStoreError`` with a readable message, which the pipeline records on the batch or
the client it was working for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import LocalStore, ObjectStore, from_url

if TYPE_CHECKING:  # obstore declares its option types in its stubs only
    from obstore.store import ClientConfig, RetryConfig

from evothesis.errors import ObjectStoreError
from evothesis.objects.buckets import BucketSpec

#: Each request is bounded, and obstore retries transient failures a few times (exponential
#: backoff with jitter) before the pipeline's own, slower retry schedule takes over.
_CLIENT_OPTIONS: Final[ClientConfig] = {
    "connect_timeout": timedelta(seconds=5),
    "timeout": timedelta(seconds=60),
}
_RETRY: Final[RetryConfig] = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=30),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=5),
        "base": 2,
    },
}
#: A probe (an operator testing a destination) wants the store's first answer, at once.
_PROBE_CLIENT_OPTIONS: Final[ClientConfig] = {
    "connect_timeout": timedelta(seconds=5),
    "timeout": timedelta(seconds=15),
}
_NO_RETRY: Final[RetryConfig] = {"max_retries": 0, "retry_timeout": timedelta(seconds=15)}


class Bucket:
    """One store (with its prefix); keys are relative to the URL's path."""

    def __init__(self, spec: BucketSpec, *, probe: bool = False) -> None:
        """``probe``: no retries and short timeouts, so that the store's own error comes
        back within seconds (an operator testing a destination is waiting for it)."""
        self.spec = spec
        self._store = _open(spec, probe=probe)

    async def put(self, key: str, data: bytes) -> None:
        """Atomic whole-object write; an existing object at ``key`` is replaced."""
        try:
            await obstore.put_async(self._store, key, data)
        except (ObstoreError, OSError, TimeoutError) as exc:
            raise ObjectStoreError(_describe("write", self.spec, key, exc)) from exc

    async def get(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except (ObstoreError, OSError, TimeoutError) as exc:
            raise ObjectStoreError(_describe("read", self.spec, key, exc)) from exc

    async def get_if_exists(self, key: str) -> bytes | None:
        """The object, or ``None`` when there is none at ``key`` (any other failure raises)."""
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            return None
        except (ObstoreError, OSError, TimeoutError) as exc:
            raise ObjectStoreError(_describe("read", self.spec, key, exc)) from exc

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, key)
        except (ObstoreError, OSError, TimeoutError) as exc:
            raise ObjectStoreError(_describe("delete", self.spec, key, exc)) from exc

    async def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""
        try:
            found: list[str] = []
            async for chunk in obstore.list(self._store, prefix, chunk_size=1000):
                found.extend(meta["path"] for meta in chunk)
        except (ObstoreError, OSError, TimeoutError) as exc:
            raise ObjectStoreError(_describe("list", self.spec, prefix, exc)) from exc
        return sorted(found)


def _open(spec: BucketSpec, *, probe: bool) -> ObjectStore:
    try:
        if spec.is_local:
            return LocalStore(spec.local_path, mkdir=True)
        options = dict(spec.options)
        client_options = (_PROBE_CLIENT_OPTIONS if probe else _CLIENT_OPTIONS).copy()
        if options.get("endpoint", "").startswith("http://"):
            client_options["allow_http"] = True
        # The options are whichever store's the URL names (S3, GCS, Azure): checked by
        # obstore at run time, not by its per-store overloads.
        config: Any = options
        return from_url(
            spec.url,
            config=config,
            client_options=client_options,
            retry_config=_NO_RETRY if probe else _RETRY,
        )
    except (ObstoreError, OSError, ValueError) as exc:
        raise ObjectStoreError(f"cannot open bucket {spec.url}: {_first_line(exc)}") from exc


def _describe(action: str, spec: BucketSpec, key: str, exc: BaseException) -> str:
    return f"could not {action} {spec.url.rstrip('/')}/{key}: {type(exc).__name__}: " + (
        _first_line(exc)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
