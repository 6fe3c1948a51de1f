"""Hot reads run straight on the database driver.

A page of the user center runs five short SELECTs. Through an `AsyncSession` each costs about
0.35 ms of CPU (statement cache lookup, execution context, result metadata, ORM loading and two
greenlet switches) for a statement PostgreSQL answers in a fraction of that; asyncpg alone costs
about 0.05 ms. `DriverRead` keeps SQLAlchemy as the only place the statement is written: it
compiles the statement once for PostgreSQL, then on PostgreSQL runs it with asyncpg on the
session's own connection (so it sees what the session sees, tests' outer transactions included),
and applies the column types' own result conversions. On any other database it runs through the
session. Either way the rows read alike: attributes named after the selected columns.

Only plain `SELECT`s of columns go this way (never a write): the result is a tuple of values, not
an object the session tracks. Where the callers need a mapped object (the signed-in account),
`entity_columns` selects its columns under a prefix and `detached` builds the object from the
row as SQLAlchemy's loader would, detached as if its session had closed.
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar, cast

from sqlalchemy import BindParameter, ColumnElement, Label, Select, event, func, inspect, select
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute, Session, make_transient_to_detached
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal, replacement_traverse
from sqlalchemy.types import Boolean, UserDefinedType
from sqlalchemy.util import greenlet_spawn

from simcharge.db import DISCONNECTS, DRIVER_CONNECTION, DRIVER_READS, RAW_CONNECTION

M = TypeVar("M", bound=DeclarativeBase)

# The driver's dialect converts values as SQLAlchemy would; psycopg's only writes the SQL (named
# parameters, so that a name used twice, `IN (:ids)` on two columns, is one `$n`).
_DIALECT = pg_asyncpg.dialect()  # type: ignore[no-untyped-call]
_NAMED = pg_psycopg.dialect()  # type: ignore[no-untyped-call]
# How SQLAlchemy writes a parameter of the psycopg-style compilation, and an expanding IN list.
_PARAM = re.compile(r"(NOT IN|IN) \(__\[POSTCOMPILE_(\w+)\]\)|%\((\w+)\)s")


LONGEST_LIST = 64
"""Longer `IN` lists are sent as one array: `= ANY($n)`."""


def _list_size(length: int) -> int:
    """The number of parameters an `IN` list of `length` values is sent as: the next power of
    two (the last value repeated), or 0 for one array (empty or longer than LONGEST_LIST)."""
    if length == 0 or length > LONGEST_LIST:
        return 0
    return 1 << (length - 1).bit_length()


class DriverRead:
    """One `SELECT` of columns, with `bindparam`s by name. An `expanding` one (an `IN` list) is
    sent as a list of parameters padded to a power of two, `IN ($1, $2, $3, $4)`: PostgreSQL
    then plans the statement once and keeps the plan (with one array, `= ANY($1)`, it plans it
    again on every execution, its generic plan never looking cheaper — ~0.1–0.3 ms of its CPU
    a query), and a few prepared statements serve lists of any length."""

    __slots__ = ("_binds", "_names", "_parts", "_processors", "_row", "_shapes", "_sql",
                 "_values", "statement")

    def __init__(self, statement: Select[*tuple[Any, ...]]) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=_NAMED)
        text = str(compiled)
        if "%%" in text:
            # psycopg's escaped percent sign, which asyncpg would read as two.
            raise ValueError("DriverRead: a literal % in the statement is not supported")
        # The text between parameters, and each parameter: (name, "IN" / "NOT IN" / "").
        parts: list[str | tuple[str, str]] = []
        order: list[str] = []
        at = 0
        for match in _PARAM.finditer(text):
            name = match.group(2) or match.group(3)
            if name not in order:
                order.append(name)
            parts += [text[at:match.start()], (name, match.group(1) or "")]
            at = match.end()
        parts.append(text[at:])
        self._parts = tuple(parts)
        self._names = tuple(order)
        self._shapes: dict[tuple[int, ...], str] = {}
        # Values bound in the statement itself (`col.in_(["a", "b"])`), used when not given.
        self._values = {
            name: bind.value for name, bind in compiled.binds.items() if name in order
        }
        # The types' own conversions of parameters (per element of an `IN` list).
        self._binds = tuple(
            (compiled.binds[name].type._cached_bind_processor(_DIALECT),
             compiled.binds[name].expanding)
            for name in order
        )
        self._sql = self._shaped(tuple(0 if expanding else 1 for _p, expanding in self._binds))
        keys = [column[0] for column in compiled._result_columns]
        self._row: Any = namedtuple("Row", keys)  # type: ignore[misc]
        self._processors: tuple[Callable[[Any], Any] | None, ...] = tuple(
            column[3]._cached_result_processor(_DIALECT, None)
            for column in compiled._result_columns
        )

    def _shaped(self, sizes: tuple[int, ...]) -> str:
        """The statement for parameters sent as `sizes` values each (in `_names` order; an `IN`
        list of 0 is one array)."""
        sql = self._shapes.get(sizes)
        if sql is not None:
            return sql
        markers: dict[str, list[str]] = {}
        n = 0
        for name, size in zip(self._names, sizes, strict=True):
            # An IN list sent as one array (size 0) is one parameter too.
            markers[name] = [f"${n + k + 1}" for k in range(max(size, 1))]
            n += len(markers[name])
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, operator = part
            marks = markers[name]
            if not operator:
                out.append(marks[0])
            elif sizes[self._names.index(name)]:
                out.append(f"{operator} ({', '.join(marks)})")
            else:
                out.append(f"= ANY({marks[0]})" if operator == "IN" else f"<> ALL({marks[0]})")
        sql = self._shapes[sizes] = "".join(out)
        return sql

    async def all(self, session: AsyncSession, params: Mapping[str, Any]) -> list[Any]:
        found = await _driver_of(session)
        if found is None:
            return list((await session.execute(self.statement, dict(params))).all())
        driver, events = found
        args: list[Any] = []
        sizes: list[int] = []
        for name, (process, expanding) in zip(self._names, self._binds, strict=True):
            value: Any = params[name] if name in params else self._values[name]
            if not expanding:
                args.append(value if process is None else process(value))
                sizes.append(1)
                continue
            values = list(value) if process is None else [process(v) for v in value]
            size = _list_size(len(values))
            sizes.append(size)
            if size:
                args += values + values[-1:] * (size - len(values))
            else:
                args.append(values)
        sql = self._shaped(tuple(sizes))
        if events._has_events or (isinstance(events, Connection) and events.engine._has_events):
            # What listens to the engine's statements (logs, tests counting queries) hears these
            # too; there is no cursor or execution context to give it (nor a SQLAlchemy
            # connection, on a read session's own pooled connection).
            events.dispatch.before_cursor_execute(
                events if isinstance(events, Connection) else None,
                None, sql, tuple(args), None, False,
            )
        try:
            records: list[Any] = await driver.fetch(sql, *args)
        except Exception as exc:
            if not (driver.is_closed() or _is_disconnect(exc)):
                raise
            # The server dropped the connection (a restart, a failover). A read session's own
            # pooled connection is thrown away. Then the statement goes through SQLAlchemy:
            # on a live connection it is answered; on a dead one it fails as well, and
            # SQLAlchemy replaces that connection and every older one in the pool
            # (`db._dead_connection`), as for any query.
            del session.info[DRIVER_CONNECTION]
            raw = session.info.pop(RAW_CONNECTION, None)
            if raw is not None:
                await greenlet_spawn(raw.invalidate, exc)
            return list((await session.execute(self.statement, dict(params))).all())
        return self._rows(records)

    def _rows(self, records: Sequence[Sequence[Any]]) -> list[Any]:
        """The driver's records (or tuples) as rows, each value converted as its type says."""
        make, processors = self._row._make, self._processors
        if not any(processors):
            return [make(r) for r in records]
        return [
            make([value if p is None else p(value) for p, value in zip(processors, r, strict=True)])
            for r in records
        ]

    async def first(self, session: AsyncSession, params: Mapping[str, Any]) -> Any | None:
        rows = await self.all(session, params)
        return rows[0] if rows else None

    @property
    def sql(self) -> str:
        """The statement as asyncpg receives it with every `IN` list as one array (for tests
        and EXPLAIN); `sql_for` gives it for lists of given lengths."""
        return self._sql

    def sql_for(self, **lengths: int) -> str:
        """The statement sent for `IN` lists of these lengths (by parameter name)."""
        return self._shaped(tuple(
            _list_size(lengths[name]) if expanding else 1
            for name, (_p, expanding) in zip(self._names, self._binds, strict=True)
        ))

    def parameters(self) -> Sequence[str]:
        return self._names

    def replacing(self, name: str, expression: ColumnElement[Any]) -> DriverRead:
        """The same read with its parameter `name` replaced by `expression` (a scalar subquery:
        the account of a session's token)."""

        def replace(element: Any, **_kw: Any) -> Any:
            if isinstance(element, BindParameter) and element.key == name:
                return expression
            return None

        return DriverRead(
            cast("Select[Any]", replacement_traverse(cast("Any", self.statement), {}, replace))
        )


class ReadTogether:
    """Several `DriverRead`s answered by one statement on PostgreSQL, where each becomes a column
    `ARRAY(SELECT ROW(its columns) FROM … WHERE … ORDER BY … LIMIT …)`: one round trip instead
    of one per read (a page's four reads cost about half the CPU, in simcharge and in
    PostgreSQL), and one snapshot, so the reads agree with each other. The rows read as each
    `DriverRead`'s would. On any other database each read runs in turn.

    Each read has its own parameters (a name may mean different values in two reads): renamed
    in the combined statement, given per read to `all`."""

    __slots__ = ("_combined", "reads")

    def __init__(self, *reads: DriverRead) -> None:
        self.reads = reads
        self._combined = DriverRead(
            select(*(_ArrayOfRows(read, _renamed(read.statement, f"r{i}_"))
                     for i, read in enumerate(reads)))
        )

    async def all(
        self, session: AsyncSession, params: Sequence[Mapping[str, Any]]
    ) -> list[list[Any]]:
        """Each read's rows, in the order of the reads; `params`, each read's parameters."""
        if len(params) != len(self.reads):
            raise ValueError(f"ReadTogether: {len(self.reads)} reads, {len(params)} parameters")
        if await _driver_of(session) is None:
            return [await read.all(session, p) for read, p in zip(self.reads, params, strict=True)]
        combined = {f"r{i}_{name}": value for i, p in enumerate(params) for name, value in p.items()}
        (row,) = await self._combined.all(session, combined)  # no FROM: one row
        return list(row)

    @property
    def sql(self) -> str:
        """The combined statement, every `IN` list as one array (for tests and EXPLAIN)."""
        return self._combined.sql


def _renamed(statement: Select[Any], prefix: str) -> Select[Any]:
    """The statement with each named parameter renamed `prefix` + its name."""

    def rename(element: Any, **_kw: Any) -> Any:
        if isinstance(element, BindParameter) and not element.unique:
            renamed = element._clone()  # a copy: its value and type kept
            renamed.key = renamed._identifying_key = renamed._orig_key = prefix + element.key
            return renamed
        return None

    return cast("Select[Any]", replacement_traverse(cast("Any", statement), {}, rename))


class _RowsOf(UserDefinedType[list[Any]]):
    """The type of a `ReadTogether` column: an array of records, read as its `DriverRead`'s
    rows."""

    cache_ok = False

    def __init__(self, read: DriverRead) -> None:
        self.read = read

    def get_col_spec(self, **_kw: Any) -> str:
        return "record[]"

    def result_processor(self, dialect: Any, coltype: Any) -> Callable[[Any], list[Any]]:
        rows = self.read._rows  # the read's own conversion

        def process(value: Any) -> list[Any]:
            return rows(value or ())

        return process


class _ArrayOfRows(ColumnElement[list[Any]]):
    """`ARRAY(SELECT ROW(columns) …)` of a statement (PostgreSQL only)."""

    inherit_cache = False
    _traverse_internals = [("statement", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, read: DriverRead, statement: Select[Any]) -> None:
        columns = [c.element if isinstance(c, Label) else c for c in statement.selected_columns]
        self.statement = statement.with_only_columns(
            func.row(*columns), maintain_column_froms=True
        ).correlate(None)
        self.type = _RowsOf(read)


@compiles(_ArrayOfRows, "postgresql")
def _array_of_rows(element: _ArrayOfRows, compiler: SQLCompiler, **kw: Any) -> str:
    return f"ARRAY({compiler.process(element.statement.scalar_subquery(), **kw)})"


class AnyOf(ColumnElement[bool]):
    """`column IN (subquery)`. On PostgreSQL it is written `column = ANY(ARRAY(subquery))`: the
    subquery runs once, first, and the column's index finds the rows, where an `IN (subquery)`
    or'ed with another is a filter over every row of the table."""

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [  # noqa: RUF012
        ("column", InternalTraversal.dp_clauseelement),
        ("subquery", InternalTraversal.dp_clauseelement),
    ]

    def __init__(
        self, column: ColumnElement[Any] | QueryableAttribute[Any], subquery: Select[Any]
    ) -> None:
        self.column = column.expression if isinstance(column, QueryableAttribute) else column
        self.subquery = subquery.correlate(None)


@compiles(AnyOf)
def _any_of(element: AnyOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(element.subquery), **kw)


@compiles(AnyOf, "postgresql")
def _any_of_postgresql(element: AnyOf, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} = ANY(ARRAY({compiler.process(element.subquery.scalar_subquery(), **kw)}))"


def entity_columns(model: type[DeclarativeBase], prefix: str) -> list[Label[Any]]:
    """Every mapped column of `model`, labelled `prefix` + its attribute's name."""
    return [getattr(model, key).label(prefix + key) for key in _attributes(model)]


def detached(model: type[M], row: Any, prefix: str) -> M:
    """An instance of `model` from the `entity_columns` of a row: every attribute loaded, no
    change pending, detached (it belongs to no session, as after `Database.read()`)."""
    instance = cast("M", inspect(model).class_manager.new_instance())
    # The instance's dict is its loaded state, as the ORM's own loader fills it.
    instance.__dict__.update({key: getattr(row, prefix + key) for key in _attributes(model)})
    make_transient_to_detached(instance)
    return instance


@cache
def _attributes(model: type[DeclarativeBase]) -> tuple[str, ...]:
    return tuple(attribute.key for attribute in inspect(model).column_attrs)


async def _driver_of(session: AsyncSession) -> tuple[Any, Connection | Engine] | None:
    """The asyncpg connection to run on for a session on PostgreSQL, with what announces its
    statements (the SQLAlchemy connection or engine); None on another database.

    A read session of an unbound database (`Database.read`) that has no connection yet gets a
    pooled connection of its own, given back when the read ends (or as soon as the session
    takes one itself): a raw checkout costs a fifth of a session's connection and close (the
    user center's page runs two reads). Any other session's statements run on its own
    connection, so that they see its transaction (tests' outer transactions included)."""
    found: tuple[Any, Connection | Engine] | None = session.info.get(DRIVER_CONNECTION)
    if found is not None:
        return found
    bind = session.bind
    if bind is not None and bind.dialect.name != "postgresql":
        return None
    if (
        session.info.get(DRIVER_READS)
        and isinstance(bind, AsyncEngine)
        and bind.dialect.driver == "asyncpg"
        and not session.in_transaction()
    ):
        raw = await greenlet_spawn(bind.sync_engine.raw_connection)
        session.info[RAW_CONNECTION] = raw
        found = session.info[DRIVER_CONNECTION] = (raw.driver_connection, bind.sync_engine)
        return found
    connection = await session.connection()
    if connection.dialect.name != "postgresql" or connection.dialect.driver != "asyncpg":
        return None
    raw_fairy = await connection.get_raw_connection()
    assert connection.sync_connection is not None  # a connection just checked out
    found = raw_fairy.driver_connection, connection.sync_connection
    session.info[DRIVER_CONNECTION] = found
    return found


@event.listens_for(Session, "after_begin")
def _give_back_raw(session: Session, _transaction: Any, _connection: Any) -> None:
    """A read session that takes a connection itself (a statement through SQLAlchemy) gives
    back the one `DriverRead` took for it: a read holds one connection at a time."""
    raw = session.info.pop(RAW_CONNECTION, None)
    if raw is not None:
        session.info.pop(DRIVER_CONNECTION, None)
        raw.close()  # in SQLAlchemy's greenlet, where the pool may wait on the driver


@event.listens_for(Session, "after_transaction_end")
def _forget_driver(session: Session, _transaction: Any) -> None:
    """A session that ends its transaction gives its connection back: the next statement may
    run on another one."""
    session.info.pop(DRIVER_CONNECTION, None)


def _is_disconnect(exc: BaseException) -> bool:
    return type(exc).__name__ in DISCONNECTS or isinstance(exc, ConnectionError | TimeoutError)
