"""The workers' PostgreSQL database: checked before a worker starts, created and migrated
by ``cadre db migrate``."""

from __future__ import annotations


async def check_database(dsn: str, prefix: str) -> None:
    """Refuse to start on a database that is not there or not migrated, saying what to do."""
    from ..errors import ConfigurationError
    from ..stores._postgres_admin import database_name, probe, safe_dsn

    found = await probe(dsn, table=f"{prefix}agents")
    if found == "no database":
        raise ConfigurationError(
            f"database {database_name(dsn)!r} does not exist at {safe_dsn(dsn)}: run "
            "`cadre db migrate` (it creates the database and the tables)"
        )
    if found == "no tables":
        raise ConfigurationError(
            f"database {database_name(dsn)!r} has no {prefix}* tables: run `cadre db migrate`"
        )


async def migrate(dsn: str, prefix: str) -> str | None:
    """Create the database if it is missing (and we may), then the PostgreSQL tables
    (``cadre db migrate``); the name of the database it created, if it did."""
    from ..stores._postgres_admin import create_database, probe
    from ..stores.postgres import PostgresStore

    created = await create_database(dsn) if await probe(dsn) == "no database" else None
    store = PostgresStore(dsn, prefix=prefix)
    try:
        await store.migrate()
    finally:
        await store.close()
    return created
