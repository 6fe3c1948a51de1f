"""Links between back-office screens: what an order or a line is called where another screen
names it (a bucket's `order:<id>` source, a ticket about an order or a line), where each one is
shown (its panel's anchor on the customer page), and where a form's action goes back to after
success (`then`, when the member may see that page; else the page the action belongs to)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice.audit import Actor
from simcharge.backoffice.forms import may_see
from simcharge.backoffice.roles import Permission
from simcharge.db import Database
from simcharge.lines.models import Line
from simcharge.orders.models import Order, Refund


@dataclass(frozen=True, slots=True)
class Named:
    """An order or a line as another screen names it: its reference or number, and whose it
    is (the customer page it is shown on)."""

    label: str
    account_id: uuid.UUID | None


_REFERENCE = re.compile(r"(order|refund|line):([0-9a-f-]{36})(:.{0,120})?")


@dataclass(frozen=True, slots=True)
class Referenced:
    """A ledger transfer's `reference` as what it names: an order (by its reference), a refund
    (by its reference, at its order's panel) or a line (by its number), with where it is shown;
    `rest` is what followed the id (`:dispute`), shown as it is."""

    kind: str
    label: str
    href: str
    rest: str


@dataclass(frozen=True, slots=True)
class References:
    orders: dict[uuid.UUID, Named]
    lines: dict[uuid.UUID, Named]
    refunds: dict[uuid.UUID, tuple[uuid.UUID, Named]] = dataclass_field(default_factory=dict)
    """A refund's order and the refund as named (its reference, its order's customer)."""

    def reference(self, text: str | None) -> Referenced | None:
        """A transfer's `order:<id>`, `refund:<id>` or `line:<id>` as what it names (None: any
        other reference, or one whose order, refund or line is not known here: shown raw)."""
        found = _REFERENCE.fullmatch(text or "")
        if found is None:
            return None
        kind, raw, rest = found.group(1), found.group(2), found.group(3) or ""
        try:
            key = uuid.UUID(raw)
        except ValueError:
            return None
        if kind == "order" and (named := self.orders.get(key)) is not None:
            return Referenced(kind, named.label, order_href(key, named.account_id), rest)
        if kind == "refund" and (refund := self.refunds.get(key)) is not None:
            order_id, named = refund
            return Referenced(kind, named.label, order_href(order_id, named.account_id), rest)
        if kind == "line" and (named := self.lines.get(key)) is not None:
            return Referenced(kind, named.label, line_href(key, named.account_id), rest)
        return None

    def source(self, source: str | None) -> tuple[uuid.UUID, Named] | None:
        """A bucket's or transfer's `order:<id>` source as the order it names (None: another
        kind of source, or an order no longer there)."""
        found = re.fullmatch(r"order:([0-9a-f-]{36})", source or "")
        if found is None:
            return None
        try:
            order_id = uuid.UUID(found.group(1))
        except ValueError:
            return None
        named = self.orders.get(order_id)
        return (order_id, named) if named is not None else None


NO_REFERENCES = References({}, {})


def ids_of_references(references: Iterable[str | None]) -> dict[str, set[uuid.UUID]]:
    """The ids transfers' references name, by kind (`order`, `refund`, `line`)."""
    ids: dict[str, set[uuid.UUID]] = {"order": set(), "refund": set(), "line": set()}
    for text in references:
        found = _REFERENCE.fullmatch(text or "")
        if found is not None:
            try:
                ids[found.group(1)].add(uuid.UUID(found.group(2)))
            except ValueError:
                continue
    return ids


def order_ids_of_sources(sources: Iterable[str | None]) -> set[uuid.UUID]:
    ids = set()
    for source in sources:
        found = re.fullmatch(r"order:([0-9a-f-]{36})", source or "")
        if found is not None:
            try:
                ids.add(uuid.UUID(found.group(1)))
            except ValueError:
                continue
    return ids


async def references(
    s: AsyncSession,
    order_ids: Iterable[uuid.UUID | None] = (),
    line_ids: Iterable[uuid.UUID | None] = (),
    refund_ids: Iterable[uuid.UUID | None] = (),
) -> References:
    """The references of these orders and refunds and numbers of these lines, with their
    customers."""
    wanted_orders = {i for i in order_ids if i is not None}
    wanted_lines = {i for i in line_ids if i is not None}
    wanted_refunds = {i for i in refund_ids if i is not None}
    orders: dict[uuid.UUID, Named] = {}
    lines: dict[uuid.UUID, Named] = {}
    refunds: dict[uuid.UUID, tuple[uuid.UUID, Named]] = {}
    if wanted_refunds:
        rows = await s.execute(
            select(Refund.id, Refund.reference, Refund.order_id, Order.account_id)
            .join(Order, Order.id == Refund.order_id)
            .where(Refund.id.in_(wanted_refunds))
        )
        refunds = {r[0]: (r[2], Named(r[1], r[3])) for r in rows}
    if wanted_orders:
        rows = await s.execute(
            select(Order.id, Order.reference, Order.account_id).where(Order.id.in_(wanted_orders))
        )
        orders = {r[0]: Named(r[1], r[2]) for r in rows}
    if wanted_lines:
        rows = await s.execute(
            select(Line.id, Line.msisdn, Line.account_id).where(Line.id.in_(wanted_lines))
        )
        lines = {r[0]: Named(r[1], r[2]) for r in rows}
    return References(orders, lines, refunds)


def order_href(order_id: uuid.UUID, account_id: uuid.UUID | None) -> str:
    """An order's panel on its customer's page."""
    return f"/backoffice/customers/{account_id}#order-{order_id}" if account_id else ""


def line_href(line_id: uuid.UUID, account_id: uuid.UUID | None) -> str:
    """A line's section on its customer's page."""
    return f"/backoffice/customers/{account_id}#line-{line_id}" if account_id else ""


# --- where an action goes after success ----------------------------------------------------------


def then_or(actor: Actor, then: str, fallback: str, anchor: str = "") -> str:
    """`then` (the screen a form was sent from) when it is a screen forms come back to that the
    member's role may see; else `fallback`, the page the action belongs to — with `#anchor`,
    what was acted on, so a long page opens there. A crafted `then` (another site, a page the
    role may not see: an agent's `then=/backoffice/reports`) is not followed."""
    to = then if may_see(actor, then) else fallback
    return f"{to}#{anchor}" if anchor else to


async def after_order_action(
    db: Database, actor: Actor, then: str, order_id: uuid.UUID, home: str | None = None
) -> str:
    """Where an action on an order's panel goes: back to the panel on the screen it was on;
    else the panel on the order's customer page (`home`, when given: the attention list's)."""
    anchor = f"order-{order_id}"
    if may_see(actor, then):
        return then_or(actor, then, "", anchor)
    if home is not None:
        return f"{home}#{anchor}"
    if actor.can(Permission.customers_read):
        async with db.read() as s:
            account_id = (
                await s.execute(select(Order.account_id).where(Order.id == order_id))
            ).scalar_one_or_none()
        if account_id is not None:
            return order_href(order_id, account_id)
    return "/backoffice"


async def after_refund_action(db: Database, actor: Actor, then: str, refund_id: uuid.UUID) -> str:
    """As `after_order_action`, for an action on one of an order's refunds."""
    async with db.read() as s:
        order_id = (
            await s.execute(select(Refund.order_id).where(Refund.id == refund_id))
        ).scalar_one_or_none()
    if order_id is None:
        return then_or(actor, then, "/backoffice")
    return await after_order_action(db, actor, then, order_id)
