"""Running Alembic from code, on a connection we already hold (so it works inside asyncio).

On PostgreSQL an upgrade or downgrade holds an advisory lock for its whole run, so that several
processes started at once (containers of a new release, `--scale web=2`) migrate one after the
other: the first applies the migrations, the others then find the schema at head and do nothing.

The lock belongs to the server session, which spans the migrations' transactions. Behind a
pooler in transaction mode (PgBouncer's `pool_mode = transaction`) each transaction may run in
another server session: the lock would not be held (nor released). So once taken it is looked
for from a new transaction; when that one's session does not hold it, the upgrade stops
(`BehindPooler`) before migrating anything: run it against PostgreSQL itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FILE_TEMPLATE = "%%(year)d-%%(month).2d-%%(day).2d-%%(hour).2d%%(minute).2d_%%(slug)s"
MIGRATION_LOCK = int.from_bytes(b"simcharg", "big") & (2**63 - 1)
"""The key of the PostgreSQL advisory lock held while migrating (any 64-bit number of our own)."""


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", FILE_TEMPLATE)
    cfg.set_main_option("timezone", "UTC")
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


class NewerSchema(Exception):
    """The database is at a revision this release does not know: a newer release migrated it
    (this is the previous image, redeployed to roll back)."""

    def __init__(self, revision: str) -> None:
        super().__init__(revision)
        self.revision = revision


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    current = _current(connection)
    if current is not None and not known_revision(current):
        # Not an error to stop a rollback on: migrations only ever add what an older release
        # can run beside (see README); there is nothing for this release to apply.
        raise NewerSchema(current)
    command.upgrade(cfg, revision)


def known_revision(revision: str) -> bool:
    """Whether this release has the migration `revision`."""
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _downgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


class BehindPooler(Exception):
    """The migration lock, once taken, is not held by the server session of the next
    transaction: a pooler in transaction mode (PgBouncer) is between us and PostgreSQL."""

    def __str__(self) -> str:
        return (
            "the migration lock is not held from one transaction to the next: a connection "
            "pooler in transaction mode (PgBouncer) is in between; run `simcharge db upgrade` "
            "with SIMCHARGE_DATABASE_URL pointing at PostgreSQL itself (nothing was migrated)"
        )


_HOLDS_LOCK = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid()"
    " AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = :key)"
)


async def holds_migration_lock(conn: AsyncConnection) -> bool:
    """Whether this connection's server session holds the migration lock now."""
    held = (await conn.execute(_HOLDS_LOCK, {"key": MIGRATION_LOCK})).scalar()
    await conn.commit()
    return bool(held)


@asynccontextmanager
async def migration_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    """Hold the migration lock on `conn` (PostgreSQL; waits while another process holds it).
    A session-level lock: it spans the migrations' own transactions and is released at the end
    (or when the connection drops, if the process dies). `BehindPooler` when the next
    transaction's session does not hold it (see the module's docstring)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    await conn.commit()
    if not await holds_migration_lock(conn):
        # Best effort: the session that took it may be another one than this transaction's.
        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        await conn.commit()
        raise BehindPooler()
    try:
        yield
    finally:
        await conn.rollback()
        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        await conn.commit()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.connect() as conn, migration_lock(conn):
        await conn.run_sync(_upgrade, revision)
        await conn.commit()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.connect() as conn, migration_lock(conn):
        await conn.run_sync(_downgrade, revision)
        await conn.commit()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
