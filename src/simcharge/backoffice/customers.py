"""Finding a customer by anything they or their payments are known by, and everything about
them on one page: account, contacts, lines and balances, ledger transfers, usage (what each
record took from where, at which tariff version), orders with every provider event, sessions,
security events, notices and messages sent, tickets, adjustments."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import phonenumbers
from sqlalchemy import ColumnElement, Select, case, func, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.events import events_of
from simcharge.auth.models import AuthSession, SecurityEvent
from simcharge.backoffice.models import Adjustment
from simcharge.backoffice.orders import OrderPanel, order_panel
from simcharge.charging.models import TariffVersion, UsageRecord
from simcharge.db import dialect_name, older_than
from simcharge.errors import FieldError, NotFound, ValidationFailed
from simcharge.kit.fold import fold
from simcharge.kit.phone import national_e164
from simcharge.kit.translations import N_
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Bucket, Line
from simcharge.lines.schemas import LineBalances
from simcharge.lines.service import line_balances
from simcharge.notifications.models import MessageLog, Notice
from simcharge.orders.models import Order, Payment, Refund
from simcharge.tickets.models import Ticket

MAX_RESULTS = 50
"""The most customers a search lists (`CustomerSearch.more` says when others match)."""
TICKETS_SHOWN = 50
"""The latest tickets a customer's view lists; the ticket queue filtered by the customer has
them all (a customer with thousands made the page megabytes)."""
ADJUSTMENTS_SHOWN = 50
"""The latest adjustments a customer's view lists, as `TICKETS_SHOWN`: all of them are a list
of their own, a page at a time (`adjustments_of`: `/backoffice/customers/{id}/adjustments`,
`GET /admin/customers/{id}/adjustments`)."""


class CustomerNotFound(NotFound):
    slug = "customer-not-found"
    title = N_("There is no such customer.")


class LineNotFound(NotFound):
    slug = "line-not-found"
    title = N_("There is no such line.")


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _numbers(q: str, region: str | None = None) -> list[str]:
    """What a phone number, MSISDN or ICCID typed as `q` is searched as: its digits (any
    script's, as ASCII), `00` read as `+`, an international number also in E.164, and one in
    national form also without its trunk `0` (`07911 123456`: the stored `+447911123456`
    holds `7911123456`). Empty: `q` is no number.

    With the operator's `region`, a number typed as it is dialled there (`0917 123 4567` in
    `PH`) is that number alone, `+639171234567`: searched as its digits, it also found the line
    whose number merely contains them (`+1 917 123 4567`). One that is no valid number of the
    region (a fragment, another country's national form) is searched as text, as before."""
    text = "".join(
        str(unicodedata.decimal(c)) if c.isdecimal() else c for c in re.sub(r"[\s()./-]", "", q)
    )
    if text.startswith("00"):
        text = "+" + text[2:]
    if not re.fullmatch(r"\+?[0-9]{4,22}", text):
        return []
    national = national_e164(text, region)
    if national is not None:
        return [national]
    found = [text]
    if text.startswith("+"):
        try:
            parsed = phonenumbers.parse(text)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is not None and phonenumbers.is_possible_number(parsed):
            found.append(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    elif re.fullmatch(r"0[1-9][0-9]{3,}", text):
        found.append(text[1:])
    return list(dict.fromkeys(found))


def _lower(s: AsyncSession, column: Any) -> ColumnElement[Any]:
    """A column lowered as Python's `str.lower` lowers the query: SQLite's own `lower()` folds
    ASCII only, so its connections carry `unicode_lower` (`db.py`)."""
    if dialect_name(s) == "sqlite":
        return func.unicode_lower(column)
    return func.lower(column)


def search_facts(query: str, found: Sequence[Account]) -> dict[str, Any]:
    """What the audit keeps of a customer search: what kind of thing was typed (`email`,
    `number`: a phone, MSISDN or ICCID; `id`; `text`: a name, a reference, a receipt or ticket
    number), its length, and whose accounts it showed — never the words typed. The audit is
    append-only and kept for ever; an e-mail address or phone number in it would outlive the
    customer's closing of their account, which promises none is kept. Whose data a member saw
    is what an investigation asks, and the account ids answer it."""
    q = search_text(query)
    kind = "text"
    if "@" in q:
        kind = "email"
    elif _numbers(q):
        kind = "number"
    else:
        try:
            uuid.UUID(q)
            kind = "id"
        except ValueError:
            pass
    return {
        "kind": kind,
        "length": len(q),
        "found": len(found),
        "accounts": [str(a.id) for a in found],
    }


MIN_QUERY = 2
"""The fewest characters a search takes — one when it is a Chinese character (`too_short`)."""


def search_text(query: str) -> str:
    """The query as searched: NFKC (full-width letters and digits, a CJK input method's, as
    their plain forms), no NUL, trimmed."""
    return unicodedata.normalize("NFKC", query.replace("\x00", "")).strip()


def _han(character: str) -> bool:
    return unicodedata.name(character, "").startswith(
        ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")
    )


def too_short(q: str) -> bool:
    """Fewer than `MIN_QUERY` characters of `search_text` — except one Chinese character: a
    surname (陈, 王) is what staff type to find a caller, and it is a name, not a fragment of
    one. One letter or digit would list half the customers."""
    return len(q) < MIN_QUERY and not (len(q) == 1 and _han(q))


def checked_query(query: str) -> str:
    """`search_text(query)`, refused when `too_short`: `422 validation-error` naming `q`, as
    the API refuses it and the search page says beside its field (nothing searched)."""
    q = search_text(query)
    if too_short(q):
        raise ValidationFailed(
            errors=[FieldError("q", N_("Enter at least {min_length} characters."),
                               {"min_length": MIN_QUERY})]
        )  # fmt: skip
    return q


@dataclass(frozen=True, slots=True)
class CustomerSearch:
    accounts: list[Account]
    """At most `MAX_RESULTS`: first those the query names exactly (`find_customers`), then
    the others, each part by username."""
    more: bool
    """More customers match than `accounts` holds: the search should be narrowed."""


async def find_customers(
    s: AsyncSession, query: str, *, region: str | None = None
) -> CustomerSearch:
    """Accounts matching `query` as a name, username, e-mail, phone, MSISDN, ICCID, order id or
    reference, receipt number, ticket number, or a provider's payment or refund reference. A
    number typed without its country code is read in `region` (the operator's, when it has
    one), as `_numbers` says.

    First those it names exactly — its username, e-mail or number (the account's phone, a
    line's MSISDN) as a whole, an ICCID, an id, a reference, a receipt or ticket number — then
    those it names in part, each group by username, `MAX_RESULTS` in all; `more` when there
    are others. Each query reads at most `MAX_RESULTS + 1` accounts in username
    order, so the first `MAX_RESULTS` of all of them together are among what they read (and a
    query cut short says there are more); the database orders the merged ids the same way."""
    q = search_text(query)
    if too_short(q):
        return CustomerSearch([], more=False)
    async def collect(condition: ColumnElement[bool]) -> set[uuid.UUID]:
        stmt = (
            select(Account.id)
            .where(condition)
            .order_by(Account.username)
            .limit(MAX_RESULTS + 1)
        )
        return set((await s.execute(stmt)).scalars())

    # Named exactly: each an index's lookup, all in one statement (a union of the accounts
    # each names). Usernames are kept case-folded, e-mail addresses lowered (`auth.service`).
    lowered = q.lower()
    named: list[Select[Any]] = [
        select(Account.id).where(
            or_(Account.username.in_({q.casefold(), lowered}), Account.email == lowered)
        )
    ]
    numbers = _numbers(q, region)
    if numbers:
        # As a whole: as typed, and an international number typed without its `+`.
        whole = [*numbers, *("+" + n for n in numbers if n[0] not in "+0")]
        named.append(select(Account.id).where(Account.phone.in_(whole)))
        named.append(
            select(Line.account_id).where(
                or_(Line.msisdn.in_(whole), Line.iccid == numbers[0].lstrip("+"))
            )
        )
    try:
        as_id = uuid.UUID(q)
    except ValueError:
        as_id = None
    if as_id is not None:
        named.append(select(Account.id).where(Account.id == as_id))
        named.append(select(Order.account_id).where(Order.id == as_id))
        named.append(select(Line.account_id).where(Line.id == as_id))
        named.append(select(Ticket.account_id).where(Ticket.id == as_id))
    upper = q.upper()
    named += [
        select(Order.account_id).where(
            or_(Order.reference == spoken_reference(q), Order.receipt_number == upper)
        ),
        select(Ticket.account_id).where(Ticket.number == upper),
        select(Order.account_id)
        .join(Payment, Payment.order_id == Order.id)
        .where(or_(Payment.provider_ref == q, Payment.payment_id == q)),
        select(Order.account_id)
        .join(Refund, Refund.order_id == Order.id)
        .where(or_(Refund.reference == upper, Refund.provider_refund_id == q)),
    ]
    exact = await collect(Account.id.in_(union_all(*named)))
    # Named in part: a substring of a username or e-mail (both sides lowered alike), of a name
    # (both sides folded alike by `fold`, the name's when it was written: its stored
    # `display_name_folded` — "Garcia" finds "García", and the reverse), digits of a number.
    # Usernames are ASCII and e-mail addresses as good as: folding them too would only cost
    # every row more work.
    pattern = _like(lowered)
    in_part = [
        _lower(s, c).like(pattern, escape="\\") for c in (Account.username, Account.email)
    ]
    folded = fold(q)
    if folded:  # a query of marks alone folds to nothing, which every name contains
        in_part.append(Account.display_name_folded.like(_like(folded), escape="\\"))
    partial = await collect(or_(*in_part))
    if numbers:

        def matching(column: Any) -> ColumnElement[bool]:
            return or_(*(column.like(_like(n), escape="\\") for n in numbers))

        partial |= await collect(matching(Account.phone))
        partial |= await collect(Account.id.in_(select(Line.account_id).where(
            matching(Line.msisdn))))
        partial |= await collect(Account.id.in_(select(Order.account_id).where(
            matching(Order.msisdn))))  # fmt: skip
    found = exact | partial
    if not found:
        return CustomerSearch([], more=False)
    first = [case((Account.id.in_(exact), 0), else_=1)] if exact else []
    rows = await s.execute(
        select(Account)
        .where(Account.id.in_(found))
        .order_by(*first, Account.username)
        .limit(MAX_RESULTS)
    )
    return CustomerSearch(list(rows.scalars()), more=len(found) > MAX_RESULTS)


async def search_customers(
    s: AsyncSession, query: str, *, region: str | None = None
) -> Sequence[Account]:
    """The accounts `find_customers` lists (without saying whether there are more)."""
    return (await find_customers(s, query, region=region)).accounts


@dataclass(frozen=True, slots=True)
class Match:
    """What a search matched besides a customer's own name or contacts: an order (by id,
    reference, receipt number, a provider's payment or refund reference), a ticket (id,
    number) or a line (id, number, ICCID) — shown with a direct link to it."""

    kind: str
    """`order`, `ticket` or `line`."""
    id: uuid.UUID
    label: str
    """The order's reference, the ticket's number, the line's number."""
    account_id: uuid.UUID

    @property
    def href(self) -> str:
        if self.kind == "ticket":
            return f"/backoffice/tickets/{self.id}"
        return f"/backoffice/customers/{self.account_id}#{self.kind}-{self.id}"



def spoken_reference(query: str) -> str:
    """An order reference as typed from a receipt or read out on the phone: in groups (the
    receipt and the portal show it in fours), in any case — the stored form is upper case
    without spaces."""
    return "".join(query.split()).upper()


async def search_matches(
    s: AsyncSession, query: str, *, region: str | None = None
) -> list[Match]:
    """The orders, tickets and lines `query` names, read as `search_customers` reads it (which
    lists their customers): what matched, to open directly."""
    q = search_text(query)
    if too_short(q):
        return []
    upper = q.upper()
    try:
        as_id: uuid.UUID | None = uuid.UUID(q)
    except ValueError:
        as_id = None
    found: dict[tuple[str, uuid.UUID], Match] = {}

    async def collect(kind: str, stmt: Any) -> None:  # Select[id, label, account]
        for i, label, account_id in (await s.execute(stmt.limit(MAX_RESULTS))).all():
            if account_id is not None:
                found.setdefault((kind, i), Match(kind, i, label, account_id))

    order = select(Order.id, Order.reference, Order.account_id)
    conditions = [Order.reference == spoken_reference(q), Order.receipt_number == upper]
    if as_id is not None:
        conditions.append(Order.id == as_id)
    await collect("order", order.where(or_(*conditions)))
    await collect(
        "order",
        order.join(Payment, Payment.order_id == Order.id).where(
            or_(Payment.provider_ref == q, Payment.payment_id == q)
        ),
    )
    await collect(
        "order",
        order.join(Refund, Refund.order_id == Order.id).where(
            or_(Refund.reference == upper, Refund.provider_refund_id == q)
        ),
    )
    ticket = select(Ticket.id, Ticket.number, Ticket.account_id)
    await collect(
        "ticket",
        ticket.where(or_(Ticket.number == upper, *([Ticket.id == as_id] if as_id else []))),
    )
    line = select(Line.id, Line.msisdn, Line.account_id)
    numbers = _numbers(q, region)
    if numbers:
        await collect(
            "line",
            line.where(
                or_(
                    *(Line.msisdn.like(_like(n), escape="\\") for n in numbers),
                    Line.iccid == numbers[0].lstrip("+"),
                )
            ),
        )
    if as_id is not None:
        await collect("line", line.where(Line.id == as_id))
    return list(found.values())[:MAX_RESULTS]


@dataclass(frozen=True, slots=True)
class Taken:
    """What a usage record took from one of the line's pots."""

    source: str
    """`wallet`, or `bucket` (see `bucket`)."""
    account_id: uuid.UUID
    amount: int
    unit: str
    bucket: Bucket | None = None


@dataclass(frozen=True, slots=True)
class UsageFacts:
    record: UsageRecord
    taken: list[Taken]
    tariff: TariffVersion | None
    """The tariff version in force when the record was rated (none: no tariff then)."""


@dataclass(frozen=True, slots=True)
class LineFacts:
    line: Line
    balances: LineBalances
    buckets: list[Bucket]
    transfers: list[LedgerTransfer]
    usage: list[UsageFacts]
    credited: dict[uuid.UUID, int] = field(default_factory=dict)
    """Per bucket, what was credited to it after its grant (an adjustment, a transfer from
    another line): its ledger account's credits beyond `initial_amount` — why what remains can
    exceed what was granted. Absent: nothing."""


@dataclass(frozen=True, slots=True)
class UsageFilter:
    service: str | None = None
    since: datetime | None = None
    """Started at or after."""
    until: datetime | None = None
    """Started before."""


def _day(value: str, field: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(N_("Use a date like 2026-11-25."), field=field) from None
    if not 2000 <= day.year <= 2999:
        raise ValidationFailed(N_("Use a date like 2026-11-25."), field=field)
    return day


def usage_filter(service: str | None, start: str | None, end: str | None) -> UsageFilter:
    """`from`/`to` as days (UTC, `to` inclusive)."""
    if service is not None and service not in ("voice", "data", "sms"):
        raise ValidationFailed(N_("Choose voice, data or SMS."), field="service")
    first = _day(start, "from") if start else None
    last = _day(end, "to") if end else None
    if first and last and first > last:
        raise ValidationFailed(N_("The period ends before it starts."), field="from")
    return UsageFilter(
        service=service,
        since=datetime.combine(first, time(), tzinfo=UTC) if first else None,
        until=datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC) if last else None,
    )


async def tariffs_in_force(
    s: AsyncSession, records: list[UsageRecord]
) -> dict[uuid.UUID, TariffVersion | None]:
    """For each record, the version of its tariff (service, zone, wallet currency) in force
    when it was rated."""
    keys = {(r.service, r.zone, r.currency) for r in records}
    if not keys:
        return {}
    versions: dict[tuple[str, str, str], list[TariffVersion]] = {}
    rows = await s.execute(
        select(TariffVersion)
        .where(
            or_(
                *(
                    (TariffVersion.service == k[0])
                    & (TariffVersion.zone == k[1])
                    & (TariffVersion.currency == k[2])
                    for k in keys
                )
            )
        )
        .order_by(TariffVersion.valid_from)
    )
    for v in rows.scalars():
        versions.setdefault((v.service, v.zone, v.currency), []).append(v)

    def at(record: UsageRecord) -> TariffVersion | None:
        for v in reversed(versions.get((record.service, record.zone, record.currency), [])):
            if v.valid_from <= record.created_at and (
                v.valid_until is None or record.created_at < v.valid_until
            ):
                return v
        return None

    return {r.id: at(r) for r in records}


async def line_usage(
    s: AsyncSession,
    line: Line,
    buckets: list[Bucket],
    *,
    where: UsageFilter | None = None,
    before: tuple[datetime, uuid.UUID | None] | None = None,
    limit: int = 20,
) -> list[UsageFacts]:
    """A line's usage records, latest first. `before` pages back: the start time and id of the
    last record seen (records that started at the same time come in id order)."""
    where = where or UsageFilter()
    stmt = select(UsageRecord).where(UsageRecord.line_id == line.id)
    if where.service:
        stmt = stmt.where(UsageRecord.service == where.service)
    if where.since is not None:
        stmt = stmt.where(UsageRecord.started_at >= where.since)
    if where.until is not None:
        stmt = stmt.where(UsageRecord.started_at < where.until)
    if before is not None:
        at, last_id = before
        stmt = stmt.where(
            or_(
                UsageRecord.started_at < at,
                (UsageRecord.started_at == at) & (UsageRecord.id < last_id),
            )
            if last_id is not None
            else UsageRecord.started_at < at
        )
    stmt = stmt.order_by(UsageRecord.started_at.desc(), UsageRecord.id.desc()).limit(limit)
    records = list((await s.execute(stmt)).scalars())
    tariffs = await tariffs_in_force(s, records)
    pots = {b.id: b for b in buckets}

    def taken(record: UsageRecord) -> list[Taken]:
        out = []
        for account, amount in record.taken or []:
            account_id = uuid.UUID(str(account))
            if account_id == line.wallet_account_id:
                out.append(Taken("wallet", account_id, int(amount), line.currency))
            else:
                bucket = pots.get(account_id)
                unit = bucket.unit if bucket is not None else "?"
                out.append(Taken("bucket", account_id, int(amount), unit, bucket))
        return out

    return [UsageFacts(r, taken(r), tariffs[r.id]) for r in records]


async def usage_of_line(
    s: AsyncSession,
    line_id: uuid.UUID,
    *,
    where: UsageFilter,
    before: tuple[datetime, uuid.UUID | None] | None,
    limit: int,
) -> tuple[Line, list[UsageFacts]]:
    line = await s.get(Line, line_id)
    if line is None:
        raise LineNotFound(field="line_id")
    found = await line_usage(
        s, line, await line_buckets(s, line.id), where=where, before=before, limit=limit
    )
    return line, found


async def line_buckets(s: AsyncSession, line_id: uuid.UUID) -> list[Bucket]:
    rows = await s.execute(
        select(Bucket).where(Bucket.line_id == line_id).order_by(Bucket.created_at)
    )
    return list(rows.scalars())


@dataclass(frozen=True, slots=True)
class CustomerView:
    account: Account
    lines: list[LineFacts]
    orders: list[OrderPanel]
    sessions: list[AuthSession]
    security_events: list[SecurityEvent]
    notices: list[Notice]
    messages: list[MessageLog]
    tickets: list[Ticket]
    """The latest `TICKETS_SHOWN`, latest activity first."""
    tickets_total: int
    """How many tickets the customer has."""
    adjustments: list[Adjustment]
    """The latest `ADJUSTMENTS_SHOWN` to the customer's lines, latest first."""
    adjustments_total: int
    """How many adjustments there are to the customer's lines."""


async def credited_after_grant(s: AsyncSession, buckets: Sequence[Bucket]) -> dict[uuid.UUID, int]:
    """What was credited to each bucket beyond its grant (`LineFacts.credited`), from the
    ledger's posted credits of its account; buckets with nothing more are left out."""
    if not buckets:
        return {}
    granted = {b.id: b.initial_amount for b in buckets}
    rows = await s.execute(
        select(LedgerAccount.id, LedgerAccount.credits_posted).where(
            LedgerAccount.id.in_(granted)
        )
    )
    return {i: credits - granted[i] for i, credits in rows if credits > granted[i]}


async def customer_view(
    s: AsyncSession, account_id: uuid.UUID, *, orders: int = 20, usage: int = 20
) -> CustomerView:
    account = await s.get(Account, account_id)
    if account is None:
        raise CustomerNotFound(field="account_id")
    lines = []
    for line in (
        await s.execute(select(Line).where(Line.account_id == account_id).order_by(Line.msisdn))
    ).scalars():
        buckets = await line_buckets(s, line.id)
        ledger_ids = [line.wallet_account_id, *(b.id for b in buckets)]
        transfers = list(
            (
                await s.execute(
                    select(LedgerTransfer)
                    .where(
                        or_(
                            LedgerTransfer.debit_account_id.in_(ledger_ids),
                            LedgerTransfer.credit_account_id.in_(ledger_ids),
                        )
                    )
                    .order_by(LedgerTransfer.created_at.desc(), LedgerTransfer.id.desc())
                    .limit(100)
                )
            ).scalars()
        )
        used = await line_usage(s, line, buckets, limit=usage)
        lines.append(
            LineFacts(
                line, await line_balances(s, line), buckets, transfers, used,
                await credited_after_grant(s, buckets),
            )
        )
    order_ids = (
        await s.execute(
            select(Order.id)
            .where(Order.account_id == account_id)
            .order_by(Order.created_at.desc())
            .limit(orders)
        )
    ).scalars()
    panels = [await order_panel(s, oid) for oid in order_ids]

    async def latest(model: type[AuthSession] | type[Notice] | type[MessageLog]) -> list:  # type: ignore[type-arg]
        stmt = (
            select(model)
            .where(model.account_id == account_id)
            .order_by(model.created_at.desc())
            .limit(50)
        )
        return list((await s.execute(stmt)).scalars())

    # The latest `TICKETS_SHOWN` (`ix_tickets_account_id`); all of them are in the ticket
    # queue filtered by the customer (`/backoffice/tickets?account_id=`).
    tickets = list(
        (
            await s.execute(
                select(Ticket)
                .where(Ticket.account_id == account_id)
                .order_by(Ticket.updated_at.desc(), Ticket.id.desc())
                .limit(TICKETS_SHOWN)
            )
        ).scalars()
    )
    tickets_total = len(tickets)
    if tickets_total == TICKETS_SHOWN:
        tickets_total = (
            await s.execute(
                select(func.count()).select_from(Ticket).where(Ticket.account_id == account_id)
            )
        ).scalar_one()
    adjustments = await adjustments_of(s, account_id, limit=ADJUSTMENTS_SHOWN)
    adjustments_total = len(adjustments)
    if adjustments_total == ADJUSTMENTS_SHOWN:
        adjustments_total = await count_adjustments(s, account_id)
    return CustomerView(
        account=account,
        lines=lines,
        orders=panels,
        sessions=await latest(AuthSession),
        security_events=list(await events_of(s, account_id, limit=50)),
        notices=await latest(Notice),
        messages=await latest(MessageLog),
        tickets=tickets,
        tickets_total=tickets_total,
        adjustments=adjustments,
        adjustments_total=adjustments_total,
    )


def _adjustments_of(stmt: Select[Any], account_id: uuid.UUID) -> Select[Any]:
    """Adjustments to the lines the customer holds now, made since they hold them
    (`lines.attached_at`, as the portal's records): a line back from stock brings none of its
    previous holder's adjustments — their amounts, reasons and notes — to its new holder's
    page (the audit log keeps every adjustment, whoever held the line)."""
    return stmt.join(Line, Line.id == Adjustment.line_id).where(
        Line.account_id == account_id,
        or_(Line.attached_at.is_(None), Adjustment.created_at >= Line.attached_at),
    )


async def adjustments_of(
    s: AsyncSession,
    account_id: uuid.UUID,
    *,
    limit: int,
    before: datetime | None = None,
    before_id: uuid.UUID | None = None,
) -> list[Adjustment]:
    """A page of the adjustments to a customer's lines, latest first (`ix_adjustments_line_id`:
    line, time); the next page: `before`, `before_id` of the last one."""
    stmt = _adjustments_of(select(Adjustment), account_id)
    if before is not None:
        stmt = stmt.where(older_than(Adjustment.created_at, Adjustment.id, before, before_id))
    stmt = stmt.order_by(Adjustment.created_at.desc(), Adjustment.id.desc()).limit(limit)
    return list((await s.execute(stmt)).scalars())


async def count_adjustments(s: AsyncSession, account_id: uuid.UUID) -> int:
    stmt = _adjustments_of(select(func.count()).select_from(Adjustment), account_id)
    return int((await s.execute(stmt)).scalar_one())
