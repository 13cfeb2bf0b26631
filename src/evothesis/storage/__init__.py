"""PostgreSQL: schema migrations, the connection pool, bulk ingestion and read queries.

asyncpg exceptions do not leave this package: callers see ``StorageUnavailable``.
"""
