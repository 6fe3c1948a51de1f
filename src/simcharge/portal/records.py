"""Consumption records: every posted movement on a customer's lines (wallet and buckets), read
from the ledger, with what caused it (an order, usage, a refund, an adjustment)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import phonenumbers
from sqlalchemy import bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import older_than
from simcharge.driver_reads import AnyOf, DriverRead
from simcharge.kit.translations import N_
from simcharge.ledger.models import LedgerAccount, LedgerTransfer, TransferKind
from simcharge.lines.models import Line, LineFacts

KINDS: dict[str, str] = {
    "topup": N_("Top-up"),
    "package": N_("Package"),
    "usage": N_("Usage"),
    "refund": N_("Refund"),
    "adjustment": N_("Adjustment"),
    "transfer": N_("Transfer between lines"),
    "expiry": N_("Expired"),
}
"""Kinds a record can have, with the label a customer reads."""

_POSTED = (TransferKind.posted.value, TransferKind.post_pending.value)
# Kinds that a transfer's code alone decides (narrowed in the query; the rest after it).
_CODES: dict[str, tuple[str, ...]] = {
    # `applied`: an uncredited payment that finance put on the balance (`orders.refunds`).
    "topup": ("topup", "applied"),
    "package": ("grant",),
    # `clawback`: what a refund takes back from the line (posted under its own code since the
    # fifteenth round; before, every posting of a refund was coded `refund`).
    "refund": ("refund", "refund_voided", "clawback"),
    "adjustment": ("adjustment",),
    "transfer": ("transfer", "transfer_fee"),
    "expiry": ("expiry", "forfeit"),
}
_KNOWN = tuple(code for codes in _CODES.values() for code in codes)


@dataclass(frozen=True, slots=True)
class Record:
    id: uuid.UUID
    at: datetime
    line_id: uuid.UUID
    msisdn: str
    kind: str
    unit: str
    amount: int
    """Signed: positive when the line received it, negative when it was taken from the line."""
    order_id: uuid.UUID | None
    reference: str | None
    other: str | None = None
    """A transfer between lines: the other line's number (`masked` when it is not one of the
    customer's own lines); None for anything else, and for a transfer's fee."""
    other_own: bool = False
    """Whether `other` is one of the customer's own lines (then written in full)."""
    fee: bool = False
    """A transfer's fee (paid to the operator by the giving line)."""


def masked(msisdn: str) -> str:
    """Another customer's number as a record names it: the country code, then the national
    number with at least half of its digits, and at least four, hidden — a dot each, the last
    four places grouped (`+1 415 ••• ••02`, `+852 •••• ••67`): from ten digits on its first
    three and last two to four (`+86 138 •••• ••78`), below ten the last two only. Enough to
    recognise a number one knows, not to learn one (an 8-digit number with first three and
    last four shown, as until the sixteenth round, left ten guesses). Nothing else of theirs
    (name, account) is shown."""
    try:
        number = phonenumbers.parse(msisdn)
        country, national = number.country_code, phonenumbers.national_significant_number(number)
    except phonenumbers.NumberParseException:
        country, national = None, "".join(c for c in msisdn if c.isdigit())
    n = len(national)
    shown = max(0, min(n // 2, n - 4))
    head = 3 if n >= 10 else 0
    tail = min(4 if n >= 10 else 2, shown - head)
    rest = national[head:]
    dotted = "•" * (len(rest) - tail) + (rest[-tail:] if tail else "")
    parts = [f"+{country}"] if country else []
    if head:
        parts.append(national[:head])
    if len(dotted) > 4:
        parts.append(dotted[:-4])
    parts.append(dotted[-4:])
    return " ".join(parts)


def kind_of(code: str, credited: bool) -> str:
    if code in _CODES["topup"]:
        return "topup"
    if code == "grant":
        return "package"
    if code.startswith("refund") or code == "clawback":
        return "refund"
    if code == "adjustment":
        return "adjustment"
    if code.startswith("transfer"):
        return "transfer"
    if "expir" in code or code == "forfeit":
        return "expiry"
    return "topup" if credited else "usage"


def _order_id(reference: str | None) -> uuid.UUID | None:
    if reference and reference.startswith("order:"):
        try:
            return uuid.UUID(reference.removeprefix("order:"))
        except ValueError:
            return None
    return None


_TRANSFERS_OF = select(
    LedgerTransfer.id, LedgerTransfer.created_at, LedgerTransfer.credit_account_id,
    LedgerTransfer.debit_account_id, LedgerTransfer.amount, LedgerTransfer.unit,
    LedgerTransfer.code, LedgerTransfer.reference,
).where(
    or_(
        LedgerTransfer.credit_account_id.in_(bindparam("ids", expanding=True)),
        LedgerTransfer.debit_account_id.in_(bindparam("ids", expanding=True)),
    ),
    LedgerTransfer.kind.in_(_POSTED),
)
_NEWEST_FIRST = (LedgerTransfer.created_at.desc(), LedgerTransfer.id.desc())
_LATEST = DriverRead(_TRANSFERS_OF.order_by(*_NEWEST_FIRST).limit(bindparam("limit")))
"""The page's latest activity, built once (the user center asks on every view)."""
_ACCOUNTS_OF_CUSTOMER = (
    select(LedgerAccount.id)
    .join(Line, Line.id == LedgerAccount.line_id)
    .where(Line.account_id == bindparam("account"))
)
LATEST_OF_ACCOUNT = DriverRead(
    select(*_TRANSFERS_OF.selected_columns)
    .where(
        or_(
            AnyOf(LedgerTransfer.credit_account_id, _ACCOUNTS_OF_CUSTOMER),
            AnyOf(LedgerTransfer.debit_account_id, _ACCOUNTS_OF_CUSTOMER),
        ),
        LedgerTransfer.kind.in_(_POSTED),
    )
    .order_by(*_NEWEST_FIRST)
    .limit(bindparam("limit"))
)
"""The latest transfers of every line of an account (`account`), newest first, for
`records_from`: `limit` twice the records wanted (a transfer between two of its lines is two)."""


Cursor = tuple[datetime, uuid.UUID]
"""Where a page of records ends: the time and id of the last transfer it looked at."""


@dataclass(frozen=True, slots=True)
class RecordsPage:
    records: list[Record]
    older: Cursor | None
    """Where the next page starts (`before`), or None when there is nothing older."""


async def records_page(
    session: AsyncSession,
    lines: Sequence[LineFacts],
    *,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: Cursor | None = None,
    limit: int = 200,
) -> RecordsPage:
    """A page of records, newest first, older than `before` (the `older` of the page before):
    at most `limit` records (one more when the last transfer is between two of the lines: its
    two sides stay on one page). `lines` are the customer's own (the caller scopes them)."""
    if not lines:
        return RecordsPage([], None)
    accounts = {
        a_id: line_id
        for a_id, line_id in (
            await session.execute(
                select(LedgerAccount.id, LedgerAccount.line_id).where(
                    LedgerAccount.line_id.in_([line.id for line in lines])
                )
            )
        ).all()
        if line_id is not None
    }
    if not accounts:
        return RecordsPage([], None)
    t, stmt = LedgerTransfer, _TRANSFERS_OF
    # Nothing older than the earliest of the lines' holdings is read (`records_from` leaves
    # out, line by line, what came before each one's).
    held = [line.attached_at for line in lines]
    if held and all(at is not None for at in held):
        floor = min(at for at in held if at is not None)
        since = floor if since is None else max(since, floor)
    if before is not None:
        stmt = stmt.where(older_than(t.created_at, t.id, *before))
    if since is not None:
        stmt = stmt.where(t.created_at >= since)
    if until is not None:
        stmt = stmt.where(t.created_at < until)
    if kind == "topup":
        # Any other code that adds to the line reads as a top-up too (`kind_of`): narrowed to
        # the codes of no other kind here, to what was credited below.
        stmt = stmt.where(t.code.not_in([c for c in _KNOWN if c not in _CODES["topup"]]))
    elif kind in _CODES:
        stmt = stmt.where(t.code.in_(_CODES[kind]))
    elif kind is not None:
        stmt = stmt.where(t.code.not_in(_KNOWN))
    # A transfer between two of the customer's own accounts counts on both sides.
    wanted = limit * 2
    params = {"ids": list(accounts), "limit": wanted}
    if stmt is _TRANSFERS_OF:
        rows: Sequence[Any] = await _LATEST.all(session, params)
    else:
        stmt = stmt.order_by(*_NEWEST_FIRST).limit(bindparam("limit"))
        rows = (await session.execute(stmt, params)).all()
    found = records_from(rows, lines, accounts, kind=kind, limit=len(rows) * 2)
    found = await with_other_lines(session, found, rows, accounts)
    read_all = len(rows) < wanted  # every transfer of the filters was read
    if len(found) <= limit:
        last = rows[-1] if rows and not read_all else None
        return RecordsPage(found, (last.created_at, last.id) if last is not None else None)
    shown = found[:limit]
    while len(shown) < len(found) and found[len(shown)].id == shown[-1].id:
        shown.append(found[len(shown)])  # the other side of the same transfer
    more = len(shown) < len(found) or not read_all
    return RecordsPage(shown, (shown[-1].at, shown[-1].id) if more else None)


def records_from(
    rows: Sequence[Any],
    lines: Sequence[LineFacts],
    accounts: Mapping[uuid.UUID, uuid.UUID],
    *,
    kind: str | None = None,
    limit: int = 200,
) -> list[Record]:
    """The records of transfers read newest first (`records_page`, `LATEST_OF_ACCOUNT`): each
    side that is one of `accounts` (ledger account → line, of `lines` only) is a record — from
    the time its line's holder attached it: what the line did before is a previous holder's."""
    by_line = {line.id: line for line in lines}
    out: list[Record] = []
    seen: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for row in rows:
        for account_id, credited in ((row.credit_account_id, True), (row.debit_account_id, False)):
            line_id = accounts.get(account_id)
            if line_id is None or line_id not in by_line or (row.id, account_id) in seen:
                continue
            since = by_line[line_id].attached_at
            if since is not None and row.created_at < since:
                continue
            seen.add((row.id, account_id))
            record_kind = kind_of(row.code, credited)
            if kind and record_kind != kind:
                continue
            out.append(
                Record(
                    id=row.id,
                    at=row.created_at,
                    line_id=line_id,
                    msisdn=by_line[line_id].msisdn,
                    kind=record_kind,
                    unit=row.unit,
                    amount=row.amount if credited else -row.amount,
                    order_id=_order_id(row.reference),
                    reference=row.reference,
                    fee=row.code == "transfer_fee",
                )
            )
    return out[:limit]


async def with_other_lines(
    session: AsyncSession,
    records: list[Record],
    rows: Sequence[Any],
    accounts: Mapping[uuid.UUID, uuid.UUID],
) -> list[Record]:
    """`records` with the other line of each transfer between lines (`Record.other`): read
    from the transfer's other account, masked unless it is one of `accounts`' lines. A fee
    goes to the operator, no line: it names none."""
    by_id = {row.id: row for row in rows if row.code == "transfer"}
    if not by_id:
        return records
    other_account: dict[tuple[uuid.UUID, uuid.UUID], uuid.UUID] = {}
    for r in records:
        row = by_id.get(r.id)
        if row is None:
            continue
        # This record's side is the one whose account belongs to `r.line_id`.
        mine_credited = accounts.get(row.credit_account_id) == r.line_id and r.amount >= 0
        other_account[(r.id, r.line_id)] = (
            row.debit_account_id if mine_credited else row.credit_account_id
        )
    if not other_account:
        return records
    # The customer: the holder of the lines the records are of (the caller's own lines), so
    # that a transfer to a line of theirs that the filters left out is still theirs.
    holder = (
        select(Line.account_id).where(Line.id == next(iter(accounts.values()))).scalar_subquery()
    )
    found = {
        a_id: (msisdn, bool(own))
        for a_id, msisdn, own in (
            await session.execute(
                select(LedgerAccount.id, Line.msisdn, (Line.account_id == holder).label("own"))
                .join(Line, Line.id == LedgerAccount.line_id)
                .where(LedgerAccount.id.in_(set(other_account.values())))
            )
        ).all()
    }
    out = []
    for r in records:
        a_id = other_account.get((r.id, r.line_id))
        if a_id is None or a_id not in found:
            out.append(r)
            continue
        msisdn, mine = found[a_id]
        out.append(replace(r, other=msisdn if mine else masked(msisdn), other_own=mine))
    return out
