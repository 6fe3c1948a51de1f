"""Payment notifications that matched no order (`provider_events.outcome = 'unmatched'`): a
payment taken for a reference no order has (an order placed after the backup a restored
database was taken from, or another installation's), or refund or dispute news whose payment
never became known (`payments.webhooks`). Money may have been taken and nothing credited:
finance lists them — the "Matching no order" tab of the payments needing attention
(`/backoffice/attention/unmatched`) and `GET /api/v1/admin/provider-events` — and, once settled
by hand (refunded at the provider, or the payer credited by an adjustment), marks each settled
with a note: the outcome becomes `unmatched_settled` (the note, who and when are the audit
entry's, `provider_event.settle`) and it leaves the list.

What is shown is what the provider reported about the money — the provider, the event's type
and id, our reference and the provider's payment id, amount and currency — never the
notification's body or payload (a payer's e-mail, name or card)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import API_PREFIX, DB
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import require, require_web
from simcharge.backoffice.forms import in_place, origin
from simcharge.backoffice.refusal import NO_REFUSAL, FormError
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.web import back, render
from simcharge.catalog.schemas import PROVIDERS
from simcharge.errors import Conflict, NotFound, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.money import is_currency
from simcharge.kit.translations import N_
from simcharge.orders.models import ProviderEvent

router = APIRouter()
"""The admin API's routes and the page's, each with its full path (one router for the app)."""

UNMATCHED = "unmatched"
SETTLED = "unmatched_settled"
"""The outcome of an unmatched notification finance settled by hand."""
PAGE = 50
MAX_LIMIT = 500
MAX_OFFSET = 1_000_000
"""The most rows a page may skip: a number the database takes, far beyond what a person pages
through."""
NOTE_MAX = 500
HOME = "/backoffice/attention/unmatched"

# Reading them is `unmatched.read`: finance's and admins' (`attention.read` is every agent's);
# an API key's with `reports:read` (the books of money finance reconciles) or `orders:read` (a
# tool reconciling orders with the provider's settlements: they are the payments without an
# order). Settling is a person's judgement: no scope grants it.
Reader = Annotated[Actor, require(Permission.unmatched_read)]
Settler = Annotated[Actor, require(Permission.attention_resolve)]
PageReader = Annotated[Actor, require_web(Permission.unmatched_read)]
PageSettler = Annotated[Actor, require_web(Permission.attention_resolve)]


class NothingToSettle(Conflict):
    slug = "nothing-to-settle"
    title = N_("This notification is not waiting to be settled.")


@dataclass(frozen=True, slots=True)
class Unmatched:
    """One notification as finance sees it: what it reported about the money, nothing more."""

    id: uuid.UUID
    provider: str
    event_id: str
    event_type: str
    received_at: datetime
    outcome: str
    reported: str
    """`payment` (a status), `refund` or `dispute`: what the notification was about."""
    reference: str | None
    """Our reference the provider names (the order's, unknown here), if it names one."""
    payment_id: str | None
    """The provider's id of the payment (Stripe's payment intent, PayPal's capture…)."""
    amount: int | None
    """Minor units of `currency`, when reported."""
    currency: str | None

    @property
    def priced(self) -> bool:
        """Amount and currency reported, the currency one the page can write money in."""
        return self.amount is not None and self.currency is not None and is_currency(
            self.currency
        )


def _text(value: Any) -> str | None:
    return str(value)[:200] if value not in (None, "") else None


def unmatched_of(event: ProviderEvent) -> Unmatched:
    """What the event reported: its dispute, else its refund, else its payment status (the news
    is the most particular one; a refund's notification may carry the payment's status too)."""
    status, refund, dispute = event.status or {}, event.refund or {}, event.dispute or {}
    reported, facts = (
        ("dispute", dispute) if event.dispute else ("refund", refund) if event.refund
        else ("payment", status)
    )  # fmt: skip
    payment_id = facts.get("payment_id") or status.get("provider_ref") or status.get("payment_id")
    amount = facts.get("amount")
    currency = _text(facts.get("currency"))
    return Unmatched(
        id=event.id,
        provider=event.provider,
        event_id=event.event_id,
        event_type=event.event_type,
        received_at=event.received_at,
        outcome=event.outcome or "",
        reported=reported,
        reference=_text(facts.get("reference") or status.get("reference")),
        payment_id=_text(payment_id),
        amount=int(amount) if isinstance(amount, int) and not isinstance(amount, bool) else None,
        currency=currency.upper() if currency is not None else None,
    )


def provider_named(provider: str | None) -> str | None:
    """`provider` as asked: one of the payment providers, or none; 422 naming it otherwise."""
    if provider is None or provider == "":
        return None
    if provider not in PROVIDERS:
        raise ValidationFailed(
            N_("Name a payment provider: {providers}."),
            field="provider",
            providers=", ".join(PROVIDERS),
        )
    return provider


def _where(outcome: str, provider: str | None) -> list[Any]:
    """The outcome is written as a literal, as `ix_provider_events_unmatched`'s condition is
    (`outcome = 'unmatched' OR outcome = 'unmatched_settled'`): every plan can use that index,
    a prepared statement's generic one too. Only those two outcomes are listed."""
    if outcome not in (UNMATCHED, SETTLED):
        raise ValueError(outcome)
    where = [
        ProviderEvent.outcome == literal(outcome, literal_execute=True),
        ProviderEvent.processed_at.is_not(None),
    ]
    if provider is not None:
        where.append(ProviderEvent.provider == provider)
    return where


async def find_unmatched(
    s: AsyncSession,
    *,
    outcome: str = UNMATCHED,
    provider: str | None = None,
    limit: int = PAGE,
    offset: int = 0,
) -> tuple[int, list[Unmatched]]:
    """How many there are, and a page of them, newest first."""
    where = _where(outcome, provider)
    total = (await s.execute(select(func.count()).select_from(ProviderEvent).where(*where)))
    rows = await s.execute(
        select(ProviderEvent)
        .where(*where)
        .order_by(ProviderEvent.received_at.desc(), ProviderEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return int(total.scalar_one()), [unmatched_of(e) for e in rows.scalars()]


def _note(value: str) -> str:
    text = value.strip().replace("\x00", "")
    if not text:
        raise ValidationFailed(N_("Give a reason."), field="note")
    if len(text) > NOTE_MAX:
        raise ValidationFailed(N_("At most {max} characters."), field="note", max=NOTE_MAX)
    return text


async def settle(
    s: AsyncSession, actor: Actor, event_id: uuid.UUID, note: str, now: datetime
) -> ProviderEvent:
    """Finance settled an unmatched notification by hand (refunded at the provider, credited the
    payer by an adjustment…): its outcome becomes `unmatched_settled`, the note is the audit
    entry's. Once: a second settling is `409 nothing-to-settle`."""
    note = _note(note)
    event = await s.get(ProviderEvent, event_id, with_for_update=True)
    if event is None:
        raise NotFound(field="event_id")
    if event.outcome != UNMATCHED or event.processed_at is None:
        raise NothingToSettle(field="event_id")
    event.outcome = SETTLED
    await s.flush()
    seen = unmatched_of(event)
    await audit.record(
        s, actor, "provider_event.settle", target_type="provider_event", target_id=event.id,
        before={"outcome": UNMATCHED}, after={"outcome": SETTLED},
        details={
            "note": note, "provider": seen.provider, "event_id": seen.event_id,
            "reference": seen.reference, "payment_id": seen.payment_id,
            "amount": seen.amount, "currency": seen.currency,
        },
        now=now,
    )  # fmt: skip
    return event


# --- the admin API ----------------------------------------------------------------------------


class ProviderEventOut(BaseModel):
    id: uuid.UUID
    provider: str
    event_id: str = Field(description="The provider's id of the notification")
    event_type: str
    received_at: datetime
    outcome: str = Field(description="`unmatched`, or `unmatched_settled` once settled by hand")
    reported: Literal["payment", "refund", "dispute"]
    reference: str | None = Field(description="Our reference the provider names, if any")
    payment_id: str | None = Field(description="The provider's id of the payment, if any")
    amount: int | None = Field(description="Minor units of `currency`, when reported")
    currency: str | None


class SettleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(max_length=NOTE_MAX, description="How it was settled")


def _out(row: Unmatched) -> ProviderEventOut:
    return ProviderEventOut.model_validate(row, from_attributes=True)


@router.get(
    f"{API_PREFIX}/admin/provider-events",
    response_model=list[ProviderEventOut],
    tags=["admin"],
    summary="Payment notifications that matched no order, newest first",
)
async def list_provider_events(
    actor: Reader,
    db: DB,
    response: Response,
    outcome: Annotated[
        Literal["unmatched", "unmatched_settled"],
        Query(description="`unmatched` (waiting to be settled) or `unmatched_settled`"),
    ] = "unmatched",
    provider: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[ProviderEventOut]:
    """Notifications kept with the outcome `unmatched` (a payment taken for a reference no order
    has; refund or dispute news whose payment never became known), or those settled by hand
    (`outcome=unmatched_settled`), newest first: what each reported about the money, never the
    payer's data. A page (`limit` 1–500, `offset` 0–1,000,000; `X-Total-Count` counts them
    all); `provider` narrows to one. Bad input: 422 naming `outcome`, `provider`, `limit` or
    `offset`. Audited as `provider_event.list`."""
    named = provider_named(provider)
    async with db.read() as s:
        total, rows = await find_unmatched(
            s, outcome=outcome, provider=named, limit=limit, offset=offset
        )
    await audit.record_read(
        db, actor, "provider_event.list",
        details={"outcome": outcome, "provider": named, "found": len(rows)},
    )  # fmt: skip
    response.headers["X-Total-Count"] = str(total)
    return [_out(r) for r in rows]


@router.post(
    f"{API_PREFIX}/admin/provider-events/{{event_id}}/settle",
    response_model=ProviderEventOut,
    tags=["admin"],
    summary="Mark an unmatched payment notification as settled by hand, with a note",
)
async def settle_provider_event(
    event_id: uuid.UUID, body: SettleIn, actor: Settler, db: DB
) -> ProviderEventOut:
    """A person only (no API-key scope grants it). 404 for no such notification, `409
    nothing-to-settle` for one not unmatched (or settled already), 422 naming `note`."""
    event = await db.run(lambda s: settle(s, actor, event_id, body.note, utcnow()))
    return _out(unmatched_of(event))


# --- the page ---------------------------------------------------------------------------------


@router.get(HOME, response_class=HTMLResponse, include_in_schema=False)
async def unmatched_page(
    request: Request,
    actor: PageReader,
    provider: Annotated[str | None, Query(max_length=16)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> HTMLResponse:
    return await _page(request, actor, provider or None, offset)


async def _page(
    request: Request,
    actor: Actor,
    provider: str | None,
    offset: int = 0,
    refused: FormError = NO_REFUSAL,
) -> HTMLResponse:
    db = request.app.state.db
    named = provider if provider in PROVIDERS else None
    async with db.read() as s:
        total, rows = await find_unmatched(s, provider=named, limit=PAGE, offset=offset)
    await audit.record_read(
        db, actor, "provider_event.list",
        details={"outcome": UNMATCHED, "provider": named, "found": len(rows)},
    )  # fmt: skip

    def at(to: int) -> str:
        return f"{HOME}?{urlencode({'provider': named or '', 'offset': to})}"

    return render(
        request,
        "attention_unmatched.html",
        actor,
        status=refused.status if refused.form else 200,
        form_error=refused,
        rows=rows,
        total=total,
        provider=named or "",
        providers=PROVIDERS,
        first=offset + 1 if rows else 0,
        last=offset + len(rows),
        newer=at(max(offset - PAGE, 0)) if offset > 0 else None,
        older=at(offset + PAGE) if offset + PAGE < total else None,
    )


@router.post("/backoffice/provider-events/{event_id}/settle", response_model=None,
             include_in_schema=False)  # fmt: skip
async def settle_page(
    request: Request,
    event_id: uuid.UUID,
    db: DB,
    actor: PageSettler,
    note: Annotated[str, Form(max_length=NOTE_MAX)] = "",
) -> Response:
    async def act() -> Response:
        await db.run(lambda s: settle(s, actor, event_id, note, utcnow()))
        return back(HOME, "resolved")

    async def redraw(refused: FormError) -> HTMLResponse:
        return await _page(request, actor, None, 0, refused)

    return await in_place(
        request, actor, act, form=f"settle-{event_id}", values={"note": note}, redraw=redraw
    )


@origin(HOME, Permission.unmatched_read)
async def _unmatched_again(
    request: Request, actor: Actor, at: dict[str, str], refused: FormError
) -> HTMLResponse:
    return await _page(request, actor, None, 0, refused)
