"""`/api/v1/admin/…`: the back office's actions for the operator's own tools — a staff bearer
token (`POST /admin/session`, password + authenticator code) or an API key with scopes."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.api.deps import API_PREFIX, DB, AppSettings
from simcharge.api.idempotency import IdempotencyKeyHeader
from simcharge.auth.apikeys import (
    KeyView,
    asked_expiry,
    count_api_keys,
    create_request_hash,
    create_request_key,
    key_view,
    key_views,
    overlap_named,
    staff_create_api_key,
    staff_revoke_api_key,
    staff_rotate_api_key,
    view_of,
)
from simcharge.auth.deps import Limits
from simcharge.backoffice import audit, customers, money, reports
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.catalog import (
    CatalogEntryNotFound,
    export_catalog,
    save_entry,
    tariff_versions,
)
from simcharge.backoffice.customers import (
    ADJUSTMENTS_SHOWN,
    MAX_RESULTS,
    CustomerNotFound,
    LineFacts,
    LineNotFound,
    UsageFacts,
    checked_query,
    customer_view,
    search_facts,
    search_matches,
    usage_filter,
    usage_of_line,
)
from simcharge.backoffice.deps import api_actor, require
from simcharge.backoffice.models import StaffSession, StaffUser
from simcharge.backoffice.orders import (
    OrderPanel,
    attention_orders,
    check_with_provider,
    order_panel,
)
from simcharge.backoffice.passkeys import (
    member_passkeys,
    passkey_counts,
    remove_all_passkeys,
    remove_member_passkey,
)
from simcharge.backoffice.roles import Permission, permissions_of
from simcharge.backoffice.schemas import (
    AdjustmentIn,
    AdjustmentOut,
    AuditEntryOut,
    CheckOut,
    CustomerFoundOut,
    CustomerOut,
    CustomerViewOut,
    DecisionIn,
    NoteIn,
    PasskeysRemovedOut,
    SearchMatchOut,
    StaffChangeIn,
    StaffLoginIn,
    StaffOut,
    StaffPasskeyOut,
    StaffPasswordIn,
    StaffPasswordResetIn,
    StaffTokenOut,
    StateOut,
    TakenOut,
    TariffVersionOut,
    UsageRecordOut,
)
from simcharge.backoffice.screens_tickets import staff_names
from simcharge.backoffice.staff import (
    StaffLoginFailed,
    change_facts,
    change_own_password,
    change_staff,
    end_own_sessions,
    end_session,
    failed_sign_in_name,
    reset_staff_password,
    sign_in,
)
from simcharge.errors import FieldError, Forbidden, Refused, SimchargeError, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.schemas import Instant
from simcharge.kit.translations import N_
from simcharge.lifecycle.service import Policy
from simcharge.lines.models import Line
from simcharge.orders.models import Order
from simcharge.tickets import service as tickets
from simcharge.tickets.endpoints import ticket_out
from simcharge.tickets.models import Ticket, TicketPriority, TicketStatus
from simcharge.tickets.schemas import (
    StaffMessageOut,
    StaffReplyIn,
    StaffTicketDetailOut,
    StaffTicketOut,
    TicketUpdateIn,
)

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])
FirstDay = Annotated[
    str | None, Query(alias="from", max_length=10, description="First day, e.g. 2026-11-01")
]
LastDay = Annotated[
    str | None, Query(alias="to", max_length=10, description="Last day (UTC), inclusive")
]
AuditReader = Annotated[Actor, require(Permission.audit_read)]
ANY_ROUTE_QUERY = frozenset({"lang"})
"""Query parameters every API route reads (`api.deps.request_language`)."""


def refuse_unknown_query(request: Request) -> None:
    """A query parameter the route does not declare is refused, `422 validation-error` naming
    it (and listing those it takes): a filter misspelt (`?actor=` for `?who=`) was ignored, and
    the answer — the whole unfiltered list — looked like the filtered one. The route's own
    parameters are read from its signature, so a filter added later is known here too. Put it
    after the route's credential (`Annotated[None, Depends(refuse_unknown_query)]`): who may not
    call the route is refused as such first."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = set(_query_names(dependant))
    for name in request.query_params:
        if name not in known and name not in ANY_ROUTE_QUERY:
            raise ValidationFailed(
                errors=[FieldError(name, N_("Unknown parameter: use one of {known}."),
                                   {"known": ", ".join(sorted(known))})]
            )  # fmt: skip


KnownQueryOnly = Annotated[None, Depends(refuse_unknown_query)]


def _query_names(dependant: Dependant) -> list[str]:
    """The query parameters a route reads: its own and its dependencies'."""
    names = [p.alias for p in dependant.query_params]
    for sub in dependant.dependencies:
        names += _query_names(sub)
    return names


@router.post("/session", response_model=StaffTokenOut, summary="Staff sign-in (token)")
async def staff_session(
    body: StaffLoginIn, request: Request, db: DB, settings: AppSettings, limits: Limits
) -> StaffTokenOut:
    """Password and authenticator code at once (a staff member enrols at `/backoffice` first).
    One address gets 30 tries a minute and 300 an hour, counted with the page's password steps
    (`429 too-many-attempts`); beside it each staff member's lockout."""
    ip = request.client.host if request.client else None
    ua = request.headers.get("user-agent")
    now = utcnow()
    await limits.hit("login", ip)

    async def attempt(s: AsyncSession) -> StaffTokenOut | None:
        found = await sign_in(
            s,
            settings,
            username=body.username,
            password=body.password,
            code=body.code,
            ip=ip,
            user_agent=ua,
            now=now,
        )
        if found is None:
            await audit.record(
                s,
                Actor(
                    name=(await failed_sign_in_name(s, body.username))[:70],
                    permissions=frozenset(),
                    ip=ip,
                    user_agent=ua,
                ),
                "staff.login_failed",
                details={"via": "api"},
            )
            return None
        staff, issued = found
        actor = Actor(
            name=f"staff:{staff.username}",
            permissions=frozenset(),
            staff=staff,
            ip=ip,
            user_agent=ua,
        )
        await audit.record(
            s, actor, "staff.login", target_type="staff", target_id=staff.id, details={"via": "api"}
        )
        return StaffTokenOut(
            token=issued.token,
            expires_at=issued.row.expires_at,
            username=staff.username,
            role=staff.role,
            permissions=sorted(p.value for p in permissions_of(staff.role)),
        )

    out = await db.run(attempt)
    if out is None:
        raise StaffLoginFailed()
    return out


@router.delete("/session", status_code=204, summary="End this staff token")
async def end_staff_session(
    db: DB,
    actor: Annotated[Actor, Depends(api_actor)],
    everywhere: Annotated[
        bool,
        Query(description="End every session of this staff member's, browsers and tokens"),
    ] = False,
) -> None:
    if actor.session_id is None or actor.staff_id is None:
        return
    sid, staff_id = actor.session_id, actor.staff_id

    async def end(s: AsyncSession) -> None:
        details: dict[str, object] = {"via": "api"}
        if everywhere:
            ended = await end_own_sessions(s, staff_id, utcnow())
            details.update(everywhere=True, ended=len(ended))
        else:
            await end_session(s, sid, utcnow())
        await audit.record(
            s,
            actor,
            "staff.logout",
            target_type="staff",
            target_id=staff_id,
            details=details,
        )

    await db.run(end)


@router.post(
    "/password",
    response_model=StaffTokenOut,
    summary="Change my password (every other session ends; this token is replaced)",
)
async def change_my_password(
    body: StaffPasswordIn,
    db: DB,
    settings: AppSettings,
    limits: Limits,
    actor: Annotated[Actor, Depends(api_actor)],
) -> StaffTokenOut:
    """With a staff token (an API key has no password: `403 forbidden`). The current password
    is required: a wrong one is `422 staff-password-wrong` and counts as a failed sign-in (the
    address's limit, then the member's lockout: `429 too-many-attempts`); the new one follows
    the customers' policy (`422 validation-error`, field `new_password`). Every other session of
    the member's ends; the answer carries this session's new token (the one used no longer
    works). Audited as `staff.password_changed`."""
    if actor.session_id is None or actor.staff_id is None:
        raise Forbidden()
    sid, staff_id = actor.session_id, actor.staff_id
    await limits.hit("login", actor.ip)

    async def run(s: AsyncSession) -> StaffTokenOut | Refused:
        staff = await s.get(StaffUser, staff_id, with_for_update=True)
        row = await s.get(StaffSession, sid, with_for_update=True)
        assert staff is not None
        assert row is not None
        done = await change_own_password(
            s, settings, actor, row, staff,
            current=body.current_password, new=body.new_password, now=utcnow(),
        )  # fmt: skip
        if isinstance(done, Refused):
            return done
        return StaffTokenOut(
            token=done.token,
            expires_at=row.expires_at,
            username=staff.username,
            role=staff.role,
            permissions=sorted(p.value for p in permissions_of(staff.role)),
        )

    out = await db.run(run)
    if isinstance(out, Refused):
        raise out.error
    return out


@router.get("/audit", response_model=list[AuditEntryOut], summary="The audit log, newest first")
async def audit_log(
    actor: AuditReader,
    _known: KnownQueryOnly,
    db: DB,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    who: Annotated[str | None, Query(max_length=80, description="`staff:<name>`…")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    start: Annotated[
        str | None, Query(alias="from", max_length=10, description="A day, UTC: `2026-12-01`")
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", max_length=10, description="A day, UTC, inclusive")
    ] = None,
    before: Annotated[
        Instant | None, Query(description="With `before_id`: the last entry of the page before")
    ] = None,
    before_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditEntryOut]:
    """The back office's page's filters: `422 validation-error` on `from`/`to` for a day that
    is not one or a period that ends before it starts, and naming any parameter that is none of
    these (`actor` for `who`: the whole log, unfiltered, looked like an answer). The next page:
    `before`/`before_id` of the last entry."""
    period = usage_filter(None, start or None, end or None)
    cursor = (before, before_id) if before is not None and before_id is not None else None
    async with db.read() as s:
        rows = await audit.entries(
            s,
            target_type=target_type,
            target_id=target_id,
            actor=who,
            action=action,
            since=period.since,
            until=period.until,
            before=cursor,
            limit=limit,
        )
    return [AuditEntryOut.model_validate(r) for r in rows]


# --- tickets ------------------------------------------------------------------------------

TicketWorker = Annotated[Actor, require(Permission.tickets_work)]
OrderChecker = Annotated[Actor, require(Permission.orders_check)]


async def _staff_ticket(s: AsyncSession, ticket: Ticket, *, with_messages: bool) -> Any:
    names = await staff_names(s)
    base = StaffTicketOut(
        **ticket_out(ticket).model_dump(),
        account_id=ticket.account_id,
        priority=ticket.priority,
        assignee=names.get(ticket.assignee_id) if ticket.assignee_id else None,
        redacted_at=ticket.redacted_at,
    )
    if not with_messages:
        return base
    messages = await tickets.messages_of(s, ticket.id, internal=True)
    return StaffTicketDetailOut(
        **base.model_dump(),
        messages=[
            StaffMessageOut(
                id=m.id,
                author=m.author,
                body=m.body,
                created_at=m.created_at,
                internal=m.internal,
                staff=names.get(m.staff_id) if m.staff_id else None,
            )
            for m in messages
        ],
    )


@router.get(
    "/tickets",
    response_model=list[StaffTicketOut],
    summary="Tickets, latest first, or in the queue's order (`order=waiting`)",
)
async def list_tickets(
    actor: TicketWorker,
    _known: KnownQueryOnly,
    db: DB,
    status: TicketStatus | None = None,
    priority: TicketPriority | None = None,
    assignee: Annotated[str | None, Query(max_length=64, description="A staff username")] = None,
    account_id: uuid.UUID | None = None,
    order_id: uuid.UUID | None = None,
    order: Annotated[
        tickets.QueueOrder,
        Query(description="`latest` (activity), or `waiting`: the back office's queue order"),
    ] = tickets.QueueOrder.latest,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[
        Instant | None,
        Query(description="The next page: the `updated_at` of the last ticket seen…"),
    ] = None,
    before_id: Annotated[
        uuid.UUID | None, Query(description="… and its `id` (tickets updated at the same time)")
    ] = None,
    after_priority: Annotated[
        TicketPriority | None,
        Query(description="`order=waiting`, a page that ended on an `open` ticket: its priority…"),
    ] = None,
    after: Annotated[Instant | None, Query(description="… its `updated_at`…")] = None,
    after_id: Annotated[uuid.UUID | None, Query(description="… and its `id`")] = None,
) -> list[StaffTicketOut]:
    """Latest activity first, `limit` at a time: a full page is followed by the next one with
    `before` and `before_id` of its last ticket.

    `order=waiting` is the queue page's order: the tickets waiting for customer service
    (`open`) first — urgent, high, normal, low, each the longest waiting first — then all the
    others, latest activity first. Its next page: after a page whose last ticket is `open`,
    `after_priority`, `after` and `after_id` of that ticket; after one whose last ticket is
    not, `before` and `before_id` as in `latest`. An order that is neither is `422
    validation-error` naming `order`; `after…` without `order=waiting`, or not all three, is
    one naming the parameter at fault."""
    waited = _waiting_after(order, after_priority, after, after_id)
    async with db.read() as s:
        assignee_id = None
        if assignee:
            names = {v: k for k, v in (await staff_names(s)).items()}
            assignee_id = names.get(assignee.casefold(), uuid.UUID(int=0))
        rows = await tickets.find_tickets(
            s,
            tickets.TicketFilter(
                status=status,
                priority=priority,
                assignee_id=assignee_id,
                account_id=account_id,
                order_id=order_id,
            ),
            limit=limit,
            before=before,
            before_id=before_id,
            order=order,
            after=waited,
        )
        found = [await _staff_ticket(s, t, with_messages=False) for t in rows]
    filters = audit.read_details(
        len(found),
        status=status,
        priority=priority,
        assignee=assignee,
        account_id=account_id,
        order_id=order_id,
        order=order.value if order is not tickets.QueueOrder.latest else None,
    )
    await audit.record_read(db, actor, "ticket.list", details=filters)
    return found


def _waiting_after(
    order: tickets.QueueOrder,
    priority: TicketPriority | None,
    at: datetime | None,
    ticket_id: uuid.UUID | None,
) -> tickets.WaitingAfter | None:
    """Where a page of `order=waiting` ended among the open tickets — all three parts, and only
    in that order: a part missing would restart the queue from its top, and in `latest` order
    the cursor would be ignored, each answering a page that looks like the next one."""
    given = {"after_priority": priority, "after": at, "after_id": ticket_id}
    if not any(v is not None for v in given.values()):
        return None
    if order is not tickets.QueueOrder.waiting:
        name = next(k for k, v in given.items() if v is not None)
        raise ValidationFailed(N_("Only with order=waiting."), field=name)
    if priority is None or at is None or ticket_id is None:
        missing = next(k for k, v in given.items() if v is None)
        raise ValidationFailed(
            N_("Give after_priority, after and after_id together."), field=missing
        )
    return tickets.WaitingAfter(priority.value, at, ticket_id)


@router.get("/tickets/{ticket_id}", response_model=StaffTicketDetailOut, summary="One ticket")
async def get_ticket(ticket_id: uuid.UUID, actor: TicketWorker, db: DB) -> StaffTicketDetailOut:
    async with db.read() as s:
        out: StaffTicketDetailOut = await _staff_ticket(
            s, await tickets.get_ticket(s, ticket_id), with_messages=True
        )
    await audit.record_read(db, actor, "ticket.view", target_type="ticket", target_id=ticket_id)
    return out


@router.post(
    "/tickets/{ticket_id}/messages",
    response_model=StaffTicketDetailOut,
    status_code=201,
    summary="Reply (the customer is told) or add an internal note",
)
async def reply_ticket(
    ticket_id: uuid.UUID,
    body: StaffReplyIn,
    actor: TicketWorker,
    db: DB,
    idempotency_key: IdempotencyKeyHeader = None,
) -> StaffTicketDetailOut:
    """With an `Idempotency-Key`, a retry answers the ticket as the first reply left it (one
    message, one notice); the key with another ticket, text, `internal` or `status` is
    `422 idempotency-key-reused`."""

    async def run(s: AsyncSession) -> StaffTicketDetailOut:
        await tickets.staff_reply(
            s,
            actor,
            ticket_id,
            body.body,
            internal=body.internal,
            status=body.status,
            idempotency_key=idempotency_key,
            now=utcnow(),
        )
        out: StaffTicketDetailOut = await _staff_ticket(
            s, await tickets.get_ticket(s, ticket_id), with_messages=True
        )
        return out

    return await db.run(run)


@router.patch(
    "/tickets/{ticket_id}", response_model=StaffTicketOut, summary="Status, priority, assignee"
)
async def update_ticket(
    ticket_id: uuid.UUID, body: TicketUpdateIn, actor: TicketWorker, db: DB
) -> StaffTicketOut:
    async def run(s: AsyncSession) -> StaffTicketOut:
        ticket = await tickets.update_ticket(
            s,
            actor,
            ticket_id,
            status=body.status,
            priority=body.priority,
            assignee=body.assignee,
            now=utcnow(),
        )
        out: StaffTicketOut = await _staff_ticket(s, ticket, with_messages=False)
        return out

    return await db.run(run)


# --- orders -------------------------------------------------------------------------------


@router.post(
    "/orders/{order_id}/check",
    response_model=CheckOut,
    summary="Ask the provider where the payment stands (credits it if paid)",
)
async def check_order_now(
    order_id: uuid.UUID, request: Request, actor: OrderChecker, db: DB
) -> CheckOut:
    outcome = await check_with_provider(db, request.app.state.providers, actor, order_id)
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        return CheckOut(outcome=outcome.value, state=order.state, attention=order.attention)


# --- customers ----------------------------------------------------------------------------

CustomerReader = Annotated[Actor, require(Permission.customers_read)]
Adjuster = Annotated[Actor, require(Permission.adjustments_request)]
Approver = Annotated[Actor, require(Permission.adjustments_approve)]
Unlocker = Annotated[Actor, require(Permission.accounts_unlock)]
Unfreezer = Annotated[Actor, require(Permission.lines_unfreeze)]
Resender = Annotated[Actor, require(Permission.receipts_resend)]
AttentionReader = Annotated[Actor, require(Permission.attention_read)]
Resolver = Annotated[Actor, require(Permission.attention_resolve)]
TRUNCATED = "X-Truncated"
"""On a customer search: `true` when more customers match than are listed."""


class UnlockNeedsAPerson(Forbidden):
    slug = "unlock-needs-a-person"
    title = N_(
        "Unlocking an account is a staff member's decision (the customer may have locked it "
        "themselves, fearing someone else uses it): an API key has no one behind it."
    )


class ResumeNeedsAPerson(Forbidden):
    slug = "resume-needs-a-person"
    title = N_(
        "Resuming a suspended line is a staff member's decision (its SIM was reported lost or "
        "stolen): an API key has no one behind it."
    )


def _row(obj: Any, *fields: str) -> dict[str, Any]:
    out = {}
    for f in fields:
        value = getattr(obj, f)
        out[f] = str(value) if isinstance(value, uuid.UUID) else value
    return out


def usage_out(u: UsageFacts) -> UsageRecordOut:
    r = u.record
    return UsageRecordOut(
        **_row(
            r,
            "id",
            "source",
            "external_id",
            "service",
            "country",
            "zone",
            "quantity",
            "rated",
            "from_buckets",
            "from_wallet",
            "charge",
            "currency",
            "unbilled",
            "started_at",
            "created_at",
        ),
        taken=[TakenOut(source=t.source, account_id=t.account_id, amount=t.amount, unit=t.unit)
               for t in u.taken],
        tariff=TariffVersionOut.model_validate(u.tariff) if u.tariff else None,
    )


def _panel(p: OrderPanel) -> dict[str, Any]:
    o = p.order
    return {
        **_row(
            o,
            "id",
            "reference",
            "state",
            "msisdn",
            "plan_code",
            "method_code",
            "provider",
            "currency",
            "price",
            "fee",
            "total",
            "paid_amount",
            "refunded_amount",
            "receipt_number",
            "attention",
            "attention_note",
            "created_at",
            "paid_at",
            "account_id",
        ),
        "payment": _row(p.payment, "state", "provider_ref", "payment_id", "checks", "last_error")
        if p.payment
        else None,
        "events": [
            _row(e, "event_id", "event_type", "received_at", "outcome", "status") for e in p.events
        ],
        "refunds": [
            _row(r, "reference", "amount", "currency", "state", "requested_by", "reason")
            for r in p.refunds
        ],
        # What the panel's refund form offers: paid, less refunds done or on their way, less
        # what was put on the balance — in the currency paid.
        "refundable": p.refundable,
        "refundable_currency": o.paid_currency or o.currency,
    }


def _balances_out(f: LineFacts) -> dict[str, Any]:
    """A line's balances, each bucket with `credited`: what was added to it after its grant (an
    adjustment, a transfer from another line), so `remaining` may exceed `initial`."""
    out = f.balances.model_dump(mode="json")
    for unit in out["units"]:
        for bucket in unit["buckets"]:
            bucket["credited"] = f.credited.get(uuid.UUID(bucket["id"]), 0)
    return out


@router.get(
    "/customers",
    response_model=list[CustomerFoundOut],
    summary="Find customers",
    responses={
        200: {
            "headers": {
                TRUNCATED: {
                    "description": f"`true` when more than {MAX_RESULTS} customers match "
                    "(those listed are the first): narrow the search; else `false`",
                    "schema": {"type": "string", "enum": ["true", "false"]},
                }
            }
        }
    },
)
async def find_customers(
    actor: CustomerReader,
    _known: KnownQueryOnly,
    db: DB,
    settings: AppSettings,
    response: Response,
    q: Annotated[
        str,
        Query(
            max_length=200,
            description="Name, e-mail, phone, "
            "MSISDN, ICCID, order id or reference, receipt number, ticket "
            "number, provider reference: at least 2 characters, or one Chinese character",
        ),
    ],
) -> list[CustomerFoundOut]:
    """Each customer found, with what the query `matched` of theirs besides a name or contact
    (an order, a ticket, a line), as the search page shows it: first those the query names
    exactly, then the others, by username, at most 50 — `X-Truncated: true` when more match.
    A query too short is `422 validation-error` naming `q` (nothing searched or audited)."""
    checked_query(q)
    async with db.read() as s:
        search = await customers.find_customers(s, q, region=settings.phone_region)
        found = search.accounts
        matched: dict[uuid.UUID, list[SearchMatchOut]] = {a.id: [] for a in found}
        for m in await search_matches(s, q, region=settings.phone_region):
            if m.account_id in matched:  # only of the accounts listed (those the audit names)
                matched[m.account_id].append(SearchMatchOut(kind=m.kind, id=m.id, label=m.label))
    await audit.record_read(db, actor, "customer.search", details=search_facts(q, found))
    response.headers[TRUNCATED] = "true" if search.more else "false"
    return [
        CustomerFoundOut(**CustomerOut.model_validate(a).model_dump(), matched=matched[a.id])
        for a in found
    ]


class CustomerFullViewOut(CustomerViewOut):
    adjustments: list[dict[str, Any]] = Field(
        description=f"The latest {ADJUSTMENTS_SHOWN}, latest first; all of them: "
        "`GET /admin/customers/{account_id}/adjustments`"
    )
    adjustments_total: int = Field(description="How many adjustments the customer's lines have")


@router.get(
    "/customers/{account_id}",
    response_model=CustomerFullViewOut,
    summary="A customer's full view",
)
async def get_customer(
    account_id: uuid.UUID, actor: CustomerReader, db: DB
) -> CustomerFullViewOut:
    """The latest 50 tickets and adjustments (`tickets_total`, `adjustments_total` say how many
    there are; each has a list of its own)."""
    async with db.read() as s:
        v = await customer_view(s, account_id)
    await audit.record_read(db, actor, "customer.view", target_type="account", target_id=account_id)
    return CustomerFullViewOut(
        account=CustomerOut.model_validate(v.account),
        lines=[
            {
                **_row(f.line, "id", "msisdn", "iccid", "state", "currency", "validity_end"),
                "balances": _balances_out(f),
                "usage": [usage_out(u).model_dump(mode="json") for u in f.usage],
                "transfers": [
                    _row(
                        t,
                        "id",
                        "code",
                        "amount",
                        "unit",
                        "kind",
                        "debit_account_id",
                        "credit_account_id",
                        "reference",
                        "created_at",
                    )
                    for t in f.transfers
                ],
            }
            for f in v.lines
        ],
        orders=[_panel(p) for p in v.orders],
        sessions=[
            _row(
                x,
                "id",
                "created_at",
                "last_seen_at",
                "ip",
                "user_agent",
                "revoked_at",
                "revoked_reason",
            )
            for x in v.sessions
        ],
        security_events=[
            _row(e, "kind", "success", "ip", "user_agent", "created_at") for e in v.security_events
        ],
        notices=[_row(n, "template", "created_at", "read_at") for n in v.notices],
        messages=[
            _row(m, "channel", "template", "target", "subject", "status", "created_at")
            for m in v.messages
        ],
        tickets=[
            _row(t, "id", "number", "subject", "status", "priority", "updated_at")
            for t in v.tickets
        ],
        tickets_total=v.tickets_total,
        adjustments=[
            AdjustmentOut.model_validate(a).model_dump(mode="json") for a in v.adjustments
        ],
        adjustments_total=v.adjustments_total,
    )


@router.get(
    "/customers/{account_id}/adjustments",
    response_model=list[AdjustmentOut],
    summary="The adjustments to a customer's lines, latest first",
)
async def list_customer_adjustments(
    account_id: uuid.UUID,
    actor: CustomerReader,
    _known: KnownQueryOnly,
    db: DB,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[
        Instant | None,
        Query(description="The next page: the `created_at` of the last adjustment seen…"),
    ] = None,
    before_id: Annotated[
        uuid.UUID | None, Query(description="… and its `id` (adjustments made at the same time)")
    ] = None,
) -> list[AdjustmentOut]:
    """All of them, `limit` at a time (the customer's view lists the latest 50): a full page is
    followed by the next one with `before` and `before_id` of its last adjustment. No such
    customer: `404 customer-not-found`. Audited as `adjustment.list`."""
    async with db.read() as s:
        if await s.get(Account, account_id) is None:
            raise CustomerNotFound(field="account_id")
        rows = await customers.adjustments_of(
            s, account_id, limit=limit, before=before, before_id=before_id
        )
    await audit.record_read(
        db, actor, "adjustment.list", target_type="account", target_id=account_id,
        details={"found": len(rows)},
    )  # fmt: skip
    return [AdjustmentOut.model_validate(a) for a in rows]


@router.get(
    "/lines/{line_id}/usage",
    response_model=list[UsageRecordOut],
    summary="A line's usage records, latest first: what each took from where, at which tariff",
)
async def get_line_usage(
    line_id: uuid.UUID,
    actor: CustomerReader,
    _known: KnownQueryOnly,
    db: DB,
    service: Literal["voice", "data", "sms"] | None = None,
    start: FirstDay = None,
    end: LastDay = None,
    before: Annotated[
        Instant | None,
        Query(description="The next page: the `started_at` of the last record seen…"),
    ] = None,
    before_id: Annotated[
        uuid.UUID | None, Query(description="… and its `id` (records started at the same time)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[UsageRecordOut]:
    where = usage_filter(service, start, end)
    cursor = (before, before_id) if before is not None else None
    async with db.read() as s:
        _, found = await usage_of_line(s, line_id, where=where, before=cursor, limit=limit)
    await audit.record_read(
        db,
        actor,
        "usage.list",
        target_type="line",
        target_id=line_id,
        details={"service": service, "from": start, "to": end, "found": len(found)},
    )
    return [usage_out(u) for u in found]


@router.post(
    "/customers/{account_id}/unlock", response_model=StateOut, summary="Unlock a locked account"
)
async def unlock_customer(
    account_id: uuid.UUID, actor: Unlocker, db: DB, request: Request
) -> StateOut:
    """A staff member's act only: an API key (`accounts:write`) is refused `403
    unlock-needs-a-person`, audited as `access.denied` — a customer who locked their account
    ("lock my account") unlocks it with a code to a verified contact, or a person who spoke
    with them does; a tool unlocking it would undo their protection unseen. An unknown account
    is `404 customer-not-found` to anyone."""
    await _a_person_only(
        db, actor, request, Account, account_id, "account", Permission.accounts_unlock,
        missing=CustomerNotFound(field="account_id"),
        refused=UnlockNeedsAPerson(field="account_id"),
    )  # fmt: skip
    account = await db.run(lambda s: money.unlock(s, actor, account_id, utcnow()))
    return StateOut(id=account.id, state=account.status)


async def _a_person_only(
    db: DB,
    actor: Actor,
    request: Request,
    model: type[Any],
    target_id: uuid.UUID,
    target_type: str,
    permission: Permission,
    *,
    missing: SimchargeError,
    refused: SimchargeError,
) -> None:
    """An act a staff member must do, not an API key (unlocking an account, resuming a line):
    for a key, `missing` when the target does not exist (as for anyone), else the refusal
    audited as `access.denied` and `refused` raised; nothing changed either way."""
    if actor.staff_id is not None:
        return
    async with db.read() as s:
        if await s.get(model, target_id) is None:
            raise missing
    path = request.url.path
    await db.run(
        lambda s: audit.record(
            s, actor, "access.denied", target_type=target_type, target_id=target_id,
            details={"permission": permission.value, "path": path, "reason": "a person only"},
        )
    )  # fmt: skip
    raise refused


@router.post("/lines/{line_id}/unfreeze", response_model=StateOut, summary="Unfreeze a line")
async def unfreeze_line(
    line_id: uuid.UUID, actor: Unfreezer, db: DB, settings: AppSettings
) -> StateOut:
    policy = Policy.of(settings)
    line = await db.run(lambda s: money.unfreeze_line(s, actor, line_id, utcnow(), policy))
    return StateOut(id=line.id, state=line.state)


class LineStateReasonIn(BaseModel):
    """Why staff suspend or resume a line: required, 1–500 characters (blank is refused)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(max_length=money.REASON_MAX)


@router.post(
    "/lines/{line_id}/suspend",
    response_model=StateOut,
    summary="Suspend a line (a SIM lost or stolen) until staff resume it",
)
async def suspend_line(
    line_id: uuid.UUID, body: LineStateReasonIn, actor: Unfreezer, db: DB
) -> StateOut:
    """A line in service (active, in grace or frozen) becomes `suspended`: denied service, its
    top-ups credited without bringing it back, left alone by the lifecycle sweep. 409
    `line-not-in-service` for a line in stock or terminated, `line-already-suspended` for one
    suspended; 422 field `reason` without a reason. Audited (`line.suspend`)."""
    line = await db.run(
        lambda s: money.suspend_line(s, actor, line_id, body.reason, utcnow())
    )
    return StateOut(id=line.id, state=line.state)


@router.post(
    "/lines/{line_id}/resume",
    response_model=StateOut,
    summary="Resume a suspended line (into the state the lifecycle gives it)",
)
async def resume_line(
    line_id: uuid.UUID,
    body: LineStateReasonIn,
    actor: Unfreezer,
    db: DB,
    settings: AppSettings,
    request: Request,
) -> StateOut:
    """Back where the lifecycle's rules put it now: frozen if it was frozen when suspended;
    else `active` while its validity runs, in grace with a full grace period once it has
    ended (frozen with no grace period). 409 `line-not-suspended` for a line that is not
    suspended. Audited (`line.resume`).

    A staff member's act only, as unlocking an account: an API key (`accounts:write`, which may
    suspend — that protects) is refused `403 resume-needs-a-person`, audited as `access.denied`,
    and the line is left as it is — a tool resuming a line reported stolen would hand the SIM
    back to whoever holds it, unseen. An unknown line is `404 line-not-found` to anyone."""
    await _a_person_only(
        db, actor, request, Line, line_id, "line", Permission.lines_unfreeze,
        missing=LineNotFound(field="line_id"), refused=ResumeNeedsAPerson(field="line_id"),
    )  # fmt: skip
    policy = Policy.of(settings)
    line = await db.run(
        lambda s: money.resume_line(s, actor, line_id, body.reason, utcnow(), policy)
    )
    return StateOut(id=line.id, state=line.state)


@router.post(
    "/lines/{line_id}/adjustments",
    response_model=AdjustmentOut,
    status_code=201,
    summary="Adjust a wallet or bucket (four-eyes above the threshold; send an Idempotency-Key)",
)
async def adjust_line(
    line_id: uuid.UUID,
    body: AdjustmentIn,
    actor: Adjuster,
    db: DB,
    settings: AppSettings,
    idempotency_key: IdempotencyKeyHeader = None,
) -> AdjustmentOut:
    """Posted at once within the four-eyes threshold, else awaiting a second person's approval.
    The `Idempotency-Key` header is required (`400 idempotency-key-missing` without it); the
    same key from the same caller with the same request answers the first adjustment again
    and moves nothing more; with another line, target, amount, reason or ticket it is
    `422 idempotency-key-reused`."""
    adj = await db.run(
        lambda s: money.request_adjustment(
            s,
            settings,
            actor,
            line_id,
            target=body.target,
            amount=body.amount,
            reason=body.reason,
            ticket_id=body.ticket_id,
            idempotency_key=idempotency_key,
            now=utcnow(),
        )
    )
    return AdjustmentOut.model_validate(adj)


@router.get(
    "/adjustments", response_model=list[AdjustmentOut], summary="Adjustments awaiting approval"
)
async def waiting_adjustments(
    actor: Adjuster, _known: KnownQueryOnly, db: DB
) -> list[AdjustmentOut]:
    async with db.read() as s:
        return [AdjustmentOut.model_validate(a) for a in await money.pending_adjustments(s)]


@router.post(
    "/adjustments/{adjustment_id}/decision",
    response_model=AdjustmentOut,
    summary="Approve or reject someone else's adjustment (staff only)",
)
async def decide_adjustment(
    adjustment_id: uuid.UUID, body: DecisionIn, actor: Approver, db: DB
) -> AdjustmentOut:
    adj = await db.run(
        lambda s: money.decide_adjustment(
            s, actor, adjustment_id, approve=body.approve, now=utcnow()
        )
    )
    return AdjustmentOut.model_validate(adj)


@router.post(
    "/orders/{order_id}/resend-receipt", status_code=202, summary="E-mail the receipt again"
)
async def resend_receipt(order_id: uuid.UUID, actor: Resender, db: DB) -> None:
    await db.run(lambda s: money.resend_receipt(s, actor, order_id, utcnow()))


@router.post(
    "/refunds/{refund_id}/resend-credit-note",
    status_code=202,
    summary="E-mail a refund's credit note again",
)
async def resend_credit_note(refund_id: uuid.UUID, actor: Resender, db: DB) -> None:
    """`404 refund-not-found`; `409 no-credit-note` for a refund not done or of an order with
    no receipt. Audited as `refund.resend_credit_note`."""
    await db.run(lambda s: money.resend_credit_note(s, actor, refund_id, utcnow()))


@router.get(
    "/attention",
    response_model=list[dict[str, Any]],
    summary="Payments needing attention: flagged, or pending too long",
)
async def attention(
    actor: AttentionReader,
    _known: KnownQueryOnly,
    db: DB,
    settings: AppSettings,
    flag: Annotated[
        str | None,
        Query(
            max_length=24,
            description="Only orders with this flag (`amount_mismatch`, `late_success`, "
            "`line_unavailable`, `refund_failed`, `refund_pending`, any other a provider "
            "event raised), or "
            "`stuck_pending` for the orders pending too long",
        ),
    ] = None,
) -> list[dict[str, Any]]:
    async with db.read() as s:
        ids = await attention_orders(s, settings.order_pending_alert_minutes, flag=flag)
        found = [_panel(await order_panel(s, i)) for i in ids]
    await audit.record_read(
        db, actor, "attention.list", details={"flag": flag, "found": len(found)}
    )
    return found


@router.post(
    "/orders/{order_id}/resolve",
    response_model=StateOut,
    summary="Clear an order's attention flag, saying how it was settled",
)
async def resolve(order_id: uuid.UUID, body: NoteIn, actor: Resolver, db: DB) -> StateOut:
    order = await db.run(lambda s: money.resolve_attention(s, actor, order_id, body.note, utcnow()))
    return StateOut(id=order.id, state=order.state)


# --- catalog ------------------------------------------------------------------------------

CatalogEditor = Annotated[Actor, require(Permission.catalog_edit)]
CatalogReader = Annotated[Actor, require(Permission.catalog_read)]


@router.get(
    "/catalog",
    response_model=dict[str, Any],
    summary="The whole catalog in the catalog file's form (retired entries included)",
)
async def get_catalog(actor: CatalogReader, _known: KnownQueryOnly, db: DB) -> dict[str, Any]:
    async with db.read() as s:
        return await export_catalog(s)


@router.put(
    "/catalog/{kind}/{code}",
    response_model=dict[str, Any],
    summary="Replace or add one plan (`plans`), payment method (`payment_methods`) or tariff "
    "(`tariffs`, code `<service>.<zone>.<currency>`)",
)
async def put_catalog_entry(
    kind: Literal["plans", "payment_methods", "tariffs"],
    code: Annotated[str, Path(max_length=64)],
    body: dict[str, Any],
    actor: CatalogEditor,
    db: DB,
) -> dict[str, Any]:
    """The entry in the catalog file's form, validated with the whole catalog; a changed entry
    gets a new version (a tariff's versions: `GET …/tariffs/{code}/versions`). Nothing is stored
    if anything is invalid (`catalog-invalid`, every problem listed), nor if the body's
    `version` (as `GET /admin/catalog` shows it; optional) is no longer the entry's
    (`409 catalog-entry-changed`: someone saved it meanwhile). Audited."""
    text = json.dumps(body)
    _, entry = await db.run(lambda s: save_entry(s, actor, kind, code, text))
    return entry


@router.get(
    "/catalog/tariffs/{code}/versions",
    response_model=list[TariffVersionOut],
    summary="A tariff's versions, newest first, with when each was in force",
)
async def get_tariff_versions(
    code: Annotated[str, Path(max_length=64)],
    actor: CatalogReader,
    _known: KnownQueryOnly,
    db: DB,
) -> list[TariffVersionOut]:
    async with db.read() as s:
        found = await tariff_versions(s, code)
    if not found:
        raise CatalogEntryNotFound(field="code")
    return [TariffVersionOut.model_validate(v) for v in found]


# --- reports ------------------------------------------------------------------------------

ReportReader = Annotated[Actor, require(Permission.reports_read)]
ReportFirstDay = Annotated[
    str | None,
    Query(alias="from", max_length=10, description="First day (the operator's), e.g. 2026-11-01"),
]
ReportLastDay = Annotated[
    str | None,
    Query(alias="to", max_length=10, description="Last day (the operator's), inclusive"),
]


_REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The rows (JSON), or CSV with `?format=csv`",
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}
LedgerReader = Annotated[Actor, require(Permission.ledger_read)]


async def _report(
    name: str, actor: Actor, db: DB, settings: AppSettings, start: str | None, end: str | None,
    format: str,
) -> Any:
    zone = reports.zone_of(settings)
    p = reports.period(start, end, utcnow().astimezone(zone).date(), zone)
    async with db.read() as s:
        rows = await reports.report_rows(s, name, p)
    await audit.record_read(
        db,
        actor,
        "report.read",
        details={
            "report": name,
            "from": p.start.isoformat(),
            "to": p.end.isoformat(),
            "format": format,
        },
    )
    if format == "csv":
        text, disposition = reports.report_csv(name, rows, p)
        return Response(text, media_type="text/csv; charset=utf-8", headers=disposition)
    return [r if isinstance(r, dict) else dataclasses.asdict(r) for r in rows]


@router.get(
    "/reports/trial-balance",
    summary="The ledger's trial balance as of the end of `to`, as JSON rows or CSV",
    responses=_REPORT_RESPONSES,
    response_model=None,
)
async def get_trial_balance(
    actor: LedgerReader,
    _known: KnownQueryOnly,
    db: DB,
    settings: AppSettings,
    start: ReportFirstDay = None,
    end: ReportLastDay = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """The ledger as of the end of `to` (the operator's day) — per unit and account (operator
    accounts by key, the lines' wallets and buckets together), posted debits, credits and their
    difference; each unit's debits equal its credits. Amounts in minor units (CSV headers
    `debits_minor`, `credits_minor`, `balance_minor`). Open to `ledger.read`: finance and
    admins, and the API-key scopes `ledger:read` and `reports:read`."""
    return await _report("trial-balance", actor, db, settings, start, end, format)


@router.get(
    "/reports/{name}",
    summary="A report as JSON rows, or CSV with `?format=csv`",
    responses=_REPORT_RESPONSES,
    response_model=None,
)
async def get_report(
    name: Literal["topups", "conversion", "failures", "lines"],
    actor: ReportReader,
    _known: KnownQueryOnly,
    db: DB,
    settings: AppSettings,
    start: ReportFirstDay = None,
    end: ReportLastDay = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """Days are the operator's (`SIMCHARGE_OPERATOR_TIMEZONE`, UTC by default): `from` and `to`
    are its dates, each row's `day` is one, and each row names the zone (`time_zone`).
    `topups`: read from the ledger alone, per day the ledger posted the money, method, provider
    (one clearing account) and currency — top-ups (orders credited), money taken, fees, orders
    paid but never credited and their money, what finance put on a balance (on the day it did),
    refunded, the fees given back (refunded fees), chargebacks (disputes lost, reversals),
    dispute losses, and net: what the providers' clearing accounts moved that day (amounts of
    different currencies are never added up; the CSV ends with a `TOTAL` row per currency). A
    day's figures never change afterwards.
    `conversion`: per day — orders created, paid, rate. `failures`: per day, method and state
    (failed, cancelled, expired). `lines`: lines per lifecycle state now.
    The trial balance: `GET /admin/reports/trial-balance`.
    Amounts are integers in minor units (the smallest unit of the row's `currency`); with
    `format=csv` their headers say so (`amount_minor`, `net_minor`…)."""
    return await _report(name, actor, db, settings, start, end, format)


# --- staff --------------------------------------------------------------------------------

StaffAdmin = Annotated[Actor, require(Permission.staff_manage)]


def _staff_out(st: StaffUser, passkeys: int) -> StaffOut:
    return StaffOut(
        id=st.id,
        username=st.username,
        display_name=st.display_name,
        role=st.role,
        active=st.active,
        totp_enrolled=st.totp_enabled_at is not None,
        last_login_at=st.last_login_at,
        password_set_by_other_at=st.password_set_by_other_at,
        time_zone=st.time_zone,
        passkey_count=passkeys,
    )


async def _one_staff_out(s: AsyncSession, st: StaffUser) -> StaffOut:
    return _staff_out(st, (await passkey_counts(s, st.id)).get(st.id, 0))


@router.get("/staff", response_model=list[StaffOut], summary="Staff members")
async def list_staff(actor: StaffAdmin, _known: KnownQueryOnly, db: DB) -> list[StaffOut]:
    async with db.read() as s:
        rows = (await s.execute(select(StaffUser).order_by(StaffUser.username))).scalars().all()
        counts = await passkey_counts(s)
        return [_staff_out(st, counts.get(st.id, 0)) for st in rows]


@router.patch(
    "/staff/{staff_id}",
    response_model=StaffOut,
    summary="Change a staff member's role or access, or reset their authenticator",
)
async def change_staff_member(
    staff_id: uuid.UUID, body: StaffChangeIn, actor: StaffAdmin, db: DB
) -> StaffOut:
    """Each change ends every session of theirs. `reset_totp` also removes their passkeys (a
    lost or compromised device), audited in `staff.change` as `passkeys` before and after."""

    async def run(s: AsyncSession) -> StaffOut:
        staff, before = await change_staff(
            s,
            staff_id,
            by=actor.staff_id,
            role=body.role,
            active=body.active,
            reset_totp=body.reset_totp,
            now=utcnow(),
        )
        await audit.record(
            s,
            actor,
            "staff.change",
            target_type="staff",
            target_id=staff.id,
            before=before,
            after=change_facts(staff, before),
        )
        return await _one_staff_out(s, staff)

    return await db.run(run)


@router.post(
    "/staff/{staff_id}/password",
    response_model=StaffOut,
    summary="Set another staff member's password (every session of theirs ends)",
)
async def reset_staff_member_password(
    staff_id: uuid.UUID, body: StaffPasswordResetIn, actor: StaffAdmin, db: DB
) -> StaffOut:
    """The customers' password policy (`422 validation-error`, field `new_password`); their
    lockout is lifted, and their passkeys are removed (a reset is starting over: a lost device,
    a suspected compromise). Your own: `POST /admin/password`, with the current one (`409
    staff-own-password` here). Audited as `staff.password_reset`, with how many sessions ended
    and passkeys were removed."""

    async def run(s: AsyncSession) -> StaffOut:
        staff = await reset_staff_password(s, actor, staff_id, body.new_password, utcnow())
        return await _one_staff_out(s, staff)

    return await db.run(run)


@router.get(
    "/staff/{staff_id}/passkeys",
    response_model=list[StaffPasskeyOut],
    summary="A staff member's passkeys, oldest first",
)
async def list_staff_passkeys(
    staff_id: uuid.UUID, actor: StaffAdmin, _known: KnownQueryOnly, db: DB
) -> list[StaffPasskeyOut]:
    """Name, when it was added and last used, its transports; never its public key or
    credential id. No such member: `404 staff-member-not-found`."""
    async with db.read() as s:
        return [StaffPasskeyOut.model_validate(p) for p in await member_passkeys(s, staff_id)]


@router.delete(
    "/staff/{staff_id}/passkeys/{passkey_id}",
    status_code=204,
    summary="Remove one passkey of another staff member",
)
async def remove_staff_passkey(
    staff_id: uuid.UUID, passkey_id: uuid.UUID, actor: StaffAdmin, db: DB
) -> None:
    """Their sessions stay (their other passkeys and password still sign in): for a
    compromise, remove them all. A passkey that is not this member's is `404
    staff-passkey-not-found`, as an unknown one; your own: `409 staff-cannot-change-self` (on
    your own page, with your password and a code). Audited as `staff.passkey_removed`."""
    await db.run(
        lambda s: remove_member_passkey(s, actor, staff_id, passkey_id, now=utcnow())
    )


@router.delete(
    "/staff/{staff_id}/passkeys",
    response_model=PasskeysRemovedOut,
    summary="Remove every passkey of another staff member (every session of theirs ends)",
)
async def remove_all_staff_passkeys(
    staff_id: uuid.UUID, actor: StaffAdmin, db: DB
) -> PasskeysRemovedOut:
    """A lost or stolen device: as the staff page's "Remove all their passkeys", every session
    of theirs ends (when they held one). Audited as `staff.passkeys_removed` with the count
    before and after. Your own: `409 staff-cannot-change-self`."""
    done = await db.run(lambda s: remove_all_passkeys(s, actor, staff_id, now=utcnow()))
    return PasskeysRemovedOut(removed=done.removed, sessions_ended=done.sessions_ended)


# --- API keys -----------------------------------------------------------------------------

KeyAdmin = Annotated[Actor, require(Permission.apikeys_manage)]
"""A person (a staff token): no scope grants `apikeys.manage`, so no API key manages keys."""


class ApiKeyOut(BaseModel):
    """A key as staff see it: never its secret nor its hash."""

    model_config = ConfigDict(from_attributes=True)
    prefix: str = Field(description="The public part: `sck_<prefix>_…`")
    name: str
    scopes: list[str]
    state: Literal["live", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None = Field(description="Null: until revoked")
    last_used_at: datetime | None = Field(description="To within 5 minutes")
    revoked_at: datetime | None
    replaces: str | None = Field(description="The prefix of the key a rotation replaced by this")
    replaced_by: str | None = Field(description="The prefix of the key a rotation made for this")


class ApiKeyCreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=1000, description="Who or what uses the key (at most 80)")
    scopes: list[Annotated[str, Field(max_length=64)]] = Field(
        max_length=64, description="At least one; `balance:adjust` only on the command line"
    )
    expires_in: str | None = Field(
        default=None, max_length=32, description="A lifetime: 30m, 24h, 90d, 2w"
    )
    expires_at: str | None = Field(
        default=None, max_length=64, description="Or a moment, ISO 8601 with its offset"
    )


class ApiKeyRotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap: str = Field(
        default="24h", max_length=8, description="How long the old key keeps working: 1h, 24h, 7d"
    )


class ApiKeyIssuedOut(BaseModel):
    key: ApiKeyOut
    token: str = Field(description="The whole key, this once: only its hash is kept")
    replaced: ApiKeyOut | None = Field(
        default=None, description="A rotation's old key, with the end of its overlap"
    )


MAX_OFFSET = 1_000_000
"""The most keys a page may skip: a number the database takes (`offset=2**63` was a 500, beyond
its integer), far beyond any key count."""


@router.get("/api-keys", response_model=list[ApiKeyOut], summary="API keys, newest first")
async def list_keys(
    actor: KeyAdmin,
    _known: KnownQueryOnly,
    db: DB,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="How many keys to skip (the next page)")
    ] = 0,
) -> list[ApiKeyOut]:
    """A page of keys (`limit`, from `offset`); `X-Total-Count` says how many there are."""
    async with db.read() as s:
        views = await key_views(s, utcnow(), offset=offset, limit=limit)
        response.headers["X-Total-Count"] = str(await count_api_keys(s))
    return [ApiKeyOut.model_validate(k) for k in views]


@router.post(
    "/api-keys", response_model=ApiKeyIssuedOut, status_code=201, summary="Create an API key"
)
async def create_key(
    body: ApiKeyCreateIn,
    actor: KeyAdmin,
    db: DB,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ApiKeyIssuedOut:
    """The token is in this answer only (`Cache-Control: no-store`). Bad input is `422
    validation-error` with its field (`name`, `scopes`, `expires_in`, `expires_at`); a scope only
    the command line gives is `403 api-key-scope-command-line-only`. Audited as
    `apikey.create`. With an `Idempotency-Key`, a retry makes no second key and never shows the
    token again: `409 api-key-already-created` with the key's `prefix`; the same key with
    another body is `422 idempotency-key-reused`."""
    asked = (
        (
            create_request_key(actor.name, idempotency_key) or "",
            create_request_hash(body.name, body.scopes, body.expires_in, body.expires_at),
        )
        if idempotency_key
        else None
    )
    ends = asked_expiry(body.expires_in, body.expires_at, utcnow())
    issued = await db.run(
        lambda s: staff_create_api_key(
            s, actor, body.name, body.scopes, expires_at=ends, request=asked
        )
    )
    response.headers["cache-control"] = "no-store"
    return ApiKeyIssuedOut(
        key=ApiKeyOut.model_validate(view_of(issued.key, utcnow())), token=issued.token
    )


@router.post(
    "/api-keys/{prefix}/rotate",
    response_model=ApiKeyIssuedOut,
    summary="Replace a live API key; the old one keeps working for the overlap",
)
async def rotate_key(
    prefix: str, body: ApiKeyRotateIn, actor: KeyAdmin, db: DB, response: Response
) -> ApiKeyIssuedOut:
    """A new key with the old one's name and scopes (its token in this answer only); the old
    one expires after `overlap` (`422`, field `overlap`, for another value). No live key with
    this prefix: `404 api-key-not-found`. Audited as `apikey.create` and `apikey.rotate`."""
    grace = overlap_named(body.overlap)
    rotated = await db.run(lambda s: staff_rotate_api_key(s, actor, prefix, overlap=grace))
    response.headers["cache-control"] = "no-store"
    now = utcnow()
    new = rotated.issued.key
    return ApiKeyIssuedOut(
        key=ApiKeyOut.model_validate(view_of(new, now, replaces=prefix)),
        token=rotated.issued.token,
        replaced=ApiKeyOut.model_validate(view_of(rotated.old, now, replaced_by=new.prefix)),
    )


@router.post("/api-keys/{prefix}/revoke", response_model=ApiKeyOut, summary="Revoke an API key")
async def revoke_key(prefix: str, actor: KeyAdmin, db: DB) -> ApiKeyOut:
    """Refused from now on. Already revoked, or no such key: `404 api-key-not-found`. Audited as
    `apikey.revoke`."""

    async def revoke(s: AsyncSession) -> KeyView:
        key = await staff_revoke_api_key(s, actor, prefix)
        return await key_view(s, key, utcnow())  # with what replaced it, if it was rotated

    return ApiKeyOut.model_validate(await db.run(revoke))
