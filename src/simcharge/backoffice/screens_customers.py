"""Customer pages and the money and access actions taken from them; payments needing attention;
adjustments waiting for approval."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
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
    CustomerNotFound,
    LineNotFound,
    adjustments_of,
    checked_query,
    customer_view,
    find_customers,
    search_facts,
    search_matches,
    usage_filter,
    usage_of_line,
)
from simcharge.backoffice.deps import require_web
from simcharge.backoffice.forms import UUID_PATTERN, form_error, in_place, origin, redraw_at
from simcharge.backoffice.links import (
    after_order_action,
    after_refund_action,
    ids_of_references,
    order_ids_of_sources,
    references,
)
from simcharge.backoffice.models import Adjustment
from simcharge.backoffice.orders import attention_counts, attention_orders, order_panel
from simcharge.backoffice.refusal import NO_REFUSAL, FormError
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.web import HEADERS, back, language_of, render
from simcharge.config import Settings
from simcharge.errors import NotFound, ValidationFailed, required_idempotency_key
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.kit.money import LossyConversionError, is_currency, to_minor
from simcharge.kit.numbers import written_number
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


def parse_amount(
    raw: str, unit: str, language: str, field: str = "amount", *, signed: bool = True
) -> int:
    """A signed amount typed by staff in the unit's everyday measure, in the page's number
    format (`1,50` in Spanish, `1,000.50` in English — strictly: a separator in the wrong
    place is not understood, never read as a hundred times as much), in the ledger's units,
    within what the API takes (`AdjustmentIn.amount`). Only ASCII digits, the page's
    separators and, `signed`, a leading `-` (`kit.numbers.written_number`, as the portal reads
    amounts): `1_0`, `1E+1`, `+5`, `.5`, Arabic-Indic or full-width digits are not amounts."""
    amount: int | None
    typed = raw.strip()
    loc = locale_of(language)
    try:
        if not written_number(loc, signed=signed).fullmatch(typed):
            raise ValueError(typed)
        number = Decimal(parse_decimal(typed, locale=loc, strict=True))
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
    """A query too short (`customers.checked_query`: one letter, spaces) is refused beside the
    field as the API refuses it (422): nothing searched, nothing audited — not "No customer
    matches." More matches than are listed: the page says to narrow the search."""
    q = q[:200]
    if q:
        try:
            checked_query(q)
        except ValidationFailed as exc:
            refused = form_error(request, actor, exc, form="search", values={"q": q})
            return render(
                request, "customers.html", actor, status=refused.status, form_error=refused,
                q=q, found=[], more=False, matches=[],
            )  # fmt: skip
    async with db.read() as s:
        search = await find_customers(s, q, region=settings.phone_region) if q else None
        found = search.accounts if search else []
        # What matched, to open directly: only of the accounts listed (those the audit names).
        shown = {a.id for a in found}
        matches = [
            m
            for m in (await search_matches(s, q, region=settings.phone_region) if q else [])
            if m.account_id in shown
        ]
    if q:
        await audit.record_read(
            db, actor, "customer.search", details=search_facts(q, found)
        )
    return render(
        request, "customers.html", actor, q=q, found=found, more=bool(search and search.more),
        matches=matches,
    )  # fmt: skip


@router.get("/customers/{account_id}", response_class=HTMLResponse)
async def customer(request: Request, account_id: uuid.UUID, db: DB, actor: Reader) -> HTMLResponse:
    return await customer_page(request, actor, account_id)


async def customer_page(
    request: Request, actor: Actor, account_id: uuid.UUID, refused: FormError = NO_REFUSAL
) -> HTMLResponse:
    """A customer's page; drawn again with a refused form on it, it is a view of their data as
    any other (audited as `customer.view`)."""
    db = request.app.state.db
    async with db.read() as s:
        view = await customer_view(s, account_id)
        # What the page's bucket sources and tickets name (`order:<id>`, an order, a line).
        sources = (b.source for f in view.lines for u in f.balances.units for b in u.buckets)
        # … and its ledger transfers' references (`order:<id>`, `refund:<id>`, `line:<id>`).
        named = ids_of_references(t.reference for f in view.lines for t in f.transfers)
        about = await references(
            s,
            [*order_ids_of_sources(sources), *(t.order_id for t in view.tickets), *named["order"]],
            [*(t.line_id for t in view.tickets), *named["line"]],
            named["refund"],
        )
    await audit.record_read(db, actor, "customer.view", target_type="account", target_id=account_id)
    return render(
        request,
        "customer.html",
        actor,
        status=refused.status if refused.form else 200,
        view=view,
        about=about,
        idem=uuid7().hex,
        now=utcnow(),
        form_error=refused,
    )


@router.get("/customers/{account_id}/adjustments", response_class=HTMLResponse)
async def customer_adjustments(
    request: Request,
    account_id: uuid.UUID,
    db: DB,
    actor: Reader,
    before: Instant | None = None,
    before_id: uuid.UUID | None = None,
) -> HTMLResponse:
    """All the adjustments to a customer's lines, latest first, a page at a time ("Older":
    `before`, `before_id` of the last one) — their page lists the latest 50 and links here.
    Audited as `adjustment.list`, as the API's list."""
    async with db.read() as s:
        account = await s.get(Account, account_id)
        if account is None:
            raise CustomerNotFound(field="account_id")
        found = await adjustments_of(
            s, account_id, limit=PAGE + 1, before=before, before_id=before_id
        )
        shown = found[:PAGE]
        lines = {
            ln.id: ln
            for ln in (
                await s.execute(select(Line).where(Line.id.in_({a.line_id for a in shown})))
            ).scalars()
        }
    await audit.record_read(
        db, actor, "adjustment.list", target_type="account", target_id=account_id,
        details={"found": len(shown)},
    )  # fmt: skip
    last = shown[-1] if len(found) > PAGE else None
    more = (
        urlencode({"before": last.created_at.isoformat(), "before_id": str(last.id)})
        if last is not None
        else None
    )
    return render(
        request, "customer_adjustments.html", actor,
        account=account, adjustments=shown, lines=lines, more=more,
    )  # fmt: skip


@origin(rf"/backoffice/customers/(?P<account_id>{UUID_PATTERN})", Permission.customers_read)
async def _customer_again(
    request: Request, actor: Actor, at: dict[str, str], refused: FormError
) -> HTMLResponse:
    return await customer_page(request, actor, uuid.UUID(at["account_id"]), refused)


def _on_line_page(request: Request, actor: Actor, line_id: uuid.UUID) -> Any:
    """Draw the page of the customer whose line this is again (a line's forms are there)."""

    async def redraw(refused: FormError) -> HTMLResponse:
        async with request.app.state.db.read() as s:
            line = await s.get(Line, line_id)
        if line is None:
            raise LineNotFound(field="line_id")
        return await customer_page(request, actor, line.account_id, refused)

    return redraw


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
    """A line's usage records with filters, a page at a time; a bad filter draws the form again
    with what was typed and the error beside its field (no records: nothing was read)."""
    try:
        where = usage_filter(service or None, start or None, end or None)
    except ValidationFailed as exc:
        typed = {"service": service or "", "from": start or "", "to": end or ""}
        refused = form_error(request, actor, exc, form="usage", values=typed)
        async with db.read() as s:
            line = await s.get(Line, line_id)
        if line is None:
            raise LineNotFound(field="line_id") from None
        return render(
            request, "usage.html", actor, status=refused.status, form_error=refused, line=line,
            usage=[], service=typed["service"], start=typed["from"], end=typed["to"], more=None,
        )  # fmt: skip
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
async def unlock(request: Request, account_id: uuid.UUID, db: DB, actor: Unlocker) -> Response:
    async def act() -> Response:
        await db.run(lambda s: money.unlock(s, actor, account_id, utcnow()))
        return back(f"/backoffice/customers/{account_id}", "unlocked")

    async def redraw(refused: FormError) -> HTMLResponse:
        return await customer_page(request, actor, account_id, refused)

    return await in_place(request, actor, act, form="unlock", values={}, redraw=redraw)


@router.post("/lines/{line_id}/unfreeze", response_model=None)
async def unfreeze(
    request: Request, line_id: uuid.UUID, db: DB, settings: AppSettings, actor: Unfreezer
) -> Response:
    policy = Policy.of(settings)

    async def act() -> Response:
        line = await db.run(lambda s: money.unfreeze_line(s, actor, line_id, utcnow(), policy))
        return back(f"/backoffice/customers/{line.account_id}#line-{line_id}", "unfrozen")

    return await in_place(
        request, actor, act, form=f"unfreeze-{line_id}", values={},
        redraw=_on_line_page(request, actor, line_id),
    )  # fmt: skip


@router.post("/lines/{line_id}/suspend", response_model=None)
async def suspend(
    request: Request,
    line_id: uuid.UUID,
    db: DB,
    actor: Unfreezer,
    reason: Annotated[str, Form(max_length=money.REASON_MAX)] = "",
) -> Response:
    """The line's "Suspend (lost or stolen)" form: a reason is required; refused beside the form,
    what was typed kept."""

    async def change(s: AsyncSession, now: datetime) -> Line:
        return await money.suspend_line(s, actor, line_id, reason, now)

    return await _line_state_form(request, actor, db, line_id, reason, change, "suspend")


@router.post("/lines/{line_id}/resume", response_model=None)
async def resume(
    request: Request,
    line_id: uuid.UUID,
    db: DB,
    settings: AppSettings,
    actor: Unfreezer,
    reason: Annotated[str, Form(max_length=money.REASON_MAX)] = "",
) -> Response:
    """The line's "Resume" form, as "Suspend": a reason is required."""
    policy = Policy.of(settings)

    async def change(s: AsyncSession, now: datetime) -> Line:
        return await money.resume_line(s, actor, line_id, reason, now, policy)

    return await _line_state_form(request, actor, db, line_id, reason, change, "resume")


LINE_STATE_DONE = {"suspend": "suspended", "resume": "resumed"}
"""What each line-state form's flash says it did (`back`)."""


async def _line_state_form(
    request: Request,
    actor: Actor,
    db: DB,
    line_id: uuid.UUID,
    reason: str,
    change: Callable[[AsyncSession, datetime], Awaitable[Line]],
    form: str,
) -> Response:
    """A line's suspend or resume form (`form`), one way: `change` in a transaction of its own,
    then back to the line on its customer's page; refused (no reason, a line in the wrong
    state), that page drawn again with the reason typed kept beside the form `<form>-<line>`."""

    async def act() -> Response:
        line = await db.run(lambda s: change(s, utcnow()))
        return back(f"/backoffice/customers/{line.account_id}#line-{line_id}", LINE_STATE_DONE[form])

    return await in_place(
        request, actor, act, form=f"{form}-{line_id}", values={"reason": reason},
        redraw=_on_line_page(request, actor, line_id),
    )  # fmt: skip


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

    async def act() -> Response:
        account_id, state = await db.run(run)
        return back(f"/backoffice/customers/{account_id}#line-{line_id}", state)

    typed = {"target": target, "amount": amount, "reason": reason, "idem": idem}
    return await in_place(
        request, actor, act, form=f"adjust-{line_id}", values=typed,
        redraw=_on_line_page(request, actor, line_id),
    )  # fmt: skip


@router.get("/adjustments", response_class=HTMLResponse)
async def adjustments(request: Request, db: DB, actor: Adjuster) -> HTMLResponse:
    return await adjustments_page(request, actor)


async def adjustments_page(
    request: Request, actor: Actor, refused: FormError = NO_REFUSAL
) -> HTMLResponse:
    async with request.app.state.db.read() as s:
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
    return render(
        request,
        "adjustments.html",
        actor,
        status=refused.status if refused.form else 200,
        waiting=waiting,
        recent=recent,
        lines=lines,
        form_error=refused,
    )


@router.post("/adjustments/{adjustment_id}/{decision}", response_model=None)
async def decide(
    request: Request,
    adjustment_id: uuid.UUID,
    decision: str,
    db: DB,
    actor: Approver,
    note: Annotated[str, Form(max_length=600)] = "",
) -> Response:
    """Approve or reject with a note (kept on the adjustment and in the audit): optional to
    approve, required to reject."""
    if decision not in ("approve", "reject"):
        raise ValidationFailed(N_("Unknown decision."), field="decision")

    async def act() -> Response:
        await db.run(
            lambda s: money.decide_adjustment(
                s, actor, adjustment_id, approve=decision == "approve", now=utcnow(),
                note=note, reason_to_reject=True,
            )
        )  # fmt: skip
        return back("/backoffice/adjustments", decision)

    async def redraw(refused: FormError) -> HTMLResponse:
        return await adjustments_page(request, actor, refused)

    return await in_place(
        request, actor, act, form=f"decide-{adjustment_id}", values={"note": note},
        redraw=redraw,
    )  # fmt: skip


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
    everything: Annotated[str, Form(alias="all", max_length=8)] = "",
    left: Annotated[str, Form(max_length=24)] = "",
) -> Response:
    """A typed amount, or everything still refundable as a deliberate choice: the box "refund
    all that is left: X" ticked refunds the X the page showed (`left`, minor units), never more
    (`_how_much`)."""

    async def run(s: AsyncSession) -> str:
        order = await s.get(Order, order_id)
        # In what was paid (a payment in another currency than the order's is refunded in it).
        paid_in = (order.paid_currency or order.currency) if order else ""
        language = language_of(request, actor)
        minor = parse_amount(amount, paid_in, language, signed=False) if order and amount.strip() else None
        if order is not None:
            minor = _how_much(minor, ticked=bool(everything), shown=left)
        row = await money.refund(
            s,
            actor,
            order_id,
            amount=minor,
            reason=reason,
            idempotency_key=required_idempotency_key(idem),
            now=utcnow(),
        )
        return row.state  # pending until the provider answers (`words.DONE`: refund_<state>)

    async def act() -> Response:
        state = await db.run(run)
        return back(await after_order_action(db, actor, then, order_id), f"refund_{state}")

    typed = {"amount": amount, "reason": reason, "idem": idem, "all": everything}
    return await in_place(
        request, actor, act, form=f"refund-{order_id}", values=typed,
        redraw=redraw_at(request, actor, then),
    )  # fmt: skip


def _how_much(typed: int | None, *, ticked: bool, shown: str) -> int:
    """What a refund form asks to refund: the amount typed, or — the box "refund all that is
    left: X" ticked — the X the page showed (minor units; the service refuses it if less is left
    now, and a resent form names the same refund). Neither (the old form's empty amount) or
    both: refused."""
    if typed is not None and ticked:
        raise ValidationFailed(
            N_("Type an amount or tick the box to refund all that is left, not both."),
            field="all",
        )
    if typed is not None:
        return typed
    if not ticked:
        raise ValidationFailed(
            N_("Type the amount to refund, or tick the box to refund all that is left."),
            field="amount",
        )
    if not shown.isascii() or not shown.isdigit() or not 0 < int(shown) <= AMOUNT_BOUND:
        raise ValidationFailed(N_("Nothing is left to refund."), field="all")
    return int(shown)


@router.post("/orders/{order_id}/apply-to-wallet", response_model=None)
async def apply_to_wallet(
    request: Request,
    order_id: uuid.UUID,
    db: DB,
    actor: Refunder,
    note: Annotated[str, Form(max_length=500)] = "",
    then: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    async def act() -> Response:
        await db.run(lambda s: money.apply_payment_to_wallet(s, actor, order_id, note, utcnow()))
        to = await after_order_action(db, actor, then, order_id, home="/backoffice/attention")
        return back(to, "applied_to_balance")

    return await in_place(
        request, actor, act, form=f"apply-{order_id}", values={"note": note},
        redraw=redraw_at(request, actor, then),
    )  # fmt: skip


@router.post("/orders/{order_id}/resend-receipt", response_model=None)
async def resend(
    request: Request,
    order_id: uuid.UUID,
    db: DB,
    actor: Resender,
    then: Annotated[str, Form(max_length=200)] = "",
    idem: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Once per form (its one-time key `idem`): a double click sends one e-mail."""

    async def act() -> Response:
        await db.run(lambda s: money.resend_receipt(s, actor, order_id, utcnow(), once=idem))
        return back(await after_order_action(db, actor, then, order_id), "receipt_resent")

    return await in_place(
        request, actor, act, form=f"resend-{order_id}", values={},
        redraw=redraw_at(request, actor, then),
    )  # fmt: skip


@router.post("/refunds/{refund_id}/resend-credit-note", response_model=None)
async def resend_credit_note(
    request: Request,
    refund_id: uuid.UUID,
    db: DB,
    actor: Resender,
    then: Annotated[str, Form(max_length=200)] = "",
    idem: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Once per form (its one-time key `idem`): a double click sends one e-mail."""

    async def act() -> Response:
        await db.run(
            lambda s: money.resend_credit_note(s, actor, refund_id, utcnow(), once=idem)
        )
        return back(await after_refund_action(db, actor, then, refund_id), "credit_note_resent")

    return await in_place(
        request, actor, act, form=f"credit-note-{refund_id}", values={},
        redraw=redraw_at(request, actor, then),
    )  # fmt: skip


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
    return await attention_page(request, actor, flag or None)


async def attention_page(
    request: Request, actor: Actor, flag: str | None, refused: FormError = NO_REFUSAL
) -> HTMLResponse:
    db = request.app.state.db
    settings: Settings = request.app.state.settings
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
        status=refused.status if refused.form else 200,
        form_error=refused,
        panels=panels,
        counts=counts,
        flag=flag or "",
        idem=uuid7().hex,
    )


@router.post("/orders/{order_id}/resolve", response_model=None)
async def resolve(
    request: Request,
    order_id: uuid.UUID,
    db: DB,
    actor: Resolver,
    note: Annotated[str, Form(max_length=500)] = "",
    then: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    async def act() -> Response:
        await db.run(lambda s: money.resolve_attention(s, actor, order_id, note, utcnow()))
        to = await after_order_action(db, actor, then, order_id, home="/backoffice/attention")
        return back(to, "resolved")

    return await in_place(
        request, actor, act, form=f"resolve-{order_id}", values={"note": note},
        redraw=redraw_at(request, actor, then),
    )  # fmt: skip


@origin("/backoffice/attention", Permission.attention_read)
async def _attention_again(
    request: Request, actor: Actor, at: dict[str, str], refused: FormError
) -> HTMLResponse:
    return await attention_page(request, actor, None, refused)
