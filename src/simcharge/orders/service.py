"""Quotes and orders: what a top-up costs, and the order that buys it.

An order is created once per `Idempotency-Key` (per account): the same key with the same
request finds the same order (and the same answer); with another request it is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account, AccountStatus
from simcharge.accounts.service import own_line
from simcharge.auth.deps import SessionEnded
from simcharge.catalog.models import PaymentMethod, Plan
from simcharge.catalog.repository import CatalogRepository
from simcharge.catalog.service import MethodUnavailable as MethodUnavailable
from simcharge.catalog.service import fee_for
from simcharge.config import Settings
from simcharge.db import Database, older_than, table_of, upsert_insert
from simcharge.errors import (
    Conflict,
    IdempotencyKeyReused,
    NotFound,
    ValidationFailed,
    required_idempotency_key,
)
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import constant_time_equals, keyed_hash
from simcharge.kit.i18n import pick_text
from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.logging import log_denied
from simcharge.kit.moments import UTC_ZONE
from simcharge.kit.schemas import Money
from simcharge.kit.translations import N_
from simcharge.ledger.models import LedgerTransfer
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import find_line_by_msisdn
from simcharge.orders.models import (
    Attention,
    IdempotencyKey,
    Order,
    OrderState,
    Payment,
    PaymentStatusValue,
    ProviderEvent,
    ReceiptCounter,
    Refund,
    RefundState,
)
from simcharge.orders.numbering import CREDIT_NOTES, RECEIPTS, year_of
from simcharge.orders.schemas import PlanRef, QuoteOut
from simcharge.payments.providers import PaymentFlow
from simcharge.payments.registry import Providers

if TYPE_CHECKING:
    from simcharge.backoffice.audit import Actor


class PlanUnavailable(NotFound):
    slug = "plan-unavailable"
    title = N_("This package is not on sale.")


class AmountOutOfLimits(ValidationFailed):
    slug = "amount-out-of-limits"
    title = N_("The amount is outside what this payment method accepts.")


class LineNotTopUpable(Conflict):
    slug = "line-not-top-upable"
    title = N_("This line can no longer be topped up.")


class OrderNotFound(NotFound):
    slug = "order-not-found"
    title = N_("There is no such order.")


class QuoteInvalid(ValidationFailed):
    slug = "quote-invalid"
    title = N_("This quote is not valid here: ask for a new one.")


class QuoteChanged(Conflict):
    """The price, fee, total or package differ from what the quote showed; `quote` in the
    problem document is the quote as it stands now (nothing was ordered)."""

    slug = "quote-changed"
    title = N_("The price changed since this quote: nothing was charged. Here is the new one.")

    def __init__(
        self, offer: dict[str, Any], *, price_changed: bool, detail: str | None = None
    ) -> None:
        super().__init__(detail, field="quote")
        self.offer = offer
        self.price_changed = price_changed
        """The money differs (else only the package's version: what it grants may differ)."""

    def extra(self) -> dict[str, Any]:
        return {"quote": self.offer}


class QuoteExpired(Conflict):
    """The quote's `expires_at` has passed; `quote` in the problem document is a new one."""

    slug = "quote-expired"
    title = N_("This quote has expired: nothing was charged. Here is a new one.")

    def __init__(self, offer: dict[str, Any], detail: str | None = None) -> None:
        super().__init__(detail, field="quote")
        self.offer = offer

    def extra(self) -> dict[str, Any]:
        return {"quote": self.offer}


@dataclass(frozen=True, slots=True)
class Quote:
    plan: Plan
    method: PaymentMethod
    provider: str
    line: Line
    currency: str
    price: int
    fee: int
    total: int
    expires_at: datetime


def new_reference() -> str:
    """`SC` + 26 base32 characters of a fresh UUIDv7: letters and digits only (Alipay refuses
    '-'), 28 characters (WeChat Pay allows 32), time-ordered."""
    return "SC" + base64.b32encode(uuid7().bytes).decode().rstrip("=")


def plan_snapshot(plan: Plan, prices: dict[str, int]) -> dict[str, Any]:
    return {
        "code": plan.code,
        "version": plan.version,
        "names": plan.names,
        "descriptions": plan.descriptions,
        "prices": prices,
        "wallet_credit": plan.wallet_credit,
        "buckets": plan.buckets,
        "validity_days": plan.validity_days,
    }


async def resolve_line(
    session: AsyncSession, account_id: uuid.UUID, *, line_id: uuid.UUID | None, msisdn: str | None
) -> Line:
    """The line to top up: one of the payer's own by id, or any of the operator's numbers by
    number (a gift). A line id of someone else's line is "not found": an id must not reveal
    whose number it is. A terminated line is refused on the field that named it."""
    if line_id is not None:
        line, field = await own_line(session, account_id, line_id), "line_id"
    elif msisdn:
        line, field = await find_line_by_msisdn(session, msisdn), "msisdn"
    else:
        raise ValidationFailed(N_("Say which line: its id or its number."), field="msisdn")
    if line.state == LineState.terminated:
        raise LineNotTopUpable(field=field)
    return line


def payment_currency(
    method_currencies: Sequence[str], prices: Mapping[str, object], line_currency: str
) -> str | None:
    """The currency a line's top-up is paid in: the line's wallet currency when the method takes
    it and the plan has a price in it (a PHP line pays the PHP price, not the USD one of a method
    taking ["USD", "PHP"]); else the method's first currency with a price; None if there is none.
    Until the sixteenth review round the method's order alone decided, and a price in the
    line's own currency could go unused."""
    if line_currency in method_currencies and line_currency in prices:
        return line_currency
    return next((c for c in method_currencies if c in prices), None)


async def quote(
    session: AsyncSession,
    settings: Settings,
    providers: Providers,
    *,
    plan_code: str,
    method_code: str,
    line: Line,
    now: datetime,
) -> Quote:
    """What a top-up of `line` costs; `line` as `resolve_line` gave it (not terminated)."""
    repo = CatalogRepository(session)
    plan = await repo.plan_by_code(plan_code)
    if plan is None or not plan.active:
        raise PlanUnavailable(field="plan")
    method = await repo.method_by_code(method_code)
    if method is None or not method.enabled or (plan.methods and method.code not in plan.methods):
        raise MethodUnavailable(field="method")
    provider = providers.serving(method)
    if provider is None:
        raise MethodUnavailable(field="method")
    prices = await repo.prices_of(plan.id)
    currency = payment_currency(method.currencies, prices, line.currency)
    if currency is None:
        raise MethodUnavailable(
            N_("This package has no price in a currency this payment method takes."), field="method"
        )
    grants_wallet = bool(plan.wallet_credit)
    if grants_wallet and line.currency not in plan.wallet_credit:
        raise PlanUnavailable(
            N_("This package cannot credit a wallet in {currency}."),
            field="plan",
            currency=line.currency,
        )
    price = prices[currency]
    fee = fee_for(method, price, currency)
    total = price + fee
    low, high = method.min_amount.get(currency), method.max_amount.get(currency)
    if (low is not None and total < int(low)) or (high is not None and total > int(high)):
        raise AmountOutOfLimits(field="plan")
    return Quote(
        plan,
        method,
        provider.name,
        line,
        currency,
        price,
        fee,
        total,
        # Whole seconds: the signed quote carries its expiry to the second.
        (now + timedelta(minutes=settings.quote_ttl_minutes)).replace(microsecond=0),
    )


# --- a quote's promise ---------------------------------------------------------------------
#
# What `POST /quotes` and the review page show is signed into a compact token (the facts in
# base64url JSON, then an HMAC-SHA256 under a key derived from the secret key for "quote"):
# "Pay now" sends it back and the order is placed only if quoting again gives the same facts
# before the quote expires. Signed rather than stored: a quote costs no row and no write, and
# nothing in it is secret (the payer saw all of it).

_QUOTE_PURPOSE = "order-quote"
_QUOTE_VERSION = "q1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def quote_facts(q: Quote, account_id: uuid.UUID) -> dict[str, Any]:
    """What a quote promises, as signed: for whom, which line, package (and its version),
    method, currency, price, fee, total, and until when."""
    return {
        "a": str(account_id),
        "l": str(q.line.id),
        "p": q.plan.code,
        "v": q.plan.version,
        "m": q.method.code,
        "c": q.currency,
        "x": q.price,
        "f": q.fee,
        "t": q.total,
        "e": int(q.expires_at.timestamp()),
    }


def sign_quote(secret: str, q: Quote, account_id: uuid.UUID) -> str:
    body = _b64(json.dumps(quote_facts(q, account_id), separators=(",", ":")).encode())
    return f"{_QUOTE_VERSION}.{body}.{keyed_hash(secret, _QUOTE_PURPOSE, body)}"


def read_quote_token(secret: str, token: str, account_id: uuid.UUID) -> dict[str, Any]:
    """The facts of a quote we signed for this payer; `QuoteInvalid` for anything else
    (malformed, tampered with, signed under another key, or another payer's)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _QUOTE_VERSION:
        raise QuoteInvalid(field="quote")
    _, body, signature = parts
    if not constant_time_equals(keyed_hash(secret, _QUOTE_PURPOSE, body), signature):
        raise QuoteInvalid(field="quote")
    try:
        facts = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError as exc:
        raise QuoteInvalid(field="quote") from exc
    if not isinstance(facts, dict) or facts.get("a") != str(account_id):
        raise QuoteInvalid(field="quote")
    return facts


def quote_out(q: Quote, token: str, *, account_id: uuid.UUID, language: str) -> QuoteOut:
    """A quote as the API shows it, with its signed token (`POST /quotes`, and the new quote of
    a `quote-changed` or `quote-expired` refusal)."""
    return QuoteOut(
        plan=PlanRef(
            code=q.plan.code, version=q.plan.version, name=pick_text(q.plan.names, language)
        ),
        method=q.method.code,
        msisdn=q.line.msisdn,
        gift=q.line.account_id != account_id,
        price=Money.of(q.price, q.currency),
        fee=Money.of(q.fee, q.currency),
        total=Money.of(q.total, q.currency),
        expires_at=q.expires_at,
        quote=token,
    )


def hold_to_quote(
    secret: str, q: Quote, facts: dict[str, Any], *, account_id: uuid.UUID, language: str,
    now: datetime,
) -> None:
    """Refuse to order anything but what the quote showed: another line, package or method is
    not this quote (`QuoteInvalid`); past its expiry, `QuoteExpired`; any other price, fee,
    total, currency or version of the package, `QuoteChanged`. Both carry the quote as it
    stands now, for the payer to see and accept."""
    current = quote_facts(q, account_id)
    if any(facts.get(k) != current[k] for k in ("l", "p", "m")):
        raise QuoteInvalid(
            N_("This quote is for another line, package or payment method."), field="quote"
        )

    def offer() -> dict[str, Any]:
        again = quote_out(q, sign_quote(secret, q, account_id), account_id=account_id,
                          language=language)
        return again.model_dump(mode="json")

    expires = facts.get("e")
    if not isinstance(expires, int) or now.timestamp() >= expires:
        raise QuoteExpired(offer())
    if any(facts.get(k) != current[k] for k in ("v", "c", "x", "f", "t")):
        raise QuoteChanged(
            offer(), price_changed=any(facts.get(k) != current[k] for k in ("c", "x", "f", "t"))
        )


MOBILE_BROWSER = re.compile(r"Mobile|Android|iPhone|iPad|iPod|HarmonyOS|Windows Phone", re.I)


def default_flow(method_provider: str, user_agent: str | None) -> PaymentFlow:
    """What a method does best for the payer's browser. On a phone: Alipay's mobile page
    (`wap.pay`) and WeChat Pay's H5 — except inside WeChat's own browser, which H5 refuses (the
    QR code can be long-pressed there). Elsewhere: the hosted page; WeChat Pay, a QR code."""
    agent = user_agent or ""
    mobile = MOBILE_BROWSER.search(agent) is not None
    if method_provider == "wechatpay":
        return PaymentFlow.wap if mobile and "MicroMessenger" not in agent else PaymentFlow.qr
    if method_provider == "alipay" and mobile:
        return PaymentFlow.wap
    return PaymentFlow.redirect


def check_flow(
    providers: Providers, q: Quote, flow: PaymentFlow | None, *, user_agent: str | None = None
) -> PaymentFlow:
    """The flow asked for, or the method's best for the payer's browser (`default_flow`);
    refused if its provider cannot do it."""
    chosen = flow or default_flow(q.method.provider, user_agent)
    provider = providers.named(q.provider)
    flows = getattr(provider, "flows", frozenset(PaymentFlow))
    if chosen not in flows:
        raise MethodUnavailable(N_("This payment method cannot be paid that way."), field="flow")
    return chosen


def request_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    order: Order
    payment: Payment
    key: IdempotencyKey
    replayed: bool
    """True when the key was seen before (the order is the one it made then)."""


async def refuse_closed_payer(session: AsyncSession, account_id: uuid.UUID) -> None:
    """An order is never placed for a closed account. The request's session was checked before
    this transaction, and a closure may commit in between: it holds the account's row `FOR
    UPDATE`, which this read's `FOR KEY SHARE` (the lock the order's own reference to the
    account takes on PostgreSQL) waits for, then sees the closure; the order is refused as the
    session it came with has ended (`401 session-ended`)."""
    status = (
        await session.execute(
            select(Account.status)
            .where(Account.id == account_id)
            .with_for_update(key_share=True)
        )
    ).scalar_one_or_none()
    if status is None or status == AccountStatus.closed.value:
        raise SessionEnded()


async def place_order(
    session: AsyncSession,
    settings: Settings,
    providers: Providers,
    *,
    account_id: uuid.UUID,
    idempotency_key: str | None,
    plan_code: str,
    method_code: str,
    line_id: uuid.UUID | None,
    msisdn: str | None,
    flow: PaymentFlow | None,
    language: str,
    now: datetime,
    user_agent: str | None = None,
    quote_token: str | None = None,
) -> PlacedOrder:
    """Create the order and its payment attempt (the checkout is opened after commit).

    With `quote_token` (what `POST /quotes` or the review page gave), the order is placed only at
    that quote's price, fee and total, before its expiry (`hold_to_quote`); without it, at the
    price of the moment."""
    idempotency_key = required_idempotency_key(idempotency_key)
    request: dict[str, Any] = {
        "plan": plan_code,
        "method": method_code,
        "line_id": line_id,
        "msisdn": msisdn,
        "flow": flow.value if flow else None,
    }
    if quote_token is not None:
        # Only when given: an order without one keeps the digest it always had.
        request["quote"] = quote_token
    digest = request_hash(request)
    keys = table_of(IdempotencyKey)
    inserted = (
        await session.execute(
            upsert_insert(session, keys)
            .values(
                id=uuid7(),
                account_id=account_id,
                key=idempotency_key,
                request_hash=digest,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["account_id", "key"])
            .returning(keys.c.id)
        )
    ).scalar_one_or_none()
    key = (
        await session.execute(
            select(IdempotencyKey)
            .where(IdempotencyKey.account_id == account_id, IdempotencyKey.key == idempotency_key)
            .with_for_update()
        )
    ).scalar_one()
    if inserted is None:
        if key.request_hash != digest:
            raise IdempotencyKeyReused(field="Idempotency-Key")
        if key.order_id is not None:
            order = await session.get(Order, key.order_id)
            payment = (
                await session.execute(select(Payment).where(Payment.order_id == key.order_id))
            ).scalar_one()
            assert order is not None
            return PlacedOrder(order, payment, key, replayed=True)
    await refuse_closed_payer(session, account_id)
    facts = (
        read_quote_token(settings.secret_key, quote_token, account_id)
        if quote_token is not None
        else None
    )
    line = await resolve_line(session, account_id, line_id=line_id, msisdn=msisdn)
    q = await quote(
        session,
        settings,
        providers,
        plan_code=plan_code,
        method_code=method_code,
        line=line,
        now=now,
    )
    if facts is not None:
        hold_to_quote(
            settings.secret_key, q, facts, account_id=account_id, language=language, now=now
        )
    prices = await CatalogRepository(session).prices_of(q.plan.id)
    order = Order(
        id=uuid7(),
        reference=new_reference(),
        account_id=account_id,
        line_id=line.id,
        msisdn=line.msisdn,
        plan_id=q.plan.id,
        plan_code=q.plan.code,
        plan_version=q.plan.version,
        plan_snapshot=plan_snapshot(q.plan, prices),
        method_code=q.method.code,
        provider=q.provider,
        currency=q.currency,
        price=q.price,
        fee=q.fee,
        total=q.total,
        state=OrderState.pending.value,
        language=language,
        created_at=now,
        expires_at=now + timedelta(minutes=settings.order_ttl_minutes),
    )
    chosen = check_flow(providers, q, flow, user_agent=user_agent)
    payment = Payment(
        id=uuid7(),
        order_id=order.id,
        provider=q.provider,
        flow=chosen.value,
        state=PaymentStatusValue.pending.value,
        created_at=now,
        updated_at=now,
        next_check_at=now + timedelta(minutes=1),
    )
    session.add_all([order, payment])
    await session.flush()
    key.order_id = order.id
    await session.flush()
    return PlacedOrder(order, payment, key, replayed=False)


async def own_order(
    session: AsyncSession, account_id: uuid.UUID, order_id: uuid.UUID, *, lock: bool = False
) -> Order:
    """An order of this payer; anyone else's is "not found"."""
    order = await session.get(Order, order_id, with_for_update=lock)
    if order is None or order.account_id != account_id:
        if order is not None:
            log_denied("order", account_id, order_id)
        raise OrderNotFound(field="order_id")
    return order


async def orders_of(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    limit: int,
    before: datetime | None = None,
    before_id: uuid.UUID | None = None,
    line_id: uuid.UUID | None = None,
    state: str | None = None,
) -> Sequence[Order]:
    stmt = select(Order).where(Order.account_id == account_id)
    if before is not None:
        stmt = stmt.where(older_than(Order.created_at, Order.id, before, before_id))
    if line_id is not None:
        stmt = stmt.where(Order.line_id == line_id)
    if state is not None:
        stmt = stmt.where(Order.state == state)
    stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def payment_of(session: AsyncSession, order_id: uuid.UUID, *, lock: bool = False) -> Payment:
    stmt = select(Payment).where(Payment.order_id == order_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one()


async def events_of(session: AsyncSession, order_id: uuid.UUID) -> Sequence[ProviderEvent]:
    stmt = (
        select(ProviderEvent)
        .where(ProviderEvent.order_id == order_id)
        .order_by(ProviderEvent.received_at, ProviderEvent.id)
    )
    return (await session.execute(stmt)).scalars().all()


@dataclass(frozen=True, slots=True)
class LockedOrder:
    order: Order
    payment: Payment
    line: Line
    unmatched_news: bool = False
    """Stored refunds or disputes of the order's provider wait for their payment to be known
    (`fulfilment._adopt_early_news`); asked in the same statement, so that the usual answer,
    no, costs nothing."""


def _lock_order_statement(by: Any) -> Any:
    waiting = (
        select(ProviderEvent.id)
        .where(
            ProviderEvent.processed_at.is_(None),
            ProviderEvent.order_id.is_(None),
            ProviderEvent.provider == Order.provider,
        )
        .exists()
    )
    return (
        select(Order, Payment, Line, waiting)
        .join(Payment, Payment.order_id == Order.id)
        .join(Line, Line.id == Order.line_id)
        .where(by)
        .with_for_update(of=[Order, Payment, Line])
    )


# Built once, with bind parameters: building the statement cost each webhook more Python than
# running it (README "Performance").
_LOCK_ORDER_BY_ID = _lock_order_statement(Order.id == bindparam("key"))
_LOCK_ORDER_BY_REFERENCE = _lock_order_statement(Order.reference == bindparam("key"))


async def lock_order(
    session: AsyncSession, *, order_id: uuid.UUID | None = None, reference: str | None = None
) -> LockedOrder | None:
    """An order with its payment and line, the three rows locked in one statement (always in
    the same order, whoever asks: no deadlock between fulfilments)."""
    key: uuid.UUID | str
    if order_id is not None:
        stmt, key = _LOCK_ORDER_BY_ID, order_id
    elif reference is not None:
        stmt, key = _LOCK_ORDER_BY_REFERENCE, reference
    else:
        raise ValueError("an order id or a reference")
    row = (await session.execute(stmt, {"key": key})).one_or_none()
    return LockedOrder(row[0], row[1], row[2], bool(row[3])) if row is not None else None


async def order_by_reference(
    session: AsyncSession, reference: str, *, lock: bool = False
) -> Order | None:
    stmt = select(Order).where(Order.reference == reference)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


def flag_order(order: Order, why: Attention, note: str) -> None:
    """Put an order in front of finance (the back office's "payments needing attention"). A
    second reason keeps the first one's note: finance sees the whole story."""
    if order.attention == why.value and order.attention_note and note in order.attention_note:
        return
    earlier = order.attention_note if order.attention is not None else None
    order.attention = why.value
    order.attention_note = f"{earlier}; {note}" if earlier else note


async def issue_receipt_number(
    session: AsyncSession, order_id: uuid.UUID, *, zone: str = UTC_ZONE
) -> str | None:
    """Number the receipt of a credited order: `R2026-000001`, `R2026-000002` … gapless per
    year of issue, in the order receipts are issued. Once per order (the order is locked and
    keeps its number); None for an order that was not credited — neither its package nor, by
    finance, its payment on the line's balance (`applied_at`).

    The receipt is dated when it is issued (`Order.receipt_issued_at`, the date it prints; the
    payment's date is printed beside it), and its number's year is that date's in the
    operator's zone `zone` (`SIMCHARGE_OPERATOR_TIMEZONE`, `numbering.year_of`): dates follow
    numbers, and a receipt first asked for after its year's books closed is numbered in the
    year it is issued, not in the closed one.

    Numbering at issue rather than in the crediting transaction keeps the one counter row every
    receipt needs out of the webhook's path; the worker issues the receipt right after the
    credit, and asking for the receipt issues it too."""
    order = await session.get(Order, order_id, with_for_update=True)
    if order is None:
        return None
    if order.receipt_number is not None:
        return order.receipt_number
    if order.fulfilled_at is None and await applied_at(session, order) is None:
        return None
    year, value, issued = await _issue(session, RECEIPTS.counter, zone)
    order.receipt_number = RECEIPTS.number(year, value)
    order.receipt_issued_at = issued
    await session.flush()
    return order.receipt_number


async def _issue(
    session: AsyncSession, counter_of: Callable[[int], str], zone: str
) -> tuple[int, int, datetime]:
    """`(year, value, issued_at)`: the next number of a series and the moment it is issued, read
    once the counter's upsert has returned — under the row's lock, held to the transaction's end,
    so the next number's moment comes after this one's. The year is that moment's in `zone`.
    Should the year turn while the lock was awaited (midnight of 1 January), the number is given
    back — this transaction still holds the row, no one took a number after it — and the new
    year's taken instead: no gap, and no number of a closed year dated in the new one."""
    while True:
        year = year_of(utcnow(), zone)
        counter = counter_of(year)
        value = await _next_number(session, counter)
        issued = utcnow()
        if year_of(issued, zone) == year:
            return year, value, issued
        await session.execute(
            update(ReceiptCounter)
            .where(ReceiptCounter.name == counter, ReceiptCounter.value == value)
            .values(value=value - 1)
        )


async def _next_number(session: AsyncSession, counter: str) -> int:
    """The next value of a gapless counter (`receipt_counters`): its row is locked by the
    update until the transaction ends, and a transaction rolled back gives its number back.
    After a restore the operator moves it past the numbers issued since the backup
    (`numbering.continue_series`, `simcharge receipts continue`)."""
    counters = table_of(ReceiptCounter)
    value = (
        await session.execute(
            upsert_insert(session, counters)
            .values(name=counter, value=1)
            .on_conflict_do_update(index_elements=["name"], set_={"value": counters.c.value + 1})
            .returning(counters.c.value)
        )
    ).scalar_one()
    return int(value)


async def issue_credit_note(
    session: AsyncSession, refund_id: uuid.UUID, now: datetime, *, zone: str = UTC_ZONE
) -> str | None:
    """Number the credit note of a refund: `C2026-000001` … gapless per year of issue in the
    operator's time zone `zone`, in its own series, dated when issued
    (`Refund.credit_note_issued_at`, as receipts: `_issue`) — for a refund made at the provider
    reported before its payment, when its money is posted, not when it was reported. Once per
    refund (the refund is locked and keeps its number, so a completion arriving twice, or two
    at once, number it once); None for a refund not done (pending, failed), one made at the
    provider whose money is not posted yet, or one of an order that has no receipt (never
    credited: nothing to credit against). `now` is not its date: the moment it is numbered is
    (the backfill's old refunds are dated by their completion: `backfill_credit_notes`)."""
    return await _issue_credit_note(session, refund_id, zone=zone)


async def _issue_credit_note(
    session: AsyncSession,
    refund_id: uuid.UUID,
    *,
    zone: str,
    dated: Callable[[Refund], datetime | None] = lambda refund: None,
) -> str | None:
    """`issue_credit_note`; `dated`: the date of a credit note numbered now for a refund done
    long ago (the backfill), None: the moment it is numbered."""
    # Read first, locked only when there is something to number: a credit note asked for (or
    # a refund not done) takes no lock, so it never waits on, nor holds up, a completion.
    refund = await session.get(Refund, refund_id)
    if refund is None or refund.credit_note_number is not None or not _done(refund):
        return refund.credit_note_number if refund is not None else None
    refund = await session.get(Refund, refund_id, with_for_update=True)
    assert refund is not None
    if refund.credit_note_number is not None:
        return refund.credit_note_number
    if not _done(refund):
        return None
    if await issue_receipt_number(session, refund.order_id, zone=zone) is None:
        return None
    back_then = dated(refund)
    if back_then is not None:
        year = year_of(back_then, zone)
        value, issued = await _next_number(session, CREDIT_NOTES.counter(year)), back_then
    else:
        year, value, issued = await _issue(session, CREDIT_NOTES.counter, zone)
    refund.credit_note_number = CREDIT_NOTES.number(year, value)
    refund.credit_note_issued_at = issued
    await session.flush()
    return refund.credit_note_number


def _done(refund: Refund) -> bool:
    """Done and its money posted (a refund made at the provider is posted once its payment is
    known: `reversals.settle_provider_refunds`)."""
    posted = bool((refund.plan or {}).get("posted", True))
    return refund.state == RefundState.succeeded.value and posted


async def issue_credit_notes(
    session: AsyncSession, order_id: uuid.UUID, now: datetime, *, zone: str = UTC_ZONE
) -> None:
    """Number the credit notes of every refund of the order that is done and has none yet
    (a refund made at the provider, once its money is posted), in `zone`'s years."""
    ids = (
        await session.execute(
            select(Refund.id)
            .where(
                Refund.order_id == order_id,
                Refund.state == RefundState.succeeded.value,
                Refund.credit_note_number.is_(None),
            )
            .order_by(Refund.completed_at, Refund.id)
        )
    ).scalars().all()
    for refund_id in ids:
        await issue_credit_note(session, refund_id, now, zone=zone)


CREDIT_NOTE_BACKFILL_BATCH = 500
"""Refunds read at once by `backfill_credit_notes` (each is numbered in its own transaction)."""


@dataclass
class CreditNoteBackfill:
    """What `backfill_credit_notes` numbered (or, in a dry run, would number), by year."""

    numbered: dict[int, list[str]]
    """The numbers given, by the year of their series (a dry run: none given, see `due`)."""
    due: dict[int, int]
    """How many refunds were (or would be) numbered, by year."""
    none_due: int = 0
    """Done refunds without a credit note that get none: a payment never credited (no
    receipt to correct), or one made at the provider whose money is not posted yet."""

    @property
    def count(self) -> int:
        return sum(self.due.values())


async def credit_note_due(session: AsyncSession, refund: Refund) -> bool:
    """Whether `issue_credit_note` would number this refund now: done, its money posted, no
    number yet, of an order that has (or is owed) a receipt."""
    if refund.credit_note_number is not None or not _done(refund):
        return False
    order = await session.get(Order, refund.order_id)
    if order is None:
        return False
    return bool(
        order.receipt_number is not None
        or order.fulfilled_at is not None
        or await applied_at(session, order) is not None
    )


async def backfill_credit_notes(
    db: Database,
    actor: Actor,
    *,
    zone: str = UTC_ZONE,
    dry_run: bool = False,
    batch_size: int = CREDIT_NOTE_BACKFILL_BATCH,
) -> CreditNoteBackfill:
    """Number the credit notes of the done refunds that have none — those completed before
    credit notes existed — in the order they were completed, each in the series of its
    completion's year in the operator's time zone `zone` (`issue_credit_note`). Nothing is
    e-mailed: the payer was told of the refund when it was done; the credit note is linked
    from the order.

    Read `batch_size` at a time; each refund is numbered in a transaction of its own, which
    locks what a live completion locks, in the same order (the refund, its order, then the
    year's counter) and holds the counter only at its end: the worker completing refunds
    meanwhile waits milliseconds, never deadlocks, and the series keeps no gap nor a number
    twice. Audited per refund (`credit_note.backfill`, by `actor`). Run again: nothing new."""
    from simcharge.backoffice import audit

    report = CreditNoteBackfill(numbered={}, due={})
    completed = func.coalesce(Refund.completed_at, Refund.created_at)
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        query = (
            select(Refund.id, completed)
            .where(
                Refund.state == RefundState.succeeded.value,
                Refund.credit_note_number.is_(None),
            )
            .order_by(completed, Refund.id)
            .limit(batch_size)
        )
        if after is not None:
            query = query.where(
                or_(completed > after[0], and_(completed == after[0], Refund.id > after[1]))
            )
        async with db.read() as s:
            page = [(row[0], row[1]) for row in (await s.execute(query)).all()]
        if not page:
            return report
        after = (page[-1][1], page[-1][0])
        for refund_id, _ in page:
            if dry_run:
                async with db.read() as s:
                    refund = await s.get(Refund, refund_id)
                    due = refund is not None and await credit_note_due(s, refund)
                if not due:
                    report.none_due += 1
                    continue
                assert refund is not None
                year = year_of(_completed(refund), zone)
                report.due[year] = report.due.get(year, 0) + 1
                continue

            async def number(s: AsyncSession, refund_id: uuid.UUID = refund_id) -> str | None:
                refund = await s.get(Refund, refund_id, with_for_update=True)
                if refund is None or refund.credit_note_number is not None:
                    return ""  # numbered meanwhile (a completion, a payer asking for it)
                issued = await _issue_credit_note(s, refund_id, zone=zone, dated=_completed)
                if issued is not None:
                    await audit.record(
                        s,
                        actor,
                        "credit_note.backfill",
                        target_type="refund",
                        target_id=refund_id,
                        after={"credit_note_number": issued},
                        details={"order_id": refund.order_id, "completed_at": refund.completed_at},
                    )
                return issued

            issued = await db.run(number)
            if issued is None:
                report.none_due += 1
            if not issued:
                continue
            year = int(issued[1:5])
            report.numbered.setdefault(year, []).append(issued)
            report.due[year] = report.due.get(year, 0) + 1


def _completed(refund: Refund) -> datetime:
    """The date of a credit note the backfill gives an old refund: its completion's, as the
    credit notes of that time were dated (and the year of its number)."""
    return refund.completed_at or refund.created_at


def applied_transfer_id(order_id: uuid.UUID) -> uuid.UUID:
    """The one transfer that puts an uncredited payment on the line's wallet (`refunds`)."""
    return derived_id(f"order:{order_id}", "applied")


_MAY_BE_APPLIED = frozenset({OrderState.paid.value, OrderState.refunded.value})
"""The states of an uncredited order whose payment finance may have put on the balance: `paid`,
and `refunded` once the payer also got it all back at the provider (`reversals`)."""


async def applied_at(session: AsyncSession, order: Order) -> datetime | None:
    """When finance put this uncredited payment on the line's balance (None: never): its
    receipt is then issued, for the money that became the payer's credit — and stays that
    receipt when the payer also got the money back at the provider (`refunded`)."""
    if order.fulfilled_at is not None or order.state not in _MAY_BE_APPLIED:
        return None
    transfer = await session.get(LedgerTransfer, applied_transfer_id(order.id))
    return transfer.created_at if transfer is not None else None
