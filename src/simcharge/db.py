"""Engines, sessions and the declarative base.

The edge owns the transaction: `Database.transaction()` opens a session inside one database
transaction and commits when the block ends (rolls back on error); `Database.run(fn)` does the
same around a function and retries it when the database reports a deadlock, a serialization
failure or (SQLite) a busy database. Services receive the session, flush, and never commit.

SQLite runs in WAL mode with foreign keys on. Its write transactions start with
`BEGIN IMMEDIATE`, so two writers queue at the start instead of failing half-way; read-only
work uses a second engine whose transactions start with a plain deferred `BEGIN`. On
PostgreSQL, `Database.read()` runs its statements without a transaction (autocommit, the
writer's pool): at READ COMMITTED each statement has its own snapshot anyway. A read session
refuses to write (`ReadOnlySession`), so nothing can be committed by accident.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncpg
from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Dialect,
    MetaData,
    Table,
    TypeDecorator,
    Uuid,
    and_,
    event,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.pool import NullPool
from sqlalchemy.util import greenlet_spawn

from simcharge.metrics import DB_RETRIES

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it as a plain class attribute
        datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
        int: BigInteger(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        dict[str, str]: JSONType,
        list[str]: JSONType,
    }


def _sqlite_url_ensure_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _install_sqlite_hooks(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, below, decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        # SQLite's lower() folds ASCII only; the back office's search lowers as PostgreSQL does.
        dbapi_connection.create_function("unicode_lower", 1, _unicode_lower, deterministic=True)

    begin_sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin_sql)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long PostgreSQL may take to accept a connection and to answer a statement, in
    seconds (None: no limit). Enforced by asyncpg on our side (`timeout`, `command_timeout`),
    not by the server's `statement_timeout`: a server that stopped answering (it accepts TCP
    and says nothing) never enforces its own limit, and PgBouncer refuses a
    `statement_timeout` startup parameter unless told to ignore it. When a statement times
    out asyncpg asks the server to cancel it; the request's transaction is rolled back (503
    `service-unavailable` with `Retry-After`, see `is_unreachable`)."""

    connect: float | None = None
    statement: float | None = None

    @classmethod
    def for_web(cls, settings: Any) -> Timeouts:
        """The web processes' (and their in-process worker's): a request answers in bounded
        time, `SIMCHARGE_DB_STATEMENT_TIMEOUT_SECONDS` a statement (0: none)."""
        return cls(
            settings.db_connect_timeout_seconds, settings.db_statement_timeout_seconds or None
        )

    @classmethod
    def for_commands(cls, settings: Any) -> Timeouts:
        """The command line's and `simcharge worker`'s: connecting is bounded, a statement is
        not — migrations, imports, sweeps and backfills legitimately run long, and nobody
        waits on them behind a proxy."""
        return cls(settings.db_connect_timeout_seconds, None)


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    echo: bool = False,
    immediate: bool = True,
    null_pool: bool = False,
    timeouts: Timeouts | None = None,
) -> AsyncEngine:
    # Statements' parameters (e-mail addresses, password hashes, sealed codes) stay out of the
    # text of database errors, which are logged.
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if null_pool:
        kwargs["poolclass"] = NullPool
    if url.startswith("sqlite"):
        _sqlite_url_ensure_dir(url)
        kwargs["connect_args"] = {"timeout": 15}
        engine = create_async_engine(url, **kwargs)
        _install_sqlite_hooks(engine, immediate=immediate)
        return engine
    if not null_pool:
        # No pre-ping (a round trip per checkout): a connection found dead is invalidated by
        # SQLAlchemy, and `Database.run` retries the transaction on a fresh one.
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    if timeouts is not None and make_url(url).get_driver_name() == "asyncpg":
        connect_args: dict[str, float] = {}
        if timeouts.connect is not None:
            connect_args["timeout"] = timeouts.connect
        if timeouts.statement is not None:
            connect_args["command_timeout"] = timeouts.statement
        kwargs["connect_args"] = connect_args
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "handle_error", _dead_connection)
    return engine


def _dead_connection(context: ExceptionContext) -> None:
    """A connection the server dropped (a restart, a failover) is a disconnect, whatever
    asyncpg calls it: the pool then replaces it and every connection older than it, and the
    transaction is retried, instead of each pooled connection failing one request after a
    restart ("connection was closed in the middle of operation")."""
    seen: BaseException | None = context.original_exception
    for _ in range(4):  # the asyncpg error is wrapped once or twice by the adapter
        if seen is None:
            break
        name = type(seen).__name__
        if name in DISCONNECTS or isinstance(seen, ConnectionError | TimeoutError):
            context.is_disconnect = True
            return
        seen = seen.__cause__ or seen.__context__


DISCONNECTS = frozenset(
    {"ConnectionDoesNotExistError", "ConnectionFailureError", "AdminShutdownError",
     "CannotConnectNowError", "CrashShutdownError"}
)


_IDLE_SESSIONS = 64
_READ_ONLY = "simcharge.read_only"
DRIVER_READS = "simcharge.driver_reads"
"""A read session's mark: `DriverRead` may take a pooled connection of its own for it, without
the session's (an unbound database's read sessions)."""
RAW_CONNECTION = "simcharge.raw_connection"
DRIVER_CONNECTION = "simcharge.driver_connection"
"""The driver connection `DriverRead` uses for a session (its own, or RAW_CONNECTION's)."""
"""The pooled connection `DriverRead` took for a read session; given back when it ends."""


class ReadOnlySession(RuntimeError):
    """Code tried to write through a session from `Database.read()` (a programming error)."""


@event.listens_for(Session, "do_orm_execute")
def _refuse_write_statement(state: Any) -> None:
    if state.session.info.get(_READ_ONLY) and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise ReadOnlySession(f"a read session cannot run {state.statement}")


@event.listens_for(Session, "do_orm_execute")
def _locked_reads_are_fresh(state: Any) -> None:
    """A read that locks rows (`FOR UPDATE`, `session.get(…, with_for_update=…)`) loads them as
    they are once locked, also into objects the session holds from an earlier, unlocked read:
    without this SQLAlchemy takes the lock and keeps the stale values (a refund's "what is left"
    counted from an order read before the previous refund committed)."""
    if state.is_select and getattr(state.statement, "_for_update_arg", None) is not None:
        state.update_execution_options(populate_existing=True)


@event.listens_for(Session, "before_flush")
def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get(_READ_ONLY) and (session.new or session.deleted or session.dirty):
        raise ReadOnlySession("a read session cannot write: use Database.run or transaction")


def _commit_and_close(session: Session) -> None:
    try:
        session.commit()
    finally:
        session.close()


def dialect_name(session: AsyncSession) -> str:
    bind = session.bind
    return bind.dialect.name if bind is not None else session.get_bind().dialect.name


def upsert_insert(session: AsyncSession, table: Table) -> Any:
    """`INSERT` that understands `ON CONFLICT` on this session's database."""
    return (pg_insert if dialect_name(session) == "postgresql" else sqlite_insert)(table)


_IF_ABSENT: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], Any] = {}


def older_than(
    created: Any, ident: Any, before: datetime, before_id: uuid.UUID | None
) -> ColumnElement[bool]:
    """The rows after a page's last one in a list ordered newest first by (`created`, `ident`):
    created before `before`, or at that very time with a smaller id than `before_id` — rows
    made in one transaction share their time, and a page may end among them. Without
    `before_id`, only rows created before (what a caller that kept only the time asks)."""
    if before_id is None:
        return cast(ColumnElement[bool], created < before)
    return or_(created < before, and_(created == before, ident < before_id))


def insert_if_absent(
    session: AsyncSession, table: Table, *index_elements: str, returning: tuple[str, ...] = ()
) -> Any:
    """`INSERT … ON CONFLICT (index_elements) DO NOTHING [RETURNING …]` for this session's
    database, built once per database and kept: pass the rows as parameters. Building it anew
    for each call cost a busy request more Python than running it."""
    key = (dialect_name(session), table.name, index_elements, returning)
    stmt = _IF_ABSENT.get(key)
    if stmt is None:
        stmt = upsert_insert(session, table).on_conflict_do_nothing(
            index_elements=list(index_elements)
        )
        if returning:
            stmt = stmt.returning(*(table.c[name] for name in returning))
        _IF_ABSENT[key] = stmt
    return stmt


def table_of(model: type[DeclarativeBase]) -> Table:
    return cast(Table, model.__table__)


QUERY_CANCELED = "57014"
"""A statement cancelled by the server: its `statement_timeout` (set for the role, say), or an
administrator's `pg_cancel_backend`."""

# SQLSTATEs worth running the transaction again for, and what the retry metric calls them.
_RETRYABLE_SQLSTATES = {"40001": "serialization_failure", "40P01": "deadlock"}


class RetryableError(Exception):
    """Raised by a service when the transaction lost a race and should simply run again."""


def retry_reason(exc: BaseException) -> str | None:
    """Why a failed transaction is worth running again — a deadlock, a serialization failure,
    a busy SQLite database, a lost race, or a connection that died (the pool replaces it) —
    or None when it is not."""
    if isinstance(exc, RetryableError):
        return type(exc).__name__
    if _closed_under_us(exc):
        return "disconnect"
    if isinstance(exc, asyncpg.PostgresError):
        # Raised by a statement sent straight to asyncpg (`driver_in_transaction`), not wrapped
        # by SQLAlchemy: a deadlock there is as worth a retry as anywhere.
        return _RETRYABLE_SQLSTATES.get(exc.sqlstate or "")
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return "disconnect"
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state in _RETRYABLE_SQLSTATES:
        return _RETRYABLE_SQLSTATES[state]
    text = str(orig).lower()
    if "deadlock detected" in text:
        return "deadlock"
    if "database is locked" in text:
        return "database_locked"
    return None


def _closed_under_us(exc: BaseException) -> bool:
    """asyncpg's own "connection is closed", raised unwrapped when the server went away while
    a connection was being set up (SQLAlchemy's on-connect codec setup during a restart) or used
    straight through the driver. Other interface errors are programming errors."""
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def is_unreachable(exc: BaseException) -> bool:
    """The database cannot be reached now: the connection was refused or dropped, the server
    is starting or shutting down (a restart, a failover), or it did not answer in time (a
    connection or statement past its `Timeouts`, raised by asyncpg as TimeoutError; a statement
    the server cancelled, SQLSTATE 57014). Worth answering 503 and retrying later, unlike a
    fault of the request itself; the transaction was rolled back. Not retried by
    `Database.run`: a database that does not answer would only be waited on again."""
    seen: BaseException | None = exc
    for _ in range(5):  # wrapped by SQLAlchemy and the adapter
        if seen is None:
            return False
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if (
            type(seen).__name__ in DISCONNECTS
            or isinstance(seen, ConnectionError | TimeoutError)
            or getattr(seen, "sqlstate", None) == QUERY_CANCELED
            or _closed_under_us(seen)
        ):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


class Database:
    """What a process needs to reach its database: engines, session factories, transactions."""

    def __init__(
        self,
        writer: AsyncEngine,
        reader: AsyncEngine | None = None,
        *,
        bind: AsyncConnection | None = None,
    ) -> None:
        self.engine = writer
        self._reader_engine = reader
        if bind is not None:
            # Tests: every session joins one outer transaction and "commits" to a savepoint.
            factory = async_sessionmaker(
                bind=bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            self._writer = factory
            self._reader = async_sessionmaker(
                bind=bind, expire_on_commit=False, join_transaction_mode="create_savepoint",
                info={_READ_ONLY: True},
            )
        else:
            self._writer = async_sessionmaker(writer, expire_on_commit=False)
            self._reader = async_sessionmaker(
                reader or writer, expire_on_commit=False,
                info={_READ_ONLY: True, DRIVER_READS: True},
            )
        self._bound = bind is not None
        # Closed sessions are clean (no objects, no transaction) and cost ~80 µs to build:
        # keep a few to reuse. asyncio runs one task at a time, so the list needs no lock.
        self._idle: list[AsyncSession] = []
        self._idle_reads: list[AsyncSession] = []
        # Sessions that share one test connection must take turns.
        self._turn: asyncio.Lock | None = asyncio.Lock() if self._bound else None
        self.dialect = writer.dialect.name

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        null_pool: bool = False,
        timeouts: Timeouts | None = None,
    ) -> Database:
        """`timeouts`: PostgreSQL's (`Timeouts.for_web` of the settings in the web processes,
        `create_app`; `Timeouts.for_commands` on the command line; none given: no limit)."""
        writer = create_engine(
            url, pool_size=pool_size, echo=echo, null_pool=null_pool, timeouts=timeouts
        )
        if url.startswith("sqlite"):
            reader = create_engine(
                url, pool_size=pool_size, echo=echo, immediate=False, null_pool=null_pool
            )
        else:
            # Reads on PostgreSQL run without BEGIN and ROLLBACK, over the writer's own pool: at
            # READ COMMITTED each statement sees its own snapshot either way, so the transaction
            # gave a read nothing but two round trips.
            reader = writer.execution_options(isolation_level="AUTOCOMMIT")
        return cls(writer, reader)

    @classmethod
    def bound_to(cls, connection: AsyncConnection) -> Database:
        return cls(connection.engine, bind=connection)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one write transaction, committed when the block exits normally and
        rolled back when it raises."""
        async with self._taking_turns():
            session = self._take_session()
            try:
                yield session
            except BaseException:
                await session.close()
                raise
            await self._commit(session)

    def _take_session(self) -> AsyncSession:
        return self._idle.pop() if self._idle else self._writer()

    async def _commit(self, session: AsyncSession) -> None:
        # Commit and close in one trip into SQLAlchemy's greenlet, not two, then keep the
        # clean session for the next transaction: on a busy two-core machine each trip and
        # each new session cost several percent of a short transaction (README "Performance").
        await session.run_sync(_commit_and_close)
        if len(self._idle) < _IDLE_SESSIONS and not self._bound:
            session.info.clear()
            self._idle.append(session)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading. It is closed, never committed: whatever it might have changed
        is rolled back when its connection returns to the pool; what it loaded stays readable."""
        async with self._taking_turns():
            # A closed session is clean and can be used again: kept, as the writers' are.
            session = self._idle_reads.pop() if self._idle_reads else self._reader()
            try:
                yield session
            finally:
                raw = session.info.pop(RAW_CONNECTION, None)
                if raw is not None:  # taken by `DriverRead`: back to the pool
                    session.info.pop(DRIVER_CONNECTION, None)
                    await greenlet_spawn(raw.close)
                await session.close()
                if len(self._idle_reads) < _IDLE_SESSIONS and not self._bound:
                    self._idle_reads.append(session)

    @asynccontextmanager
    async def _taking_turns(self) -> AsyncIterator[None]:
        if self._turn is None:
            yield
        else:
            async with self._turn:
                yield

    async def run(self, fn: Callable[[AsyncSession], Awaitable[T]], *, attempts: int = 8) -> T:
        """Run `fn` in one transaction and commit; retry deadlocks and serialization failures."""
        for attempt in range(1, attempts + 1):
            try:
                if self._turn is not None:
                    async with self.transaction() as session:
                        return await fn(session)
                # The same as above without two generator-based context managers: this is
                # every write's path.
                session = self._take_session()
                try:
                    result = await fn(session)
                except BaseException:
                    await session.close()
                    raise
                await self._commit(session)
                return result
            except (DBAPIError, RetryableError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                reason = retry_reason(exc)
                if self._bound or attempt == attempts or reason is None:
                    raise
                DB_RETRIES.labels(reason).inc()
                await asyncio.sleep(min(0.5, 0.005 * 2**attempt) * random.random())  # noqa: S311
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def autocommit_driver(self) -> AsyncIterator[Any | None]:
        """A pooled asyncpg connection in no transaction, where each statement commits by
        itself: for work that is one statement, which then costs one round trip, not three
        (BEGIN, the statement, COMMIT). None when the database is not PostgreSQL over asyncpg,
        or when it is bound to a test's transaction.

        A connection whose statement failed on the server goes back to the pool as usual; one
        that failed otherwise (dropped, or the task cancelled mid-statement) is thrown away."""
        if self._bound or self.engine.dialect.driver != "asyncpg":
            yield None
            return
        raw = await greenlet_spawn(self.engine.sync_engine.raw_connection)
        driver: Any = raw.driver_connection
        try:
            yield driver
        except BaseException as exc:
            if isinstance(exc, asyncpg.PostgresError) and not (
                driver.is_closed() or type(exc).__name__ in DISCONNECTS
            ):
                await greenlet_spawn(raw.close)
            else:
                await greenlet_spawn(raw.invalidate, exc if isinstance(exc, Exception) else None)
            raise
        await greenlet_spawn(raw.close)

    async def ping(self) -> None:
        async with self.read() as session:
            await session.execute(select(literal_column("1")))

    async def dispose(self) -> None:
        if not self._bound:
            await self.engine.dispose()
            # On PostgreSQL the reader is the writer with other options: the same pool.
            if self._reader_engine is not None and self._reader_engine.pool is not self.engine.pool:
                await self._reader_engine.dispose()
