"""Customer pages and the money and access actions taken from them; payments needing attention;
adjustments waiting for approval."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated
from urllib.parse import urlencode

from babel.numbers import NumberFormatError, parse_decimal
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.api.deps import DB, AppSettings
from simcharge.backoffice import audit, money
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.customers import (
    LineNotFound,
    customer_view,
    search_customers,
    usage_filter,
    usage_of_line,
)
from simcharge.backoffice.deps import require_web
from simcharge.backoffice.models import Adjustment
from simcharge.backoffice.orders import attention_counts, attention_orders, order_panel
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.web import HEADERS, back, language_of, render
from simcharge.errors import NotFound, ValidationFailed, required_idempotency_key
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.kit.money import LossyConversionError, is_currency, to_minor
from simcharge.kit.schemas import Instant
from simcharge.kit.translations import N_
from simcharge.kit.units import locale_of
from simcharge.lifecycle.service import Policy
from simcharge.lines.models import Bucket, Line
from simcharge.orders import receipts
from simcharge.orders.endpoints import (
    ReceiptAwaitsCredit,
    ReceiptNotReady,
    ReceiptRefundedUncredited,
)
from simcharge.orders.models import Order, OrderState, Refund

router = APIRouter(prefix="/backoffice", include_in_schema=False)
Reader = Annotated[Actor, require_web(Permission.customers_read)]
Unlocker = Annotated[Actor, require_web(Permission.accounts_unlock)]
Unfreezer = Annotated[Actor, require_web(Permission.lines_unfreeze)]
Adjuster = Annotated[Actor, require_web(Permission.adjustments_request)]
Approver = Annotated[Actor, require_web(Permission.adjustments_approve)]
Refunder = Annotated[Actor, require_web(Permission.refunds_create)]
Resender = Annotated[Actor, require_web(Permission.receipts_resend)]
AttentionReader = Annotated[Actor, require_web(Permission.attention_read)]
Resolver = Annotated[Actor, require_web(Permission.attention_resolve)]
PAGE = 100
UNIT_SCALE = {"VOICE_S": 60, "DATA_B": 1_048_576, "SMS": 1}
"""Staff type minutes, megabytes and messages; the ledger counts seconds, bytes, messages."""
AMOUNT_BOUND = 10**12
"""The largest amount typed on a page, in ledger units either way: the API's bound."""


def _then(then: str, fallback: str) -> str:
    return then if then.startswith("/backoffice/") and "//" not in then else fallback


def parse_amount(raw: str, unit: str, language: str, field: str = "amount") -> int:
    """A signed amount typed by staff in the unit's everyday measure, in the page's number
    format (`1,50` in Spanish, `1,000.50` in English — strictly: a separator in the wrong
    place is not understood, never read as a hundred times as much), in the ledger's units,
    within what the API takes (`AdjustmentIn.amount`)."""
    amount: int | None
    try:
        number = Decimal(parse_decimal(raw.strip(), locale=locale_of(language), strict=True))
        # Bounded before `to_minor` makes an integer of it: "1e99999999" would take minutes.
        if not number.is_finite() or number.copy_abs() > AMOUNT_BOUND:
            amount = None
        elif is_currency(unit):
            amount = to_minor(number, unit)
        elif number != number.to_integral_value():
            amount = None
        else:
            amount = int(number) * UNIT_SCALE[unit]
    except (LossyConversionError, ArithmeticError, ValueError, KeyError, NumberFormatError):
        amount = None
    if amount is None or abs(amount) > AMOUNT_BOUND:
        raise ValidationFailed(N_("This is not a valid amount."), field=field)
    return amount


@router.get("/customers", response_class=HTMLResponse)
async def customers(
    request: Request, db: DB, settings: AppSettings, actor: Reader, q: str = ""
) -> HTMLResponse:
    q = q[:200]
    async with db.read() as s:
        found = await search_customers(s, q, region=settings.phone_region) if q else []
    if q:
        await audit.record_read(
            db, actor, "customer.search", details={"q": q, "found": len(found)}
        )
    return render(request, "customers.html", actor, q=q, found=found)


@router.get("/customers/{account_id}", response_class=HTMLResponse)
async def customer(request: Request, account_id: uuid.UUID, db: DB, actor: Reader) -> HTMLResponse:
    async with db.read() as s:
        view = await customer_view(s, account_id)
    await audit.record_read(db, actor, "customer.view", target_type="account", target_id=account_id)
    return render(
        request, "customer.html", actor, view=view, idem=uuid7().hex, now=utcnow()
    )


@router.get("/lines/{line_id}/usage", response_class=HTMLResponse)
async def usage(
    request: Request,
    line_id: uuid.UUID,
    db: DB,
    actor: Reader,
    service: Annotated[str | None, Query(max_length=8)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    before: Instant | None = None,
    before_id: uuid.UUID | None = None,
) -> HTMLResponse:
    """A line's usage records with filters, a page at a time."""
    where = usage_filter(service or None, start or None, end or None)
    cursor = (before, before_id) if before is not None else None
    async with db.read() as s:
        line, found = await usage_of_line(s, line_id, where=where, before=cursor, limit=PAGE + 1)
    await audit.record_read(
        db,
        actor,
        "usage.list",
        target_type="line",
        target_id=line_id,
        details={"service": service or None, "from": start, "to": end, "found": len(found)},
    )
    last = found[PAGE - 1].record if len(found) > PAGE else None
    more = (
        urlencode(
            {
                "service": service or "",
                "from": start or "",
                "to": end or "",
                "before": last.started_at.isoformat(),
                "before_id": str(last.id),
            }
        )
        if last is not None
        else None
    )
    return render(
        request,
        "usage.html",
        actor,
        line=line,
        usage=found[:PAGE],
        service=service or "",
        start=start or "",
        end=end or "",
        more=more,
    )


@router.post("/customers/{account_id}/unlock", response_model=None)
async def unlock(account_id: uuid.UUID, db: DB, actor: Unlocker) -> Response:
    await db.run(lambda s: money.unlock(s, actor, account_id, utcnow()))
    return back(f"/backoffice/customers/{account_id}", "unlocked")


@router.post("/lines/{line_id}/unfreeze", response_model=None)
async def unfreeze(
    line_id: uuid.UUID, db: DB, settings: AppSettings, actor: Unfreezer
) -> Response:
    policy = Policy.of(settings)
    line = await db.run(lambda s: money.unfreeze_line(s, actor, line_id, utcnow(), policy))
    return back(f"/backoffice/customers/{line.account_id}", "unfrozen")


@router.post("/lines/{line_id}/adjust", response_model=None)
async def adjust(
    request: Request,
    line_id: uuid.UUID,
    db: DB,
    settings: AppSettings,
    actor: Adjuster,
    target: Annotated[str, Form(max_length=64)] = "wallet",
    amount: Annotated[str, Form(max_length=32)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    idem: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """The page's one-time key (`idem`, made when the customer page was shown) makes a double
    submit or a browser's retry the same adjustment."""

    async def run(s: AsyncSession) -> tuple[uuid.UUID | None, str]:
        line = await s.get(Line, line_id)
        if line is None:
            raise LineNotFound(field="line_id")
        unit = line.currency
        if target != "wallet":
            try:
                bucket = await s.get(Bucket, uuid.UUID(target))
            except ValueError:
                bucket = None
            unit = bucket.unit if bucket is not None else "SMS"
        adj = await money.request_adjustment(
            s,
            settings,
            actor,
            line_id,
            target=target,
            amount=parse_amount(amount, unit, language_of(request, actor)),
            reason=reason,
            idempotency_key=idem,
            now=utcnow(),
        )
        return line.account_id, adj.state

    account_id, state = await db.run(run)
    return back(f"/backoffice/customers/{account_id}", state)


@router.get("/adjustments", response_class=HTMLResponse)
async def adjustments(request: Request, db: DB, actor: Adjuster) -> HTMLResponse:
    async with db.read() as s:
        waiting = await money.pending_adjustments(s)
        recent = list(
            (
                await s.execute(select(Adjustment).order_by(Adjustment.created_at.desc()).limit(50))
            ).scalars()
        )
        lines = {
            ln.id: ln
            for ln in (
                await s.execute(
                    select(Line).where(Line.id.in_({a.line_id for a in waiting + recent}))
                )
            ).scalars()
        }
    return render(request, "adjustments.html", actor, waiting=waiting, recent=recent, lines=lines)


@router.post("/adjustments/{adjustment_id}/{decision}", response_model=None)
async def decide(adjustment_id: uuid.UUID, decision: str, db: DB, actor: Approver) -> Response:
    if decision not in ("approve", "reject"):
        raise ValidationFailed(N_("Unknown decision."), field="decision")
    await db.run(
        lambda s: money.decide_adjustment(
            s, actor, adjustment_id, approve=decision == "approve", now=utcnow()
        )
    )
    return back("/backoffice/adjustments", decision)


@router.post("/orders/{order_id}/refund", response_model=None)
async def refund(
    request: Request,
    order_id: uuid.UUID,
    db: DB,
    actor: Refunder,
    amount: Annotated[str, Form(max_length=32)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    idem: Annotated[str, Form(max_length=128)] = "",
    then: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    async def run(s: AsyncSession) -> None:
        order = await s.get(Order, order_id)
        # In what was paid (a payment in another currency than the order's is refunded in it).
        paid_in = (order.paid_currency or order.currency) if order else ""
        language = language_of(request, actor)
        minor = parse_amount(amount, paid_in, language) if order and amount.strip() else None
        await money.refund(
            s,
            actor,
            order_id,
            amount=minor,
            reason=reason,
            idempotency_key=required_idempotency_key(idem),
            now=utcnow(),
        )

    await db.run(run)
    return back(_then(then, "/backoffice"), "refund")


@router.post("/orders/{order_id}/apply-to-wallet", response_model=None)
async def apply_to_wallet(
    order_id: uuid.UUID,
    db: DB,
    actor: Refunder,
    note: Annotated[str, Form(max_length=500)] = "",
    then: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    await db.run(lambda s: money.apply_payment_to_wallet(s, actor, order_id, note, utcnow()))
    return back(_then(then, "/backoffice/attention"), "applied")


@router.post("/orders/{order_id}/resend-receipt", response_model=None)
async def resend(
    order_id: uuid.UUID,
    db: DB,
    actor: Resender,
    then: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    await db.run(lambda s: money.resend_receipt(s, actor, order_id, utcnow()))
    return back(_then(then, "/backoffice"), "resent")


@router.post("/refunds/{refund_id}/resend-credit-note", response_model=None)
async def resend_credit_note(
    refund_id: uuid.UUID,
    db: DB,
    actor: Resender,
    then: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    await db.run(lambda s: money.resend_credit_note(s, actor, refund_id, utcnow()))
    return back(_then(then, "/backoffice"), "resent")


@router.get("/refunds/{refund_id}/credit-note", response_model=None)
async def credit_note(
    refund_id: uuid.UUID, db: DB, settings: AppSettings, actor: Reader
) -> Response:
    """A done refund's credit note, the very PDF its payer gets (in their account's language);
    audited as a read of their data (`credit_note.view`)."""
    async with db.read() as s:
        refund = await s.get(Refund, refund_id)
        order = await s.get(Order, refund.order_id) if refund is not None else None
        if refund is None or order is None:
            raise NotFound(field="refund_id")
        account = await s.get(Account, order.account_id)
        language = account.language if account is not None else settings.default_language
    pdf = await receipts.credit_note_for(
        db, refund_id, language, settings.operator_name, settings.operator_timezone
    )
    if pdf is None:
        raise NotFound(field="refund_id")
    await audit.record_read(
        db, actor, "credit_note.view", target_type="refund", target_id=refund_id,
        details={"language": language},
    )  # fmt: skip
    async with db.read() as s:
        numbered = await s.get(Refund, refund_id)
        assert numbered is not None
        name = receipts.credit_note_filename(numbered)
    return receipts.pdf_response(pdf, name, HEADERS)


@router.get("/orders/{order_id}/receipt", response_model=None)
async def receipt(
    order_id: uuid.UUID, db: DB, settings: AppSettings, actor: Reader
) -> Response:
    """The order's receipt, the very PDF its customer gets (in their account's language);
    audited as a read of their data (`receipt.view`)."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        if order is None:
            raise NotFound(field="order_id")
        account = await s.get(Account, order.account_id)
        language = account.language if account is not None else settings.default_language
    pdf = await receipts.receipt_for(
        db, order_id, language, settings.operator_name, settings.operator_timezone
    )
    if pdf is None:
        if order.state == OrderState.paid.value:
            raise ReceiptAwaitsCredit(field="order_id")
        if order.state == OrderState.refunded.value:
            raise ReceiptRefundedUncredited(field="order_id")
        raise ReceiptNotReady(field="order_id")
    await audit.record_read(
        db, actor, "receipt.view", target_type="order", target_id=order_id,
        details={"language": language},
    )  # fmt: skip
    async with db.read() as s:
        numbered = await s.get(Order, order_id)
        assert numbered is not None
        name = receipts.filename(numbered)
    return receipts.pdf_response(pdf, name, HEADERS)


@router.get("/attention", response_class=HTMLResponse)
async def attention(
    request: Request,
    db: DB,
    settings: AppSettings,
    actor: AttentionReader,
    flag: Annotated[str | None, Query(max_length=24)] = None,
) -> HTMLResponse:
    async with db.read() as s:
        ids = await attention_orders(s, settings.order_pending_alert_minutes, flag=flag or None)
        panels = [await order_panel(s, i) for i in ids]
        counts = await attention_counts(s, settings.order_pending_alert_minutes)
    await audit.record_read(
        db, actor, "attention.list", details={"flag": flag or None, "found": len(panels)}
    )
    return render(
        request,
        "attention.html",
        actor,
        panels=panels,
        counts=counts,
        flag=flag or "",
        idem=uuid7().hex,
    )


@router.post("/orders/{order_id}/resolve", response_model=None)
async def resolve(
    order_id: uuid.UUID,
    db: DB,
    actor: Resolver,
    note: Annotated[str, Form(max_length=500)] = "",
    then: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    await db.run(lambda s: money.resolve_attention(s, actor, order_id, note, utcnow()))
    return back(_then(then, "/backoffice/attention"), "resolved")
