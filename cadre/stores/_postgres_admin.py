"""Before a worker or `cadre db migrate` uses PostgreSQL: is the database there, and can it
be created? One quick connection, so a missing database is named at once rather than after
the pool's connect timeout."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError, StoreError

PROBE_TIMEOUT = 5
"""Seconds to wait for the server when probing (libpq's connect_timeout)."""


def safe_dsn(dsn: str) -> str:
    """`dsn` with its password, if any, replaced by ``***`` (for logs and messages)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _connect_args(dsn: str, **changes: Any) -> str:
    from psycopg.conninfo import make_conninfo

    return str(make_conninfo(dsn, connect_timeout=PROBE_TIMEOUT, **changes))


def database_name(dsn: str) -> str:
    """The database a DSN names (libpq's default: the user's name)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    return str(params.get("dbname") or params.get("user") or "postgres")


def _missing(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == "3D000" or (
        "does not exist" in str(exc) and "database" in str(exc)
    )


async def probe(dsn: str, table: str | None = None) -> str:
    """``ok``; ``no database`` when the server says the database does not exist; ``no
    tables`` when `table` is not in it. `StoreError` naming the reason when the server
    cannot be reached or refuses us."""
    from ..stores.postgres import _psycopg

    psycopg, _ = _psycopg()
    try:
        conn = await psycopg.AsyncConnection.connect(_connect_args(dsn))
    except psycopg.Error as exc:
        if _missing(exc):
            return "no database"
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"cannot connect to PostgreSQL at {safe_dsn(dsn)}: {reason}") from None
    try:
        if table is not None:
            cursor = await conn.execute("SELECT to_regclass(%s)", (table,))
            row = await cursor.fetchone()
            if row is None or row[0] is None:
                return "no tables"
        return "ok"
    finally:
        await conn.close()


async def create_database(dsn: str) -> str:
    """Create the database `dsn` names, connecting to the server's ``postgres`` maintenance
    database; its name. `ConfigurationError` saying how to create it by hand when we may
    not."""
    from ..stores.postgres import _psycopg

    psycopg, _ = _psycopg()
    from psycopg import sql

    name = database_name(dsn)
    try:
        conn = await psycopg.AsyncConnection.connect(
            _connect_args(dsn, dbname="postgres"), autocommit=True
        )
    except psycopg.Error as exc:
        raise _by_hand(dsn, name, exc) from None
    try:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        pass  # created meanwhile by another `cadre db migrate`
    except psycopg.Error as exc:
        raise _by_hand(dsn, name, exc) from None
    finally:
        await conn.close()
    return name


def _by_hand(dsn: str, name: str, exc: BaseException) -> ConfigurationError:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    where = f"-h {params.get('host', 'localhost')} -p {params.get('port', 5432)}"
    user = f" -U {params['user']}" if params.get("user") else ""
    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return ConfigurationError(
        f"database {name!r} does not exist and could not be created ({reason}); create it "
        f"as a user who may (`createdb {where}{user} {name}`), then run `cadre db migrate` "
        "again"
    )
