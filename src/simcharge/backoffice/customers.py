"""Finding a customer by anything they or their payments are known by, and everything about
them on one page: account, contacts, lines and balances, ledger transfers, orders with every
provider event, sessions, security events, notices and messages sent, tickets, adjustments."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.events import events_of
from simcharge.auth.models import AuthSession, SecurityEvent
from simcharge.backoffice.models import Adjustment
from simcharge.backoffice.orders import OrderPanel, order_panel
from simcharge.errors import NotFound
from simcharge.kit.translations import N_
from simcharge.ledger.models import LedgerTransfer
from simcharge.lines.models import Bucket, Line
from simcharge.lines.schemas import LineBalances
from simcharge.lines.service import line_balances
from simcharge.notifications.models import MessageLog, Notice
from simcharge.orders.models import Order, Payment, Refund
from simcharge.tickets.models import Ticket

MAX_RESULTS = 50


class CustomerNotFound(NotFound):
    slug = "customer-not-found"
    title = N_("There is no such customer.")


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_customers(s: AsyncSession, query: str) -> Sequence[Account]:
    """Accounts matching `query` as a name, username, e-mail, phone, MSISDN, ICCID, order id or
    reference, receipt number, ticket number, or a provider's payment or refund reference."""
    q = query.replace("\x00", "").strip()
    if len(q) < 2:
        return []
    ids: set[uuid.UUID] = set()

    async def collect(stmt: Select[Any]) -> None:
        ids.update(i for i in (await s.execute(stmt.limit(MAX_RESULTS))).scalars() if i)

    lowered = q.casefold()
    pattern = _like(lowered)
    await collect(
        select(Account.id).where(
            or_(
                func.lower(Account.username).like(pattern, escape="\\"),
                func.lower(Account.display_name).like(pattern, escape="\\"),
                func.lower(Account.email).like(pattern, escape="\\"),
            )
        )
    )
    digits = re.sub(r"[\s().-]", "", q)
    if re.fullmatch(r"\+?\d{4,22}", digits):
        number = _like(digits)
        await collect(select(Account.id).where(Account.phone.like(number, escape="\\")))
        await collect(
            select(Line.account_id).where(
                or_(Line.msisdn.like(number, escape="\\"), Line.iccid == digits.lstrip("+"))
            )
        )
        await collect(select(Order.account_id).where(Order.msisdn.like(number, escape="\\")))
    try:
        as_id = uuid.UUID(q)
    except ValueError:
        as_id = None
    if as_id is not None:
        await collect(select(Account.id).where(Account.id == as_id))
        await collect(select(Order.account_id).where(Order.id == as_id))
        await collect(select(Line.account_id).where(Line.id == as_id))
        await collect(select(Ticket.account_id).where(Ticket.id == as_id))
    upper = q.upper()
    await collect(
        select(Order.account_id).where(
            or_(Order.reference == q, Order.reference == upper, Order.receipt_number == upper)
        )
    )
    await collect(select(Ticket.account_id).where(Ticket.number == upper))
    await collect(
        select(Order.account_id)
        .join(Payment, Payment.order_id == Order.id)
        .where(or_(Payment.provider_ref == q, Payment.payment_id == q))
    )
    await collect(
        select(Order.account_id)
        .join(Refund, Refund.order_id == Order.id)
        .where(or_(Refund.reference == upper, Refund.provider_refund_id == q))
    )
    if not ids:
        return []
    return (
        (
            await s.execute(
                select(Account)
                .where(Account.id.in_(ids))
                .order_by(Account.username)
                .limit(MAX_RESULTS)
            )
        )
        .scalars()
        .all()
    )


@dataclass(frozen=True, slots=True)
class LineFacts:
    line: Line
    balances: LineBalances
    buckets: list[Bucket]
    transfers: list[LedgerTransfer]


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
    adjustments: list[Adjustment]


async def customer_view(
    s: AsyncSession, account_id: uuid.UUID, *, orders: int = 20
) -> CustomerView:
    account = await s.get(Account, account_id)
    if account is None:
        raise CustomerNotFound(field="account_id")
    lines = []
    for line in (
        await s.execute(select(Line).where(Line.account_id == account_id).order_by(Line.msisdn))
    ).scalars():
        buckets = list(
            (
                await s.execute(
                    select(Bucket).where(Bucket.line_id == line.id).order_by(Bucket.created_at)
                )
            ).scalars()
        )
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
        lines.append(LineFacts(line, await line_balances(s, line), buckets, transfers))
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

    tickets = list(
        (
            await s.execute(
                select(Ticket)
                .where(Ticket.account_id == account_id)
                .order_by(Ticket.updated_at.desc())
            )
        ).scalars()
    )
    line_ids = [f.line.id for f in lines]
    adjustments = list(
        (
            await s.execute(
                select(Adjustment)
                .where(Adjustment.line_id.in_(line_ids))
                .order_by(Adjustment.created_at.desc())
            )
        ).scalars()
    )
    return CustomerView(
        account=account,
        lines=lines,
        orders=panels,
        sessions=await latest(AuthSession),
        security_events=list(await events_of(s, account_id, limit=50)),
        notices=await latest(Notice),
        messages=await latest(MessageLog),
        tickets=tickets,
        adjustments=adjustments,
    )
