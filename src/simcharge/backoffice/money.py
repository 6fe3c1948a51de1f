"""Staff actions that touch money, units or access: refunds, manual adjustments (four-eyes above
a threshold), unlocking an account, unfreezing a line, resending a receipt, and settling a
payment that needed attention. Each one writes its audit entry in the same transaction; each
change of a balance is a ledger transfer."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account, AccountStatus
from simcharge.auth.service import unlock_account
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.customers import CustomerNotFound, LineNotFound
from simcharge.backoffice.models import Adjustment, AdjustmentState
from simcharge.backoffice.orders import order_facts
from simcharge.config import Settings
from simcharge.db import insert_if_absent, table_of
from simcharge.errors import (
    Conflict,
    Forbidden,
    IdempotencyKeyReused,
    NotFound,
    ValidationFailed,
    required_idempotency_key,
)
from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.money import from_minor, is_currency
from simcharge.kit.translations import N_
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount
from simcharge.ledger.service import (
    NewTransfer,
    TransferRejected,
    TransferResult,
    ensure_accounts,
    post_transfers,
)
from simcharge.lifecycle import service as lifecycle
from simcharge.lines.models import Bucket, Line, LineState
from simcharge.lines.service import LineNotInService
from simcharge.orders.fulfilment import RECEIPT_JOB
from simcharge.orders.models import Order, Refund, RefundState
from simcharge.orders.refunds import CREDIT_NOTE_JOB, apply_to_wallet, ask_for_refund, shown
from simcharge.orders.service import OrderNotFound, applied_at
from simcharge.tickets.models import Ticket
from simcharge.worker.service import enqueue

REASON_MAX = 500
APPROVAL_WINDOW = timedelta(hours=24)
"""Adjustments applied without a second person add up over this rolling window (four-eyes)."""


class AdjustmentNotFound(NotFound):
    slug = "adjustment-not-found"
    title = N_("There is no such adjustment.")


class AdjustmentDecided(Conflict):
    slug = "adjustment-decided"
    title = N_("This adjustment was already approved or rejected.")


class InsufficientBalance(Conflict):
    """A debit larger than what the wallet or bucket holds (TMF654's adjustments, reservations
    and transfers say it too): no approval could make it possible."""

    slug = "insufficient-balance"
    title = N_("There is not enough balance for this.")


class FourEyes(Forbidden):
    slug = "four-eyes"
    title = N_("An adjustment must be approved by someone other than who asked for it.")


class AdjustmentNeedsAPerson(Forbidden):
    slug = "adjustment-needs-a-person"
    title = N_(
        "This adjustment needs a second person's approval, so a staff member must ask for it "
        "(an API key has no one behind it to tell apart from the approver)."
    )


class NotLocked(Conflict):
    slug = "account-not-locked"
    title = N_("This account is not locked.")


class NotFrozen(Conflict):
    slug = "line-not-frozen"
    title = N_("This line is not frozen.")


class NoReceipt(Conflict):
    slug = "no-receipt"
    title = N_("This order has no receipt (it was not credited).")


class RefundNotFound(NotFound):
    slug = "refund-not-found"
    title = N_("There is no such refund.")


class NoCreditNote(Conflict):
    slug = "no-credit-note"
    title = N_("This refund has no credit note (it is not done, or its order has no receipt).")


class NothingToResolve(Conflict):
    slug = "nothing-to-resolve"
    title = N_("This order needs no attention.")


def _reason(value: str) -> str:
    text = value.strip().replace("\x00", "")
    if not text:
        raise ValidationFailed(N_("Give a reason."), field="reason")
    if len(text) > REASON_MAX:
        raise ValidationFailed(N_("At most {max} characters."), field="reason", max=REASON_MAX)
    return text


# --- refunds ------------------------------------------------------------------------------


async def refund(
    s: AsyncSession,
    actor: Actor,
    order_id: uuid.UUID,
    *,
    amount: int | None,
    reason: str,
    idempotency_key: str,
    now: datetime,
) -> Refund:
    """Ask for a refund (`orders.refunds`: held in the ledger now, done by the worker through
    the provider); audited."""
    reason = _reason(reason)
    order = await s.get(Order, order_id)
    if order is None:
        raise OrderNotFound(field="order_id")
    before = order_facts(order)
    row, made = await ask_for_refund(
        s,
        order_id,
        amount=amount,
        reason=reason,
        requested_by=actor.name,
        now=now,
        idempotency_key=idempotency_key,
    )
    if not made:
        return row  # the same form sent again: one refund, one entry in the audit log
    await audit.record(
        s,
        actor,
        "order.refund",
        target_type="order",
        target_id=order_id,
        before=before,
        after={**order_facts(order), "refund": row.reference, "refund_state": row.state},
        details={"amount": row.amount, "currency": row.currency, "reason": reason},
        now=now,
    )
    return row


# --- adjustments --------------------------------------------------------------------------


def _limit(settings: Settings, unit: str, wallet: bool) -> int | None:
    """What may move without a second person (per customer, unit and window); None: nothing."""
    if wallet:
        return settings.approval_currencies.get(unit, settings.adjustment_approval_above)
    return settings.approval_units.get(unit)


async def applied_alone(s: AsyncSession, line: Line, unit: str, now: datetime) -> int:
    """How much (absolute) the customer's lines (a line not sold yet: that line) were adjusted in
    `unit` within the window by adjustments nobody else approved."""
    whose = (
        Line.account_id == line.account_id if line.account_id is not None else Line.id == line.id
    )
    total = await s.execute(
        select(func.coalesce(func.sum(func.abs(Adjustment.amount)), 0))
        .join(Line, Line.id == Adjustment.line_id)
        .where(
            whose,
            Adjustment.unit == unit,
            Adjustment.state == AdjustmentState.applied.value,
            Adjustment.decided_by.is_(None),
            Adjustment.created_at > now - APPROVAL_WINDOW,
        )
    )
    return int(total.scalar_one())


async def needs_approval(
    s: AsyncSession,
    settings: Settings,
    line: Line,
    unit: str,
    *,
    wallet: bool,
    amount: int,
    now: datetime,
) -> tuple[bool, int, int | None]:
    """Whether adjusting `line` by `amount` of `unit` waits for a second person; with what was
    applied alone in the window before it and the limit. (TMF654's `adjustBalance` asks it too.)

    Four-eyes on the running total: splitting one large adjustment into small ones (or among
    colleagues) does not avoid the approval. The customer's row is locked so that two requests
    at once count each other."""
    if line.account_id is not None:
        await s.get(Account, line.account_id, with_for_update={"key_share": True})
    limit = _limit(settings, unit, wallet)
    before = await applied_alone(s, line, unit, now)
    return limit is None or before + abs(amount) > limit, before, limit


def _check_live(bucket: Bucket | None, now: datetime) -> None:
    """A bucket past its end takes nothing and gives nothing (what it held is expiry's, as
    TMF654's adjustments say too): units put in it would reach nobody."""
    if bucket is not None and bucket.expires_at is not None and bucket.expires_at <= now:
        raise ValidationFailed(N_("The bucket has expired."), field="target")


async def available(s: AsyncSession, account_id: uuid.UUID) -> int:
    """What a wallet or bucket holds now, less what is reserved (what a debit may take)."""
    row = await s.get(LedgerAccount, account_id, populate_existing=True)
    return 0 if row is None else row.credits_posted - row.debits_posted - row.debits_pending


def _shown(amount: int, unit: str) -> str:
    return f"{from_minor(amount, unit)} {unit}" if is_currency(unit) else f"{amount} {unit}"


def _short(adj_amount: int, unit: str, held: int, *, field: str, waiting: bool) -> None:
    """Refuse a debit of `adj_amount` when only `held` is there: at once when it is asked (not
    put up for an approval that could never apply it), or when approving one that waits (it
    stays waiting — the balance may cover it later — for the approver to reject or approve
    again)."""
    if adj_amount >= 0 or -adj_amount <= held:
        return
    said = (
        N_(
            "This adjustment takes {amount} and there is only {available} now: reject it, or "
            "approve it once the balance covers it."
        )
        if waiting
        else N_(
            "This adjustment takes {amount} and there is only {available}: nothing was changed."
        )
    )
    raise InsufficientBalance(
        said, field=field, amount=_shown(-adj_amount, unit), available=_shown(max(held, 0), unit)
    )


async def _apply(
    s: AsyncSession, adj: Adjustment, line: Line, now: datetime, *, field: str = "amount"
) -> None:
    """One ledger transfer between the line's wallet or bucket and the operator's funding or
    issuance account; its id derives from the adjustment (applying twice moves nothing more).
    A debit the account cannot cover (taken meanwhile by usage) is `InsufficientBalance`."""
    wallet = adj.ledger_account_id == line.wallet_account_id
    operator = chart.funding(adj.unit) if wallet else chart.issuance(adj.unit)
    await ensure_accounts(s, [operator])
    credit = adj.amount > 0
    transfer = NewTransfer(
        id=derived_id("adjustment", adj.id),
        amount=abs(adj.amount),
        unit=adj.unit,
        debit_account_id=operator.id if credit else adj.ledger_account_id,
        credit_account_id=adj.ledger_account_id if credit else operator.id,
        code="adjustment",
        reference=f"adjustment:{adj.id}",
    )
    try:
        await post_transfers(s, [transfer], now=now)
    except TransferRejected as exc:
        if exc.reason is not TransferResult.exceeds_credits:
            raise
        held = await available(s, adj.ledger_account_id)
        _short(adj.amount, adj.unit, held, field=field, waiting=field != "amount")
        raise
    adj.transfer_id = transfer.id


def adjustment_facts(adj: Adjustment) -> dict[str, Any]:
    return {
        "state": adj.state,
        "amount": adj.amount,
        "unit": adj.unit,
        "account": str(adj.ledger_account_id),
        "transfer": str(adj.transfer_id) if adj.transfer_id else None,
    }


def adjustment_id(actor: Actor, idempotency_key: str) -> uuid.UUID:
    """The adjustment a request makes: one per caller and key, so a retry names the same row."""
    return derived_id("adjustment-request", actor.name, idempotency_key)


def _replayed(
    earlier: Adjustment,
    line: Line,
    *,
    target: str,
    amount: int,
    reason: str,
    ticket_id: uuid.UUID | None,
) -> Adjustment:
    """The adjustment made under this key again, if this is the request that made it; another
    request under the same key is refused. (Who asked needs no comparing: the id derives from
    the caller and the key.)"""
    account: uuid.UUID | None
    if target == "wallet":
        account = line.wallet_account_id
    else:
        try:
            account = uuid.UUID(target)
        except ValueError:
            account = None
    asked = (line.id, account, amount, reason, ticket_id)
    made = (
        earlier.line_id,
        earlier.ledger_account_id,
        earlier.amount,
        earlier.reason,
        earlier.ticket_id,
    )
    if asked != made:
        raise IdempotencyKeyReused(field="Idempotency-Key")
    return earlier



def _check_in_service(line: Line, amount: int, *, field: str = "line_id") -> None:
    """A line in stock (never sold) takes no adjustment: what it got would be sold with the SIM.
    A terminated line's balances were forfeited: it may be debited (a correction), not credited.
    As TMF654's `adjustBalance` (`tmf654.service.adjust`)."""
    state = LineState(line.state)
    if state is LineState.available:
        raise LineNotInService(N_("The line is not in service: it was never sold."), field=field)
    if amount > 0 and state is LineState.terminated:
        raise LineNotInService(N_("The line is terminated."), field=field)


async def request_adjustment(
    s: AsyncSession,
    settings: Settings,
    actor: Actor,
    line_id: uuid.UUID,
    *,
    target: str,
    amount: int,
    reason: str,
    idempotency_key: str | None,
    ticket_id: uuid.UUID | None = None,
    now: datetime,
) -> Adjustment:
    """Adjust a line's wallet (`target` = "wallet", minor units) or one of its buckets (`target`
    = the bucket id, in the bucket's unit). It is posted now only if, added to what the
    customer's lines were adjusted in that unit without a second person in the last 24 hours,
    it stays within the threshold; otherwise it waits for someone else's approval (and an API
    key may not ask for it). A debit beyond what is there is refused by the ledger.

    Once per caller and `idempotency_key`: the same request again answers the adjustment it
    made (nothing moves twice); another request under the key is `IdempotencyKeyReused`."""
    idempotency_key = required_idempotency_key(idempotency_key)
    reason = _reason(reason)
    if amount == 0:
        raise ValidationFailed(N_("The amount may not be zero."), field="amount")
    adj_id = adjustment_id(actor, idempotency_key)
    # FOR NO KEY UPDATE, here and on the customer's row below: the rows are locked against
    # each other's changes, not against a reference to them. An order being placed holds a
    # foreign key's share of the customer's row (its idempotency key) and then asks one of the
    # line's (the order): FOR UPDATE would close that cycle into a deadlock.
    line = await s.get(Line, line_id, with_for_update={"key_share": True})
    if line is None:
        raise LineNotFound(field="line_id")
    # Looked for after the line's lock: a copy of this request that took the lock first has
    # committed by now, and is answered again rather than counted (or refused) once more.
    earlier = await s.get(Adjustment, adj_id)
    if earlier is not None:
        return _replayed(
            earlier, line, target=target, amount=amount, reason=reason, ticket_id=ticket_id
        )
    _check_in_service(line, amount)
    if target == "wallet":
        account_id, unit = line.wallet_account_id, line.currency
    else:
        try:
            bucket = await s.get(Bucket, uuid.UUID(target))
        except ValueError:
            bucket = None
        if bucket is None or bucket.line_id != line.id:
            raise ValidationFailed(
                N_("Choose the wallet or one of the line's buckets."), field="target"
            )
        _check_live(bucket, now)
        account_id, unit = bucket.id, bucket.unit
    if ticket_id is not None:
        # The ticket the money answers: one of this line's customer's, or none at all.
        ticket = await s.get(Ticket, ticket_id)
        if ticket is None or ticket.account_id is None or ticket.account_id != line.account_id:
            raise ValidationFailed(
                N_("No ticket of this line's customer has this id."), field="ticket_id"
            )
    # A debit beyond what is there is refused at once, above the threshold as below it: put up
    # for approval, it could never be applied (nor counted: the total is asked after).
    _short(amount, unit, await available(s, account_id), field="amount", waiting=False)
    waits, before, limit = await needs_approval(
        s, settings, line, unit, wallet=target == "wallet", amount=amount, now=now
    )
    if waits and actor.staff_id is None:
        raise AdjustmentNeedsAPerson(field="amount")
    # The key is claimed before anything moves. The same key on another line at the same moment
    # is not lined up by the line's lock: its row wins, and this request moves nothing.
    claim = insert_if_absent(s, table_of(Adjustment), "id", returning=("id",))
    claimed = (
        await s.execute(
            claim,
            {
                "id": adj_id,
                "line_id": line.id,
                "ledger_account_id": account_id,
                "unit": unit,
                "amount": amount,
                "reason": reason,
                "state": (
                    AdjustmentState.awaiting_approval if waits else AdjustmentState.applied
                ).value,
                "requested_by": actor.name,
                "requested_by_staff_id": actor.staff_id,
                "ticket_id": ticket_id,
                "created_at": now,
                "decided_at": None if waits else now,
            },
        )
    ).scalar_one_or_none()
    adj = await s.get(Adjustment, adj_id)
    assert adj is not None
    if claimed is None:
        return _replayed(
            adj, line, target=target, amount=amount, reason=reason, ticket_id=ticket_id
        )
    if not waits:
        await _apply(s, adj, line, now)
        await s.flush()
    await audit.record(
        s,
        actor,
        "adjustment.request" if waits else "adjustment.apply",
        target_type="line",
        target_id=line.id,
        after=adjustment_facts(adj),
        details={
            "adjustment": str(adj.id),
            "reason": reason,
            "applied_alone_24h": before,
            "limit": limit,
        },
        now=now,
    )
    return adj


def _decision_note(value: str | None, *, required: bool) -> str | None:
    """The approver's note: optional, at most `REASON_MAX` characters; `required` (a rejection
    on the page) it may not be empty."""
    text = (value or "").strip().replace("\x00", "")
    if len(text) > REASON_MAX:
        raise ValidationFailed(N_("At most {max} characters."), field="note", max=REASON_MAX)
    if required and not text:
        raise ValidationFailed(N_("Say why it is rejected."), field="note")
    return text or None


async def decide_adjustment(
    s: AsyncSession,
    actor: Actor,
    adjustment_id: uuid.UUID,
    *,
    approve: bool,
    now: datetime,
    note: str | None = None,
    reason_to_reject: bool = False,
) -> Adjustment:
    """Approve (posted now) or reject an adjustment waiting for a second person, with the
    approver's `note` kept on it and in the audit entry (`reason_to_reject`: a rejection needs
    one — the back office's page asks it; the API's decision has no note)."""
    adj = await s.get(Adjustment, adjustment_id, with_for_update=True)
    if adj is None:
        raise AdjustmentNotFound(field="adjustment_id")
    # A person approves, never the one who asked (by whichever credential they asked).
    if (
        actor.staff_id is None
        or adj.requested_by == actor.name
        or adj.requested_by_staff_id == actor.staff_id
    ):
        raise FourEyes(field="adjustment_id")
    if adj.state != AdjustmentState.awaiting_approval.value:
        raise AdjustmentDecided(field="adjustment_id")  # said before a note is asked for
    kept = _decision_note(note, required=reason_to_reject and not approve)
    if approve:
        # Asked while its bucket was live, approved after the end: refused, left waiting (to be
        # rejected). A wallet is no bucket.
        _check_live(await s.get(Bucket, adj.ledger_account_id), now)
    before = adjustment_facts(adj)
    state = (AdjustmentState.applied if approve else AdjustmentState.rejected).value
    claimed = await s.execute(
        update(Adjustment)
        .where(
            Adjustment.id == adj.id,
            Adjustment.state == AdjustmentState.awaiting_approval.value,
        )
        .values(state=state, decided_by=actor.name, decided_at=now, decision_note=kept)
    )
    if not getattr(claimed, "rowcount", 0):
        raise AdjustmentDecided(field="adjustment_id")
    await s.refresh(adj)
    if approve:
        line = await s.get(Line, adj.line_id, with_for_update={"key_share": True})
        assert line is not None
        _check_in_service(line, adj.amount, field="adjustment_id")  # it may have changed since
        # Its balance too (used since it was asked): refused with what is there, left waiting.
        _short(
            adj.amount,
            adj.unit,
            await available(s, adj.ledger_account_id),
            field="adjustment_id",
            waiting=True,
        )
        await _apply(s, adj, line, now, field="adjustment_id")
        await s.flush()
    await audit.record(
        s,
        actor,
        "adjustment.approve" if approve else "adjustment.reject",
        target_type="line",
        target_id=adj.line_id,
        before=before,
        after=adjustment_facts(adj),
        details={
            "adjustment": str(adj.id),
            "requested_by": adj.requested_by,
            **({"note": kept} if kept else {}),
        },
        now=now,
    )
    return adj


async def pending_adjustments(s: AsyncSession) -> list[Adjustment]:
    return list(
        (
            await s.execute(
                select(Adjustment)
                .where(Adjustment.state == AdjustmentState.awaiting_approval.value)
                .order_by(Adjustment.created_at)
            )
        ).scalars()
    )


# --- access and lines ---------------------------------------------------------------------


async def unlock(s: AsyncSession, actor: Actor, account_id: uuid.UUID, now: datetime) -> Account:
    account = await s.get(Account, account_id, with_for_update=True)
    if account is None:
        raise CustomerNotFound(field="account_id")
    if account.status != AccountStatus.locked:
        raise NotLocked(field="account_id")
    before = {"status": account.status, "lock_reason": account.lock_reason}
    await unlock_account(s, account, client=None, now=now, by="staff")
    await audit.record(
        s,
        actor,
        "account.unlock",
        target_type="account",
        target_id=account.id,
        before=before,
        after={"status": account.status},
        now=now,
    )
    return account


async def unfreeze_line(
    s: AsyncSession, actor: Actor, line_id: uuid.UUID, now: datetime, policy: lifecycle.Policy
) -> Line:
    """A frozen line back in service, by the lifecycle's rules (active while its validity runs,
    else in grace with a full grace period to top up — refused without a grace period:
    `lifecycle.LineWouldFreezeAgain`); audited here as well."""
    line = await s.get(Line, line_id, with_for_update=True)
    if line is None:
        raise LineNotFound(field="line_id")
    if line.state != LineState.frozen:
        raise NotFrozen(field="line_id")
    before = {"state": line.state}
    await lifecycle.unfreeze(
        s,
        line,
        by=actor.name.split(":", 1)[-1],
        reason="unfrozen by customer service",
        now=now,
        policy=policy,
    )
    await audit.record(
        s,
        actor,
        "line.unfreeze",
        target_type="line",
        target_id=line.id,
        before=before,
        after={"state": line.state},
        now=now,
    )
    return line


async def suspend_line(
    s: AsyncSession, actor: Actor, line_id: uuid.UUID, reason: str, now: datetime
) -> Line:
    """A line in service stopped at its owner's request (a SIM lost or stolen) until staff
    resume it (`lifecycle.suspend`: 409 `line-not-in-service` for one in stock or terminated,
    `line-already-suspended`); the reason is required (1–500 characters, field `reason`) and
    audited with the state it had."""
    text = _reason(reason)
    line = await s.get(Line, line_id, with_for_update=True)
    if line is None:
        raise LineNotFound(field="line_id")
    was = await lifecycle.suspend(s, line, by=actor.name, reason=text, now=now)
    await audit.record(
        s,
        actor,
        "line.suspend",
        target_type="line",
        target_id=line.id,
        before={"state": was.value},
        after={"state": line.state},
        details={"reason": text},
        now=now,
    )
    return line


async def resume_line(
    s: AsyncSession,
    actor: Actor,
    line_id: uuid.UUID,
    reason: str,
    now: datetime,
    policy: lifecycle.Policy,
) -> Line:
    """A suspended line back where the lifecycle's rules put it now (`lifecycle.resume`: 409
    `line-not-suspended` otherwise), with a required reason; audited."""
    text = _reason(reason)
    line = await s.get(Line, line_id, with_for_update=True)
    if line is None:
        raise LineNotFound(field="line_id")
    await lifecycle.resume(s, line, by=actor.name, reason=text, policy=policy, now=now)
    await audit.record(
        s,
        actor,
        "line.resume",
        target_type="line",
        target_id=line.id,
        before={"state": LineState.suspended.value},
        after={"state": line.state},
        details={"reason": text},
        now=now,
    )
    return line


def _resend_key(actor: Actor, once: str | None) -> uuid.UUID:
    """The resend's own mark in its job's dedupe key: the form's one-time key (per staff member)
    — the same form posted twice (a double click, a browser's retry) sends once — or, with none
    (the API), a fresh one: every call sends."""
    if once is None:
        return uuid7()
    return derived_id("resend", actor.name, required_idempotency_key(once))


async def resend_receipt(
    s: AsyncSession, actor: Actor, order_id: uuid.UUID, now: datetime, *, once: str | None = None
) -> bool:
    """The receipt job again (it renders if needed and e-mails the verified address). Under a
    one-time key (`once`, a page's form) once only: False, nothing queued or audited again, for
    a repeat."""
    order = await s.get(Order, order_id)
    if order is None:
        raise OrderNotFound(field="order_id")
    if order.fulfilled_at is None and await applied_at(s, order) is None:
        raise NoReceipt(field="order_id")
    queued = await enqueue(
        s,
        RECEIPT_JOB,
        {"order_id": str(order.id)},
        dedupe_key=f"{RECEIPT_JOB}:{order.id}:resend:{_resend_key(actor, once)}",
    )
    if not queued:
        return False
    await audit.record(
        s,
        actor,
        "order.resend_receipt",
        target_type="order",
        target_id=order.id,
        details={"receipt": order.receipt_number},
        now=now,
    )
    return True


async def resend_credit_note(
    s: AsyncSession, actor: Actor, refund_id: uuid.UUID, now: datetime, *, once: str | None = None
) -> bool:
    """A done refund's credit note e-mailed again with its notice (the job renders it, numbering
    it first if it was not yet, and mails the verified address), for a payer who lost it. Any
    refund with a credit note, a reversal's too: sending is the staff member's decision. Under a
    one-time key (`once`) once only, as `resend_receipt`."""
    refund = await s.get(Refund, refund_id)
    order = await s.get(Order, refund.order_id) if refund is not None else None
    if refund is None or order is None:
        raise RefundNotFound(field="refund_id")
    if refund.state != RefundState.succeeded.value or order.receipt_number is None:
        raise NoCreditNote(field="refund_id")
    queued = await enqueue(
        s,
        CREDIT_NOTE_JOB,
        {"refund_id": str(refund.id)},
        dedupe_key=f"{CREDIT_NOTE_JOB}:{refund.id}:resend:{_resend_key(actor, once)}",
    )
    if not queued:
        return False
    await audit.record(
        s,
        actor,
        "refund.resend_credit_note",
        target_type="refund",
        target_id=refund.id,
        details={"credit_note": refund.credit_note_number, "order": order.reference},
        now=now,
    )
    return True


async def apply_payment_to_wallet(
    s: AsyncSession, actor: Actor, order_id: uuid.UUID, note: str, now: datetime
) -> Order:
    """Finance puts the money of a payment taken and not credited on the line's wallet
    (`orders.refunds.apply_to_wallet`); the order's attention flag is resolved with the note,
    and it is audited."""
    note = _reason(note)
    order = await s.get(Order, order_id, with_for_update=True)
    if order is None:
        raise OrderNotFound(field="order_id")
    before = {**order_facts(order), "attention": order.attention}
    amount = await apply_to_wallet(s, order, now)
    # The payer's receipt for the money that became their credit (numbered and e-mailed).
    await enqueue(
        s, RECEIPT_JOB, {"order_id": str(order.id)}, dedupe_key=f"{RECEIPT_JOB}:{order.id}"
    )
    flagged = order.attention
    order.attention = None
    order.attention_note = (
        f"{order.attention_note or flagged or ''} — {shown(amount, order.paid_currency)} applied "
        f"to the line's wallet by {actor.name}: {note}".lstrip(" —")[:2000]
    )
    await s.flush()
    await audit.record(
        s,
        actor,
        "order.apply_to_wallet",
        target_type="order",
        target_id=order.id,
        before=before,
        after={**order_facts(order), "attention": None},
        details={"amount": amount, "currency": order.paid_currency, "note": note},
        now=now,
    )
    return order


async def resolve_attention(
    s: AsyncSession, actor: Actor, order_id: uuid.UUID, note: str, now: datetime
) -> Order:
    """Finance settled what the order was flagged for (credited by an adjustment, refunded,
    confirmed with the provider…): the flag is cleared, the note kept."""
    note = _reason(note)
    order = await s.get(Order, order_id, with_for_update=True)
    if order is None:
        raise OrderNotFound(field="order_id")
    if order.attention is None:
        raise NothingToResolve(field="order_id")
    before = {"attention": order.attention, "attention_note": order.attention_note}
    order.attention = None
    order.attention_note = (
        f"{before['attention_note'] or before['attention']} — resolved by {actor.name}: {note}"[
            :2000
        ]
    )
    await s.flush()
    await audit.record(
        s,
        actor,
        "order.resolve_attention",
        target_type="order",
        target_id=order.id,
        before=before,
        after={"attention": None, "attention_note": order.attention_note},
        details={"note": note, "state": order.state},
        now=now,
    )
    return order

