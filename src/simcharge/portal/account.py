"""The user center: lines and balances, topping up, an order's page, consumption records."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import segno
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from markupsafe import Markup
from sqlalchemy import select

from simcharge.accounts import service as accounts
from simcharge.api.deps import DB, AppSettings
from simcharge.api.problems import error_texts
from simcharge.auth import codes
from simcharge.auth.deps import Client, Limits
from simcharge.auth.models import CodePurpose
from simcharge.auth.sessions import ReadsWithSession
from simcharge.backoffice.reports import csv_cell
from simcharge.catalog.service import list_methods, list_plans
from simcharge.config import Settings
from simcharge.errors import NotAuthenticated, NotFound, Refused, SimchargeError
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import chosen_format, pick_text
from simcharge.kit.translations import N_, translate
from simcharge.kit.units import units_text
from simcharge.lifecycle.forecast import outlook
from simcharge.lifecycle.service import Policy
from simcharge.lines.models import Line, LineFacts, LineState
from simcharge.lines.repository import HOLDINGS_OF_ACCOUNT, LINES_OF_ACCOUNT
from simcharge.lines.schemas import LineBalances
from simcharge.lines.service import holdings_from, line_balances
from simcharge.notifications.service import NOTICES_OF, mark_read
from simcharge.notifications.templates import READER_ZONE, environment, notice_title
from simcharge.orders import service as orders
from simcharge.orders.models import Order, OrderState, Payment, Refund
from simcharge.orders.refunds import applied_orders, credit_notes_of
from simcharge.payments import service as payments
from simcharge.payments.providers.base import PaymentFlow
from simcharge.payments.registry import Providers
from simcharge.portal.records import (
    KINDS,
    LATEST_OF_ACCOUNT,
    Cursor,
    records_from,
    records_page,
)
from simcharge.portal.web import (
    Page,
    Visitor,
    carried,
    carry,
    drop_carried,
    fee_text,
    form_of,
    provider_url_ok,
    redirect,
    render,
    visitor_reading,
)

router = APIRouter(include_in_schema=False)

WARN_DAYS = 14
"""A line whose validity ends within this many days shows how to keep it active."""


def retry_at(exc: SimchargeError) -> datetime | None:
    """When a refusal for now (a rate limit, a lock-out: its `Retry-After`, in seconds) ends:
    the error page says it, in the reader's zone like every time of the portal."""
    wait = exc.headers.get("Retry-After", "")
    return utcnow() + timedelta(seconds=int(wait)) if wait.isdigit() else None


def require(page: Visitor) -> uuid.UUID:
    if page.customer is None:
        raise NotAuthenticated(N_("Please sign in."))
    return page.customer.account.id


def _providers(request: Request) -> Providers:
    providers: Providers = request.app.state.providers
    return providers


def _uuid(raw: str | None, field: str = "order_id") -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise NotFound(field=field) from None


@dataclass
class LineCard:
    """A line on the user center, with what its state means and how to keep it active."""

    line: LineFacts
    balances: LineBalances
    days_left: int | None = None
    """An active line whose validity runs: the days until it ends."""
    warn: str | None = None
    """Why and how to keep the line active, when it matters."""
    freeze_on: datetime | None = None
    """When the line would be frozen (the lifecycle's rules), shown when it matters."""
    freeze_days: int | None = None
    freeze_if_unused: bool = False
    """The freeze comes from inactivity: using the line also keeps it."""
    terminate_on: datetime | None = None
    terminate_days: int | None = None
    validity_ended: datetime | None = None

    @property
    def top_up(self) -> bool:
        """Whether the card offers "Top up this line": not for a closed line, nor a suspended
        one — a top-up is credited but does not resume it (its packages would run out unused);
        its warning sends the customer to customer service instead."""
        return LineState(self.line.state) not in (LineState.terminated, LineState.suspended)


SUSPENDED_TOPUP = N_(
    "This line is suspended: a top-up is credited but the line stays unusable until customer "
    "service resumes it."
)
"""Said on the top-up page beside a suspended line of the customer's and on the review of its
top-up: top-ups are accepted while a line is suspended (README "Line lifecycle"), but do not
bring it back."""


FROZEN_WARNINGS: dict[str, str] = {
    "topup": N_(
        "This line is frozen because it was not used or topped up for a long time. "
        "A top-up reactivates it."
    ),
    "owner_topup": N_(
        "This line is frozen because it was not used or topped up for a long time. "
        "A top-up paid from your account reactivates it."
    ),
    "support": N_(
        "This line is frozen because it was not used or topped up for a long time. "
        "Ask customer service to reactivate it."
    ),
}
"""What brings a frozen line back, per `SIMCHARGE_LIFECYCLE_FROZEN_REACTIVATION`."""


def _days_until(when: datetime, now: datetime) -> int:
    """Whole days, rounded up, as the lifecycle's warnings count them."""
    return max(1, math.ceil((when - now) / timedelta(days=1)))


def line_card(line: LineFacts, balances: LineBalances, now: datetime, policy: Policy) -> LineCard:
    card = LineCard(line, balances)
    state = LineState(line.state)
    ahead = outlook(line, policy)
    if state is LineState.active and line.validity_end is not None:
        if line.validity_end > now:
            card.days_left = _days_until(line.validity_end, now)
        else:
            card.validity_ended = line.validity_end
    if state is LineState.frozen:
        card.warn = FROZEN_WARNINGS.get(policy.frozen_reactivation, FROZEN_WARNINGS["topup"])
    elif state is LineState.suspended:
        # Stopped by customer service (a SIM reported lost or stolen): only they resume it.
        card.warn = N_("This line is suspended: it cannot be used. Contact us to resume it.")
    elif state is LineState.grace:
        card.warn = N_(
            "This line's validity has ended: it can receive calls but not use paid services, "
            "and it will be frozen if it is not topped up. Top up to keep it active."
        )
        if line.validity_end is not None:
            card.validity_ended = line.validity_end
    elif state is LineState.available:
        card.warn = N_("This line is not in service yet: its first top-up activates it.")
    elif state is LineState.terminated:
        card.warn = N_("This line is closed.")
    elif card.days_left is None or card.days_left <= WARN_DAYS:
        card.warn = N_(
            "Top up before the validity ends to keep this line active; any package extends it."
        )
    # The freeze date when it matters: in grace, or validity or activity running out soon.
    freeze = ahead.freeze_at
    if freeze is not None and freeze > now and (
        state is LineState.grace
        or card.warn is not None
        or freeze - now <= timedelta(days=WARN_DAYS)
    ):
        card.freeze_on, card.freeze_days = freeze, _days_until(freeze, now)
        card.freeze_if_unused = freeze == (line.last_activity_at or line.state_changed_at) + (
            policy.inactivity
        )
    if ahead.terminate_at is not None and ahead.terminate_at > now:
        card.terminate_on = ahead.terminate_at
        card.terminate_days = _days_until(ahead.terminate_at, now)
    return card


LATEST = 5
"""Records of the latest activity the user center shows."""
_USER_CENTER = ReadsWithSession(
    (LINES_OF_ACCOUNT, HOLDINGS_OF_ACCOUNT, LATEST_OF_ACCOUNT, NOTICES_OF),
    ({}, {}, {"limit": 2 * LATEST}, {"limit": 5}),
)
"""The user center's reads: the lines, their balances, the latest activity and the notices,
whatever the number of lines, in the session check's own statement (on PostgreSQL one round
trip for the whole page, and one consistent picture)."""


@router.get("/account")
async def dashboard(
    request: Request, page: Annotated[Visitor, Depends(visitor_reading(_USER_CENTER))]
) -> Response:
    require(page)
    assert page.read is not None  # a customer's page: read with the session
    lines, holdings, latest, notices = page.read
    # From the app's state and the query string rather than as parameters for FastAPI to solve
    # (see `web.visitor`): the busiest page.
    settings: Settings = request.app.state.settings
    verified = request.query_params.get("verified")
    now = utcnow()
    held = holdings_from(lines, holdings, now)
    recent = records_from(latest, lines, held.accounts, limit=LATEST)
    policy = Policy.of(settings)
    cards = [line_card(line, held.balances[line.id], now, policy) for line in lines]
    language = page.language
    # A line suspended since a notice said it was running out: customer service, not a top-up.
    suspended = frozenset(line.id for line in lines if line.state == LineState.suspended.value)
    shown = []
    for n in notices:
        title = notice_title(n.id, n.template, language, n.params,
                             operator=settings.operator_name, base_url=settings.base_url)
        body = notice_body(n.id, n.template, language, n.params, page.zone, page.locale,
                           operator=settings.operator_name, base_url=settings.base_url)
        shown.append({"title": title, "at": n.created_at, "unread": n.read_at is None,
                      "body": body,
                      "action": notice_action(n.template, n.params, n.line_id, suspended)})
    added = request.query_params.get("added")
    return render(
        request, page, "dashboard.html", cards=cards, recent=recent, notices=shown,
        unread=any(n["unread"] for n in shown),
        kinds=KINDS,
        good=N_("Your contact is verified.") if verified
        else N_("The line is added to your account.") if added else None,
    )


_BODIES: dict[tuple[Any, ...], str] = {}
_BODIES_KEPT = 20_000


def notice_body(
    notice_id: uuid.UUID,
    name: str,
    language: str,
    params: dict[str, Any],
    zone: str,
    locale: str | None,
    *,
    operator: str,
    base_url: str,
) -> str:
    """What a stored notice says, as its e-mail's text says it (the template's `text` block,
    without the e-mail's greeting and footer): its time in the reader's zone, the device and
    address it names… Only what the notice stored; remembered by the process as its title
    (`notice_title`): a notice never changes once stored."""
    key = (notice_id, language, zone, locale, operator, base_url)
    body = _BODIES.get(key)
    if body is None:
        if len(_BODIES) >= _BODIES_KEPT:
            _BODIES.clear()
        env = environment(language, locale=chosen_format(language, locale))
        template = env.get_template(f"{name}.jinja")
        block = template.blocks.get("text")
        context = {"operator": operator, "base_url": base_url, **params, READER_ZONE: zone}
        body = "".join(block(template.new_context(context))).strip() if block else ""
        _BODIES[key] = body
    return body


_LINE_ACTION_NOTICES = frozenset({
    "line.validity_ending", "line.entered_grace", "line.grace_ending", "line.freeze_warning",
    "line.termination_warning",
})  # fmt: skip


def notice_action(
    name: str,
    params: dict[str, Any],
    line_id: uuid.UUID | None,
    suspended: frozenset[uuid.UUID] = frozenset(),
) -> tuple[str, str] | None:
    """Where a notice's reader acts on it, from what it stored: the Security page for a
    security alert, the order for an order's notice, the top-up of the line running out — or,
    that line suspended since (`suspended`: a top-up would not bring it back), customer service
    —, the questions for a ticket's; none otherwise."""
    if name.startswith("security."):
        return "/account/security", N_("Go to the Security page")
    if name.startswith("order.") and params.get("order_id"):
        return f"/account/orders/{params['order_id']}", N_("See the order")
    if name in _LINE_ACTION_NOTICES and line_id is not None:
        if line_id in suspended:
            return "/account/help", N_("Customer service")
        return f"/account/topup?line={line_id}", N_("Top up this line")
    if name.startswith("ticket."):
        return "/account/help", N_("All my questions")
    return None


@router.post("/account/notices/read")
async def notices_read(request: Request, page: Page, db: DB) -> Response:
    account_id = require(page)
    await form_of(request, page)
    await db.run(lambda s: mark_read(s, account_id, None, utcnow()))
    return redirect("/account")


# --- top up ---------------------------------------------------------------------------------------


async def _catalog(request: Request, db: DB, language: str) -> tuple[list[Any], list[Any]]:
    providers = _providers(request)

    def served(m: Any) -> bool:
        return providers.serving(m) is not None

    async with db.read() as s:
        return await list_plans(s, language, served), await list_methods(s, language, served)


@router.get("/account/topup")
async def topup_form(
    request: Request,
    page: Page,
    db: DB,
    line: str | None = None,
    msisdn: str = "",
    plan: str | None = None,
    method: str | None = None,
) -> Response:
    account_id = require(page)
    async with db.read() as s:
        lines = await accounts.own_lines(s, account_id)
    plans, methods = await _catalog(request, db, page.language)
    chosen_line = line or (str(lines[0].id) if lines and not msisdn else "other")
    return render(
        request, page, "topup.html", lines=lines, plans=plans, methods=methods,
        suspended_topup=SUSPENDED_TOPUP,
        fees={m.code: fee_text(m, page.language, page.locale) for m in methods},
        values={"line": chosen_line, "msisdn": msisdn[:32], "plan": plan or "",
                "method": method or ""},
        errors={},
    )


@dataclass
class Choice:
    line_id: uuid.UUID | None
    msisdn: str | None
    plan: str
    method: str

    def query(self) -> str:
        return urlencode(
            {"line": str(self.line_id) if self.line_id else "other", "msisdn": self.msisdn or "",
             "plan": self.plan, "method": self.method}
        )


def _choice(values: dict[str, str]) -> Choice:
    raw_line = values.get("line", "")
    line_id = None
    if raw_line and raw_line != "other":
        line_id = _uuid(raw_line, "line")
    msisdn = values.get("msisdn", "").strip() or None if line_id is None else None
    return Choice(line_id, msisdn, values.get("plan", ""), values.get("method", ""))


@router.get("/account/topup/review")
async def topup_review(request: Request, page: Page, db: DB, settings: AppSettings) -> Response:
    """What the payer would pay, fee included, in the method's currency; then "Pay now"."""
    account_id = require(page)
    values = {k: request.query_params.get(k, "") for k in ("line", "msisdn", "plan", "method")}
    return await _review(request, page, db, settings, account_id, values)


# Why the review page is shown again instead of paying (nothing was ordered or charged).
_QUOTE_AGAIN = {
    "price": N_("The price changed since you looked: here is the new total. Pay now?"),
    "package": N_("This package changed since you looked: check it again. Pay now?"),
    "expired": N_("The price you were shown is no longer held: here is the total now. Pay now?"),
    "invalid": N_("Check the total before paying: here it is now. Pay now?"),
}


async def _review(
    request: Request, page: Page, db: DB, settings: AppSettings, account_id: uuid.UUID,
    values: dict[str, str], *, status: int = 200, again: str | None = None,
) -> Response:
    """The review page with a fresh quote, signed into the form (`orders.sign_quote`): "Pay now"
    orders at this total or not at all. `again`: why it is shown again after "Pay now"."""
    providers = _providers(request)
    try:
        choice = _choice(values)
        async with db.read() as s:
            target = await orders.resolve_line(
                s, account_id, line_id=choice.line_id, msisdn=choice.msisdn
            )
            q = await orders.quote(
                s, settings, providers, plan_code=choice.plan, method_code=choice.method,
                line=target, now=utcnow(),
            )
            orders.check_flow(providers, q, None)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        async with db.read() as s:
            lines = await accounts.own_lines(s, account_id)
        plans, methods = await _catalog(request, db, page.language)
        return render(
            request, page, "topup.html", status=exc.status, lines=lines, plans=plans,
            suspended_topup=SUSPENDED_TOPUP,
            methods=methods, fees={m.code: fee_text(m, page.language, page.locale) for m in methods},
            values=values, errors=errors, error=summary, headers=exc.headers,
        )
    gift = target.account_id != account_id
    return render(
        request, page, "topup_review.html", status=status, q=q, choice=choice,
        gift=gift,
        # Only the payer's own line: a gift's receiver's state is not the payer's to know.
        suspended=SUSPENDED_TOPUP
        if not gift and LineState(target.state) is LineState.suspended
        else None,
        plan_name=pick_text(q.plan.names, page.language),
        method_name=pick_text(q.method.names, page.language),
        quote=orders.sign_quote(settings.secret_key, q, account_id),
        again=translate(page.language, _QUOTE_AGAIN[again]) if again else None,
        idempotency_key=uuid.uuid4().hex, back="/account/topup?" + choice.query(),
    )


@router.post("/account/topup")
async def topup(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client
) -> Response:
    """Place the order (the form's idempotency key makes a second click the same order), open
    the provider's checkout and go there; a QR code is shown on the order's page."""
    account_id = require(page)
    form = await form_of(request, page)
    providers = _providers(request)
    choice = _choice(form)
    try:
        placed = await db.run(
            lambda s: orders.place_order(
                s, settings, providers, account_id=account_id,
                idempotency_key=form.get("idempotency_key") or None,
                plan_code=choice.plan, method_code=choice.method, line_id=choice.line_id,
                msisdn=choice.msisdn, flow=None, language=page.language, now=utcnow(),
                user_agent=client.user_agent,
                # Always the review's quote (a form without one is no quote): the payer pays
                # the total the page showed, or sees the new one and is asked again.
                quote_token=form.get("quote", ""),
            )
        )
        payment = await payments.open_checkout(
            db, settings, providers, placed.order.id, client_ip=client.ip
        )
    except (orders.QuoteChanged, orders.QuoteExpired, orders.QuoteInvalid) as exc:
        if isinstance(exc, orders.QuoteChanged):
            again = "price" if exc.price_changed else "package"
        else:
            again = "expired" if isinstance(exc, orders.QuoteExpired) else "invalid"
        values = {k: form.get(k, "") for k in ("line", "msisdn", "plan", "method")}
        return await _review(
            request, page, db, settings, account_id, values, status=exc.status, again=again
        )
    except SimchargeError as exc:
        summary, _ = error_texts(exc, page.language)
        return render(
            request, page, "error.html", status=exc.status, headers=exc.headers,
            title=translate(page.language, N_("The payment could not be started")),
            detail=summary, request_id=None, retry_at=retry_at(exc),
        )
    order_page = f"/account/orders/{placed.order.id}"
    url = payment.redirect_url
    # A hosted page (the website's, or the phone's: Alipay `wap.pay`, WeChat Pay H5); a QR code is
    # shown on the order's page — and so is an order sent again once it is no longer waiting
    # for payment (Back, then "Pay now" again): its page says how it went.
    pending = placed.order.state == OrderState.pending.value
    if pending and payment.flow != PaymentFlow.qr.value and url and provider_url_ok(settings, url):
        return redirect(url)
    return redirect(order_page)


# --- an order's page --------------------------------------------------------------------------------


def qr_svg(payload: str) -> Markup:
    # segno writes the SVG itself from the payload's modules: no markup of ours comes from it.
    return Markup(segno.make(payload, error="m").svg_inline(scale=5, border=2, omitsize=True))  # noqa: S704


async def _order_and_payment(
    db: DB, account_id: uuid.UUID, order_id: uuid.UUID
) -> tuple[Order, Payment, LineBalances | None, bool, list[Refund]]:
    """The order, its payment, the line's balances once credited, whether finance put the
    payment on the line's balance (`applied_at`: known at once, before the worker numbers its
    receipt), and its refunds that have a credit note."""
    async with db.read() as s:
        order = await orders.own_order(s, account_id, order_id)
        payment = await orders.payment_of(s, order.id)
        line = await s.get(Line, order.line_id)
        balances = (
            await line_balances(s, line)
            if line is not None and line.account_id == account_id and order.state == "fulfilled"
            else None
        )
        applied = await orders.applied_at(s, order) is not None
        notes = (await credit_notes_of(s, [order.id])).get(order.id, [])
    return order, payment, balances, applied, notes


@router.get("/account/orders/{order_id}")
async def order_page(
    order_id: str, request: Request, page: Page, db: DB, settings: AppSettings,
    cancelled: str | None = None,
) -> Response:
    account_id = require(page)
    order, payment, balances, applied, notes = await _order_and_payment(
        db, account_id, _uuid(order_id)
    )
    # Only a pending order changes by itself: a `paid` one (paid, not credited) waits for finance.
    waiting = order.state == "pending"
    qr = (
        qr_svg(payment.qr_payload)
        if order.state == "pending" and payment.flow == "qr" and payment.qr_payload
        else None
    )
    return render(
        request, page, "order.html", order=order, payment=payment, balances=balances,
        applied=applied, credit_notes=notes, waiting=waiting, qr=qr, cancelled=bool(cancelled),
        plan_name=pick_text(order.plan_snapshot.get("names", {}), page.language) or order.plan_code,
        pay_url=_pay_url(settings, order, payment),
    )


def _pay_url(settings: AppSettings, order: Order, payment: Payment) -> str | None:
    """The provider's page of a waiting order, if it is one we may send a payer to (the same
    check as the redirect after "Pay now")."""
    url = payment.redirect_url
    if order.state != "pending" or payment.flow != PaymentFlow.redirect.value or not url:
        return None
    return url if provider_url_ok(settings, url) else None


@router.get("/account/orders/{order_id}/state")
async def order_state(order_id: str, page: Page, db: DB) -> Response:
    """What the order page polls (plain JavaScript) while it waits."""
    account_id = require(page)
    async with db.read() as s:
        order = await orders.own_order(s, account_id, _uuid(order_id))
    return JSONResponse({"state": order.state}, headers={"cache-control": "no-store"})


@router.post("/account/orders/{order_id}/check")
async def order_check(order_id: str, request: Request, page: Page, db: DB) -> Response:
    """Ask the provider now (a customer who paid and sees nothing yet)."""
    account_id = require(page)
    await form_of(request, page)
    oid = _uuid(order_id)
    async with db.read() as s:
        order = await orders.own_order(s, account_id, oid)
    if payments.customer_may_ask(order, utcnow()):
        with contextlib.suppress(payments.PaymentProviderUnavailable):
            await payments.check_order(
                db, _providers(request), oid, source="customer_check", capture=True
            )
    return redirect(f"/account/orders/{oid}")


@router.post("/account/orders/{order_id}/cancel")
async def order_cancel(order_id: str, request: Request, page: Page, db: DB) -> Response:
    account_id = require(page)
    await form_of(request, page)
    oid = _uuid(order_id)
    async with db.read() as s:
        await orders.own_order(s, account_id, oid)
    with contextlib.suppress(SimchargeError):
        await payments.cancel_order(db, _providers(request), oid)
    return redirect(f"/account/orders/{oid}")


# --- consumption records --------------------------------------------------------------------------


def _day(raw: str | None) -> date | None:
    """A filter's day, or none for one that is not a day of years 2000–2999 (as the back
    office): the day after 9999-12-31, which the period's end needs, cannot be built."""
    try:
        day = date.fromisoformat(raw) if raw else None
    except ValueError:
        return None
    return day if day is not None and 2000 <= day.year <= 2999 else None


def _cursor(raw_time: str | None, raw_id: str | None) -> Cursor | None:
    """Where a page starts (the "Older" link's `…before` and `…before_id`), or none for a pair
    that is not one (the first page)."""
    try:
        at, ident = datetime.fromisoformat(raw_time or ""), uuid.UUID(raw_id or "")
        at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # not a time, or off the calendar in UTC
        return None
    return (at, ident) if 2000 <= at.year <= 2999 else None


def _older(values: dict[str, str], name: str, cursor: Cursor | None) -> str | None:
    """The query of the next page after `cursor` (None: there is none), the filters kept."""
    if cursor is None:
        return None
    mine = (f"{name}before", f"{name}before_id")
    return urlencode({**{k: v for k, v in values.items() if v and k not in mine},
                      mine[0]: cursor[0].isoformat(), mine[1]: str(cursor[1])})


_MAY_BE_APPLIED = (OrderState.paid.value, OrderState.refunded.value)
"""The states in which an uncredited order's payment may be on the balance, as
`orders.service.applied_at` reads them (the order page)."""

RECORDS_PAGE = 200
"""Records on a page of `/account/records` (then "Older")."""
ORDERS_PAGE = 20
"""Orders on a page of `/account/records`' "My orders" (then "Older")."""


@dataclass
class _Records:
    lines: list[Line]
    rows: list[Any]
    values: dict[str, str]
    orders: list[Order]
    references: dict[uuid.UUID, str]
    older: Cursor | None = None
    older_orders: Cursor | None = None
    applied: frozenset[uuid.UUID] = frozenset()
    """The orders whose payment finance put on the line's balance: their receipt is linked at
    once, as on the order's page (`orders.applied_at`), not once the worker has numbered it."""
    credit_notes: dict[uuid.UUID, list[Refund]] = field(default_factory=dict)
    """The listed orders' refunds that have a credit note, linked beside the receipt."""


async def _records(
    request: Request, page: Visitor, db: DB, limit: int, *, paged: bool = False
) -> _Records:
    """The records of the filters (from the page `before` when `paged`), and the orders."""
    account_id = require(page)
    q = request.query_params
    values = {k: q.get(k, "") for k in ("line", "kind", "from", "to")}
    since, until = _day(values["from"]), _day(values["to"])
    before = _cursor(q.get("before"), q.get("before_id")) if paged else None
    orders_before = _cursor(q.get("orders_before"), q.get("orders_before_id"))
    async with db.read() as s:
        lines = list(await accounts.own_lines(s, account_id))
        chosen = [ln for ln in lines if str(ln.id) == values["line"]] if values["line"] else lines
        found = await records_page(
            s, chosen,
            kind=values["kind"] if values["kind"] in KINDS else None,
            since=datetime.combine(since, datetime.min.time(), UTC) if since else None,
            until=datetime.combine(until, datetime.min.time(), UTC) + timedelta(days=1)
            if until else None,
            before=before,
            limit=limit,
        )
        rows = found.records
        recent_orders = list(await orders.orders_of(
            s, account_id, limit=ORDERS_PAGE + 1,
            before=orders_before[0] if orders_before else None,
            before_id=orders_before[1] if orders_before else None,
        ))
        older_orders = None
        if len(recent_orders) > ORDERS_PAGE:
            del recent_orders[ORDERS_PAGE:]
            older_orders = (recent_orders[-1].created_at, recent_orders[-1].id)
        uncredited = [o.id for o in recent_orders
                      if o.fulfilled_at is None and o.state in _MAY_BE_APPLIED]
        applied = frozenset(await applied_orders(s, uncredited)) if uncredited else frozenset()
        notes = await credit_notes_of(s, [o.id for o in recent_orders]) if recent_orders else {}
        # A record names the order it came from: linked only when the order is the viewer's
        # (a top-up given to this line by someone else is the giver's order).
        named = {r.order_id for r in rows if r.order_id}
        mine: dict[uuid.UUID, str] = {
            order_id: reference
            for order_id, reference in await s.execute(
                select(Order.id, Order.reference).where(
                    Order.id.in_(named), Order.account_id == account_id
                )
            )
        } if named else {}
        rows = [r if r.order_id in mine or not r.order_id else replace(r, order_id=None)
                for r in rows]
    return _Records(
        lines, rows, values, recent_orders, mine, found.older, older_orders, applied, notes
    )


@router.get("/account/records")
async def records(request: Request, page: Page, db: DB) -> Response:
    found = await _records(request, page, db, RECORDS_PAGE, paged=True)
    q = request.query_params
    # Each list pages on its own: the other's page is kept.
    kept = {**found.values, **{k: q.get(k, "") for k in (
        "before", "before_id", "orders_before", "orders_before_id")}}
    return render(
        request, page, "records.html", lines=found.lines, rows=found.rows, values=found.values,
        kinds=KINDS, orders=found.orders, references=found.references, applied=found.applied,
        credit_notes=found.credit_notes,
        csv_query=urlencode({k: v for k, v in found.values.items() if v}),
        older=_older(kept, "", found.older),
        older_orders=_older(kept, "orders_", found.older_orders),
    )


RECORDS_CSV_HEADER = ["time_utc", "number", "kind", "amount_minor", "unit", "shown", "reference"]
"""The records CSV's columns. `amount_minor`: signed, in the smallest unit of `unit` (cents of
a currency; `VOICE_S`, `DATA_B`, `SMS` are their own), named as the back office's CSVs name
them: 500 is $5.00, which a plain `amount` let a reader take for dollars. `shown`: the amount
as the page writes it."""


@router.get("/account/records.csv")
async def records_csv(request: Request, page: Page, db: DB) -> Response:
    rows = (await _records(request, page, db, 5000)).rows
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RECORDS_CSV_HEADER)
    for r in rows:
        shown = units_text(page.language, r.amount, r.unit, page.locale)
        # Cells as the back office's reports write them (`csv_cell`: a formula or a line break
        # at the start neutralised). The number is E.164 as lines store it, written as is.
        writer.writerow(
            [r.at.isoformat(), r.msisdn,
             *(csv_cell(v) for v in (r.kind, r.amount, r.unit, shown, r.reference or ""))]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": 'attachment; filename="records.csv"',
            "cache-control": "no-store",
        },
    )


# --- adding a line (an eSIM bought from the operator) ------------------------------------------------


@router.get("/account/lines/add")
async def add_line_form(
    request: Request, page: Page, settings: AppSettings, sent: str = ""
) -> Response:
    """After step 1 the number comes back in a cookie (see `carry`), not in the URL."""
    require(page)
    msisdn = carried(request, settings, "attach") if sent else ""
    return render(
        request, page, "add_line.html", values={"msisdn": msisdn[:32]}, errors={}, error=None,
        sent=bool(sent),
    )


@router.post("/account/lines/add")
async def add_line(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    """Step 1: a code goes to the line by SMS. Step 2 (`code` given): the line is added."""
    require(page)
    form = await form_of(request, page)
    msisdn, code = form.get("msisdn", "").strip(), form.get("code", "").strip()
    account = page.account
    try:
        if not code:
            await limits.hit("codes", client.ip)
            sent = await accounts.count_line_attach(db, limits, account, msisdn, utcnow())
            await db.run(
                lambda s: accounts.request_line_attach(
                    s, settings, account, msisdn, client=client, now=utcnow(), limits=limits,
                    counted=sent,
                )
            )
            return carry(redirect("/account/lines/add?sent=1"), settings, "attach", msisdn)
        await limits.hit("verify", client.ip)
        checked = await codes.count_check(limits, account.id, CodePurpose.attach_line)
        result = await db.run(
            lambda s: accounts.confirm_line_attach(
                s, settings, account, msisdn, code, client=client, now=utcnow(), limits=limits,
                counted=checked,
            )
        )
        if isinstance(result, Refused):
            raise result.error
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return render(
            request, page, "add_line.html", status=exc.status, values={"msisdn": msisdn},
            headers=exc.headers, errors=errors, error=summary, sent=bool(code),
        )
    return drop_carried(redirect("/account?added=1"), settings, "attach")
