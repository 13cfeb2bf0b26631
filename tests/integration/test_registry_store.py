"""RegistryStore against a real PostgreSQL: lookups, secrets sealed at rest, conflicts."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from evothesis.errors import Conflict, InvalidSetting, NotFound
from evothesis.registry.secrets import write_key_matches
from evothesis.registry.store import ClientSpec, RegistryStore
from tests.support.postgres import with_registry


def test_lookup_prefers_the_most_specific_pattern(database_url: str) -> None:
    async def work(store: RegistryStore) -> list[str | None]:
        await store.create_client("acme", ClientSpec(name="Acme"))
        await store.create_client("acme_shop", ClientSpec(name="Acme shop", privacy_level="gdpr"))
        await store.add_domain("acme", "*.acme.com")
        await store.add_domain("acme", "acme.com")
        await store.add_domain("acme_shop", "shop.acme.com")
        hosts = ["acme.com", "www.acme.com", "a.b.acme.com", "shop.acme.com", "evilacme.com"]
        found = [await store.lookup(host) for host in hosts]
        return [None if c is None else c.client_id for c in found]

    assert with_registry(database_url, work) == ["acme", "acme", "acme", "acme_shop", None]


def test_deactivated_exact_domain_is_not_handed_to_a_wildcard_owner(database_url: str) -> None:
    async def work(store: RegistryStore) -> tuple[Any, Any]:
        await store.create_client("parent", ClientSpec(name="Parent"))
        await store.create_client("child", ClientSpec(name="Child"))
        await store.add_domain("parent", "*.example.org")
        await store.add_domain("child", "blog.example.org")
        await store.update_client("child", {"active": False})
        return await store.lookup("blog.example.org"), await store.lookup("www.example.org")

    child, other = with_registry(database_url, work)
    assert child is None
    assert other is not None and other.client_id == "parent"


def test_secrets_are_sealed_at_rest_and_the_write_key_is_a_digest(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    salt = b"s" * 32

    async def work(store: RegistryStore) -> tuple[Any, str]:
        spec = ClientSpec(
            name="Clinic",
            privacy_level="hipaa",
            ip_salt=salt,
            export_credentials={"secret_access_key": "very-secret-value"},
        )
        _, write_key = await store.create_client("clinic", spec)
        await store.add_domain("clinic", "clinic.example")
        return await store.lookup("clinic.example"), write_key

    config, write_key = with_registry(database_url, work)
    assert config.ip_salt == salt and config.privacy_level == "hipaa"
    assert write_key_matches(write_key, config.write_key_sha256)
    assert not write_key_matches(write_key + "x", config.write_key_sha256)
    stored = db.execute("SELECT row_to_json(c)::text FROM clients c").fetchone()[0]
    for secret in ("very-secret-value", salt.hex(), write_key):
        assert secret not in stored


def test_a_domain_belongs_to_one_client(database_url: str) -> None:
    async def work(store: RegistryStore) -> None:
        await store.create_client("one", ClientSpec(name="One"))
        await store.create_client("two", ClientSpec(name="Two"))
        assert await store.add_domain("one", "HTTPS://Shared.Example.com:443/") == (
            "shared.example.com"
        )
        with pytest.raises(Conflict, match="belongs to client 'one'"):
            await store.add_domain("two", "shared.example.com")
        with pytest.raises(Conflict, match="already exists"):
            await store.create_client("one", ClientSpec(name="Again"))
        with pytest.raises(NotFound):
            await store.add_domain("nobody", "x.example.com")
        with pytest.raises(InvalidSetting):
            await store.add_domain("one", "*.com")
        with pytest.raises(InvalidSetting):
            await store.create_client("Bad Id", ClientSpec(name="x"))
        with pytest.raises(InvalidSetting):
            await store.create_client("okid", ClientSpec(name="x", privacy_level="loose"))
        with pytest.raises(NotFound):
            await store.remove_domain("two", "shared.example.com")
        await store.remove_domain("one", "shared.example.com")
        assert await store.lookup("shared.example.com") is None
        assert [c.client_id for c in await store.list_clients()] == ["client_test", "one", "two"]

    with_registry(database_url, work)


def test_update_keeps_secrets_unless_replaced(database_url: str) -> None:
    async def work(store: RegistryStore) -> None:
        await store.create_client("keep", ClientSpec(name="Keep", ip_salt=b"k" * 32))
        await store.add_domain("keep", "keep.example")
        record = await store.update_client("keep", {"privacy_level": "gdpr", "name": "Kept"})
        assert (record.name, record.privacy_level, record.domains) == (
            "Kept",
            "gdpr",
            ("keep.example",),
        )
        config = await store.lookup("keep.example")
        assert config is not None and config.ip_salt == b"k" * 32
        await store.update_client("keep", {"ip_salt": b"n" * 32})
        config = await store.lookup("keep.example")
        assert config is not None and config.ip_salt == b"n" * 32
        with pytest.raises(InvalidSetting, match="unknown client fields"):
            await store.update_client("keep", {"client_id": "other"})
        with pytest.raises(NotFound):
            await store.update_client("missing", {"name": "x"})

    with_registry(database_url, work)


def test_development_client_is_registered_once(database_url: str) -> None:
    async def work(store: RegistryStore) -> Any:
        await asyncio.gather(*(store.ensure_development_client() for _ in range(3)))
        return await store.list_clients()

    (client,) = with_registry(database_url, work)
    assert client.client_id == "client_test"
    assert client.domains == ("127.0.0.1", "localhost")


def test_creating_a_client_with_a_taken_domain_creates_nothing(database_url: str) -> None:
    async def work(store: RegistryStore) -> None:
        await store.create_client("rival", ClientSpec(name="Rival"), ["b.example"])
        with pytest.raises(Conflict, match=r"'b\.example' already belongs to client 'rival'"):
            await store.create_client(
                "newcomer", ClientSpec(name="New"), ["a.example", "B.example", "b.example"]
            )
        with pytest.raises(NotFound):
            await store.get_client("newcomer")
        assert await store.lookup("a.example") is None
        record, _ = await store.create_client(
            "newcomer", ClientSpec(name="New"), ["a.example", "A.example:443"]
        )
        assert record.domains == ("a.example",)

    with_registry(database_url, work)
