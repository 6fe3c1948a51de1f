"""The ledger's journal for a period: `GET /api/v1/admin/ledger/transfers` — every transfer that
moved money (posted at once, or a reservation's posting), in the order it was posted, as JSON
pages or one CSV of the whole period (streamed, read in keyset chunks: memory follows a chunk,
not the period). Open to `ledger.read` (finance, admins; the API-key scopes `ledger:read` and
`reports:read`), audited as `ledger.journal_read`.

A period is the reports' (`reports.period`: the operator's days, at most 366); `account` narrows
it to the transfers into or out of one kind of account (`clearing`, `wallet`…) or one operator
account (`clearing:stripe:USD`, its shards together)."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from simcharge.api.deps import API_PREFIX, DB, AppSettings
from simcharge.backoffice import audit, reports
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import require
from simcharge.backoffice.roles import Permission
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.translations import N_
from simcharge.ledger.models import LedgerAccount, LedgerTransfer

router = APIRouter(prefix=f"{API_PREFIX}/admin/ledger", tags=["admin"])
LedgerReader = Annotated[Actor, require(Permission.ledger_read)]

MAX_LIMIT = 500
MAX_OFFSET = 1_000_000
"""The most rows a page may skip: a number the database takes, far beyond a page a person
reads (a whole period is the CSV)."""
CHUNK = 1000
"""Rows read at a time for the CSV, each chunk in its own short read."""
_ACCOUNT = re.compile(r"[a-z][a-z_]{0,31}(:[A-Za-z0-9_.:-]{1,120})?")
"""An account code (`clearing`) or an operator account's key (`clearing:stripe:USD`)."""


@dataclass(frozen=True, slots=True)
class JournalRow:
    id: str
    created_at: str
    """When the ledger posted it, UTC (ISO 8601, `Z`)."""
    code: str
    """Why the money moved: `topup`, `fee`, `unapplied`, `applied`, `refund`, `dispute_loss`…"""
    kind: str
    """`posted`, or `post_pending` (a reservation's posting: a refund confirmed)."""
    debit_account: str
    """An operator account's key without its shard (`clearing:stripe:USD`), or the kind of a
    line's account (`wallet`, `bucket`)."""
    credit_account: str
    amount: int
    """Minor units of `unit` (cents; `VOICE_S`, `DATA_B`, `SMS` are their own)."""
    unit: str
    reference: str
    """The business object behind it (`order:<id>`, `refund:<id>`…), or empty."""


COLUMNS = [f.name for f in fields(JournalRow)]
CSV_HEADER = [f"{c}_minor" if c == "amount" else c for c in COLUMNS]


class JournalEntryOut(BaseModel):
    id: uuid.UUID
    created_at: str = Field(description="When the ledger posted it, UTC, ISO 8601")
    code: str
    kind: str
    debit_account: str
    credit_account: str
    amount: int = Field(description="Minor units of `unit`")
    unit: str
    reference: str


def account_named(account: str | None) -> str | None:
    """`account` as asked, checked: a code or a key; 422 naming the field otherwise."""
    if account is None or account == "":
        return None
    if not _ACCOUNT.fullmatch(account):
        raise ValidationFailed(
            N_("Name an account code (clearing, wallet…) or an operator account's key "
               "(clearing:stripe:USD)."),
            field="account",
        )  # fmt: skip
    return account


def _matches(account: Any, name: str) -> ColumnElement[bool]:
    found: ColumnElement[bool]
    if ":" in name:  # an operator account, all its shards (`key#1` … `key#15`)
        found = or_(account.key == name, account.key.startswith(f"{name}#", autoescape=True))
    else:
        found = account.code == name
    return found


def _shown(key: str | None, code: str | None, account_id: Any) -> str:
    if key:
        return key.split("#")[0]
    return code or str(account_id)


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Query:
    """The period's transfers (and an account's, if named), in the order they were posted."""

    def __init__(self, p: reports.Period, account: str | None) -> None:
        t = LedgerTransfer
        self.debit, self.credit = aliased(LedgerAccount), aliased(LedgerAccount)
        self.where: list[ColumnElement[bool]] = [
            # The period is read through `ix_ledger_transfers_created_brin` (PostgreSQL); the
            # kinds as literals keep the generic plan of a prepared statement as good as its own.
            t.kind.in_(bindparam("moved", reports.MOVED, expanding=True, literal_execute=True)),
            t.created_at >= p.since,
            t.created_at < p.until,
        ]
        if account is not None:
            self.where.append(or_(_matches(self.debit, account), _matches(self.credit, account)))

    def _joined(self, *columns: Any) -> Any:
        t = LedgerTransfer
        return (
            select(*columns)
            .select_from(t)
            .outerjoin(self.debit, self.debit.id == t.debit_account_id)
            .outerjoin(self.credit, self.credit.id == t.credit_account_id)
            .where(*self.where)
        )

    async def count(self, s: AsyncSession) -> int:
        return int((await s.execute(self._joined(func.count()))).scalar_one())

    async def rows(
        self,
        s: AsyncSession,
        *,
        limit: int,
        offset: int = 0,
        after: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[tuple[JournalRow, datetime, uuid.UUID]]:
        t = LedgerTransfer
        stmt = self._joined(
            t.id, t.created_at, t.code, t.kind, self.debit.key, self.debit.code,
            t.debit_account_id, self.credit.key, self.credit.code, t.credit_account_id,
            t.amount, t.unit, t.reference,
        )  # fmt: skip
        if after is not None:
            at, last = after
            stmt = stmt.where(or_(t.created_at > at, and_(t.created_at == at, t.id > last)))
        stmt = stmt.order_by(t.created_at, t.id).limit(limit).offset(offset)
        found = []
        for (tid, at, code, kind, dkey, dcode, did, ckey, ccode, cid, amount, unit,
             reference) in await s.execute(stmt):  # fmt: skip
            row = JournalRow(
                str(tid), _instant(at), code, kind, _shown(dkey, dcode, did),
                _shown(ckey, ccode, cid), int(amount), unit, reference or "",
            )  # fmt: skip
            found.append((row, at, tid))
        return found


def _csv_lines(rows: Sequence[JournalRow], *, header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180, as the reports' CSVs
    if header:
        writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow([reports.csv_cell(v) for v in astuple(row)])
    return out.getvalue()


def csv_filename(p: reports.Period, account: str | None) -> str:
    """`ledger-transfers-<from>-<to>[-<account>].csv` (the account's `:` written `_`)."""
    named = f"-{re.sub(r'[^A-Za-z0-9_.-]', '_', account)}" if account else ""
    return f"ledger-transfers-{p.start}-{p.end}{named}.csv"


async def _stream(db: DB, query: _Query) -> AsyncIterator[str]:
    """The header, then each chunk as it is read: each in its own short read, after the last
    row of the one before (keyset: the same rows, in order, whatever the period's size)."""
    yield _csv_lines([], header=True)
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with db.read() as s:
            chunk = await query.rows(s, limit=CHUNK, after=after)
        if not chunk:
            return
        yield _csv_lines([row for row, _, _ in chunk], header=False)
        if len(chunk) < CHUNK:
            return
        _, at, last = chunk[-1]
        after = (at, last)


@router.get(
    "/transfers",
    response_model=list[JournalEntryOut],
    summary="The ledger's journal for a period: its transfers, as JSON pages or one CSV",
    responses={
        200: {
            "description": "A page of transfers (JSON; `X-Total-Count`), or the whole period "
            "as CSV with `?format=csv`",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def journal(
    actor: LedgerReader,
    db: DB,
    settings: AppSettings,
    response: Response,
    account: Annotated[
        str | None,
        Query(
            max_length=160,
            description="An account code (`clearing`, `wallet`…) or an operator account's key "
            "(`clearing:stripe:USD`, its shards together)",
        ),
    ] = None,
    start: Annotated[
        str | None,
        Query(alias="from", max_length=10, description="First day (the operator's)"),
    ] = None,
    end: Annotated[
        str | None,
        Query(alias="to", max_length=10, description="Last day (the operator's), inclusive"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """Every transfer that moved money in the period (the operator's days, as the reports':
    default the last 30, at most 366), oldest first: `id`, `created_at` (UTC), `code`, `kind`,
    `debit_account`, `credit_account` (an operator account's key without its shard, or
    `wallet`/`bucket` for a line's), `amount` (minor units of `unit`), `unit`, `reference`.
    Reservations still open are not entries (the trial balance's rule). JSON is a page
    (`limit` 1–500, `offset` 0–1,000,000; `X-Total-Count` counts the period's rows); with
    `format=csv` all the period's rows, streamed, `amount_minor` in the header, text cells that
    could start a formula written with a leading `'`. Bad input: 422 naming `account`, `from`,
    `to`, `limit` or `offset`."""
    named = account_named(account)
    zone = reports.zone_of(settings)
    p = reports.period(start, end, utcnow().astimezone(zone).date(), zone)
    query = _Query(p, named)
    details = {"from": p.start.isoformat(), "to": p.end.isoformat(), "account": named,
               "format": format}  # fmt: skip
    if format == "csv":
        await audit.record_read(db, actor, "ledger.journal_read", details=details)
        return StreamingResponse(
            _stream(db, query),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{csv_filename(p, named)}"'},
        )
    async with db.read() as s:
        total = await query.count(s)
        rows = await query.rows(s, limit=limit, offset=offset)
    await audit.record_read(db, actor, "ledger.journal_read", details=details)
    response.headers["X-Total-Count"] = str(total)
    return [JournalEntryOut(**_as_dict(row)) for row, _, _ in rows]


def _as_dict(row: JournalRow) -> dict[str, Any]:
    return dict(zip(COLUMNS, astuple(row), strict=True))
