"""Money going back to the payer at the provider without us: refunds made in its dashboard,
reversals, chargebacks — recorded, never swallowed, and put in front of finance.

The policy. A refund we did not ask for (a `RefundResult` that is not ours, or a status saying
more was refunded than our refunds explain) is recorded as a refund by `provider:<name>` that
has succeeded — once per provider refund, or per reported total — and its money is posted
back through the provider's clearing account at once (or as soon as the payment itself is
known): from revenue for a credited order, split like one of ours, from `unapplied` for an
uncredited one (`refunds.money_back`). Nothing is taken back from the line (units may be used;
finance decides, with an adjustment); the order is flagged `provider_refund`. A chargeback (a
dispute) is flagged `chargeback` and moves nothing while it is open: the provider holds the money
until the dispute is decided (and a refund of ours is refused meanwhile: `refunds.OrderDisputed`).
A dispute decided for the payer (Stripe's status `lost`) is then recorded as a refund by
`provider:<name>` — the order's provider — for the disputed amount, once per dispute.

An order is never refunded past what was paid, whatever the order of events: what a lost dispute
takes beyond what the done refunds left is the operator's loss (`record_lost_dispute`), and so is
the part of a refund of ours, held while the dispute was decided, that the provider makes
afterwards beyond what was left (`refunds._past_what_was_paid`). A lost dispute counts only done
refunds: one of ours still held may yet be refused (Stripe's `charge_disputed`), voided then and
nothing to re-split.

Once its money is posted, such a refund is a done refund like ours: it gets a credit note
(`service.issue_credit_notes`) and the payer is told as of ours — the `order.refunded` notice,
by e-mail with the credit note attached (`tell_payer_of_refund`), once. Not when the money went
back because of a dispute: a reversal (PayPal's `PAYMENT.CAPTURE.REVERSED`, a chargeback it
settled) or any refund of an order whose payment was disputed is recorded, numbered and put in
front of finance, but the payer is not thanked for a refund: they took it back through their
bank, and what to tell them is finance's call.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.moments import UTC_ZONE
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerTransfer, TransferKind
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from simcharge.orders.models import Attention, Order, ProviderEvent, Refund, RefundState
from simcharge.orders.refunds import (
    AMOUNT_NOT_REPORTED,
    UNKNOWN_REFUND,
    amount_unknown,
    complete_refund,
    money_back,
    names_a_reversal,
    paid_of,
    plan_of,
    refunded_state,
    shown,
    tell_payer_of_refund,
)
from simcharge.orders.refunds import PROVIDER as PROVIDER
from simcharge.orders.service import flag_order, issue_credit_notes
from simcharge.payments.codec import dispute_from_json, refund_from_json
from simcharge.payments.providers import Dispute, PaymentState, PaymentStatus, RefundResult
from simcharge.payments.providers import RefundState as ProviderRefundState

REFUNDED_STATES = (PaymentState.refunded, PaymentState.partially_refunded)


async def refund_not_ours(
    session: AsyncSession,
    order_id: uuid.UUID,
    result: RefundResult,
    now: datetime,
    *,
    source: str,
    what: str | None,
    zone: str = UTC_ZONE,
) -> str:
    """A refund that is not ours: made at the provider (see the module's policy). `zone`: the
    operator's time zone, whose year numbers its credit note (`service.issue_credit_note`)."""
    order = await session.get(Order, order_id, with_for_update=True)
    if order is None or result.state is ProviderRefundState.failed:
        return UNKNOWN_REFUND  # nothing was given back
    what = what or "refund"
    amount = shown(result.amount, result.currency)
    if result.state is ProviderRefundState.pending:
        flag_order(
            order,
            Attention.provider_refund,
            f"{what} {result.provider_refund_id or result.refund_id}: {amount} being refunded at "
            f"the provider ({source})",
        )
        return "provider_refund_pending"
    recorded = await record_provider_refund(
        session,
        order,
        amount=result.amount,
        currency=result.currency,
        key=f"refund:{result.provider_refund_id or result.refund_id}",
        provider_refund_id=result.provider_refund_id or result.refund_id,
        what=what,
        source=source,
        now=now,
        zone=zone,
    )
    return "provider_refund" if recorded else "already"


async def known_refunds(session: AsyncSession, order: Order, *, done: bool = False) -> int:
    """Refunded or on its way, ours and the provider's, as far as we know (`done`: refunded
    only — not ours still pending, which the provider may yet refuse)."""
    state = (
        Refund.state == RefundState.succeeded.value
        if done
        else Refund.state != RefundState.failed.value
    )
    found = (
        await session.execute(
            select(func.coalesce(func.sum(Refund.amount), 0)).where(
                Refund.order_id == order.id, state
            )
        )
    ).scalar_one()
    return int(found)


async def note_refunded_status(
    session: AsyncSession,
    order: Order,
    status: PaymentStatus,
    *,
    source: str,
    now: datetime,
    zone: str = UTC_ZONE,
) -> bool:
    """A status saying the payment was (partly) refunded: what we do not know of was refunded
    at the provider and is recorded so. True if it was news."""
    if status.state not in REFUNDED_STATES:
        return False
    paid = order.paid_amount if order.paid_amount is not None else status.amount
    reported = status.refunded_amount
    if reported is None and status.state is PaymentState.refunded:
        reported = paid
    word = status.provider_state or status.state.value
    if reported is None:  # partly refunded, by how much the provider does not say
        before = order.attention_note
        flag_order(
            order,
            Attention.provider_refund,
            f"{word}: partly refunded at the provider, {AMOUNT_NOT_REPORTED} ({source})",
        )
        return order.attention_note != before
    extra = reported - await known_refunds(session, order)
    if extra <= 0:
        return False
    if status.refunds:
        return await _record_listed_refunds(
            session, order, status, extra, source=source, now=now, zone=zone
        )
    recorded = await record_provider_refund(
        session,
        order,
        amount=extra,
        currency=status.currency,
        key=f"reported:{reported}",
        provider_refund_id=None,
        what=word,
        source=source,
        now=now,
        zone=zone,
    )
    return recorded is not None


async def _record_listed_refunds(
    session: AsyncSession,
    order: Order,
    status: PaymentStatus,
    extra: int,
    *,
    source: str,
    now: datetime,
    zone: str,
) -> bool:
    """The refunds a status lists one by one (PayPal's order): each that is not ours is recorded
    under its own id — the key its own notification is recorded under (`refund_not_ours`), so
    whichever comes first, it is recorded once (recorded as a total, it was recorded again when
    its notification came) — up to `extra`, what the listed total says we do not know of."""
    ours = (
        await session.execute(
            select(Refund.reference, Refund.provider_refund_id).where(
                Refund.order_id == order.id, ~Refund.requested_by.startswith(PROVIDER)
            )
        )
    ).all()
    our_ids = {ref for row in ours for ref in row if ref}
    word = status.provider_state or status.state.value
    news = False
    for listed in status.refunds:
        if extra <= 0:
            break
        if listed.refund_id in our_ids or (listed.our_reference or "") in our_ids:
            continue
        recorded = await record_provider_refund(
            session,
            order,
            amount=min(listed.amount, extra),
            currency=status.currency,
            key=f"refund:{listed.refund_id}",
            provider_refund_id=listed.refund_id,
            what=word,
            source=source,
            now=now,
            zone=zone,
        )
        if recorded is not None:
            extra -= recorded.amount
            news = True
    return news


async def record_provider_refund(
    session: AsyncSession,
    order: Order,
    *,
    amount: int,
    currency: str | None,
    key: str,
    provider_refund_id: str | None,
    what: str,
    source: str,
    now: datetime,
    zone: str = UTC_ZONE,
) -> Refund | None:
    """A refund made at the provider without us: recorded once per `key` (None if it was
    before), its money posted when the payment is known, the order flagged for finance.
    `zone`: the operator's time zone, whose year numbers its credit note."""
    request_key = f"{PROVIDER}{order.id}:{key}"[:220]
    earlier = (
        await session.execute(select(Refund.id).where(Refund.request_key == request_key))
    ).scalar_one_or_none()
    if earlier is not None:
        return None
    currency = (currency or order.paid_currency or order.currency).upper()
    # Capped by what was refunded, not by a refund of ours still pending: the provider's refund
    # is done, and if the two together are more than was paid, it is ours the provider refuses
    # (Stripe's `charge_disputed`) — voided then — or, made all the same, ours that completes
    # past what was paid: that part is the operator's loss (`refunds._past_what_was_paid`).
    # Capped by it, a dispute lost meanwhile was recorded as nothing, and nothing at all once
    # ours was refused.
    left = paid_of(order) - await known_refunds(session, order, done=True)
    capped = min(amount, max(0, left))
    # A lost dispute or a reversal is no refund anyone made: finance reads which it was.
    how = "refunded at the provider"
    if names_a_reversal(what):
        how = "gone back to the payer by a chargeback"
    note = f"{what}: {shown(amount, currency)} {how} ({source})"
    if capped != amount:
        note += f"; only {shown(capped, currency)} was left to refund: that is recorded"
    flag_order(order, Attention.provider_refund, note)
    if capped <= 0:
        return None
    refund = Refund(
        id=uuid7(),
        order_id=order.id,
        reference="PX" + derived_id("provider-refund", request_key).hex[:24].upper(),
        amount=capped,
        currency=currency,
        reason=what[:200],
        state=RefundState.succeeded.value,
        provider_refund_id=(provider_refund_id or "")[:128] or None,
        requested_by=f"{PROVIDER}{order.provider}",
        request_key=request_key,
        plan={"transfers": [], "fee": 0, "posted": False},
        created_at=now,
        completed_at=now,
    )
    session.add(refund)
    await session.flush()
    await settle_provider_refunds(session, order, now, zone=zone)
    return refund


async def settle_provider_refunds(
    session: AsyncSession, order: Order, now: datetime, *, zone: str = UTC_ZONE
) -> None:
    """Post the money of the refunds made at the provider that are not posted yet — once the
    payment itself is known (a refund may be reported before its payment) — and number their
    credit notes, dated now (when their money is posted, not when they were reported), in the
    year of `zone`, the operator's time zone."""
    if order.paid_at is None:
        return
    rows = (
        await session.execute(
            select(Refund)
            .where(Refund.order_id == order.id, Refund.requested_by.startswith(PROVIDER))
            .order_by(Refund.created_at, Refund.id)
            .with_for_update()
        )
    ).scalars()
    settled: list[Refund] = []
    for refund in rows:
        if (refund.plan or {}).get("posted", True):
            continue
        transfers = await money_back(session, order, refund, kind=TransferKind.posted)
        await post_transfers(session, transfers, now=now)
        refund.plan = plan_of(transfers, posted=True)
        order.refunded_amount += refund.amount
        settled.append(refund)
    if settled:
        refunded_state(order)
        await issue_credit_notes(session, order.id, now, zone=zone)
        await session.flush()
        reversed_ = await _disputed(session, order)
        for refund in settled:
            if reversed_ or names_a_reversal(refund.reason):
                continue
            await tell_payer_of_refund(session, order, refund, refund.credit_note_number)


REVERSAL_EVENTS = ("dispute", "capture.reversed")
"""Words in a provider event's type (lower case) that say the payer disputed the payment, or
the provider took the money back for them: Stripe's `charge.dispute.*`, PayPal's
`CUSTOMER.DISPUTE.*` and `PAYMENT.CAPTURE.REVERSED` (a chargeback PayPal settled)."""


async def _disputed(session: AsyncSession, order: Order) -> bool:
    """Whether a dispute or a reversal of this order's payment is on record (its events)."""
    kinds = func.lower(ProviderEvent.event_type)
    found = (
        await session.execute(
            select(ProviderEvent.id)
            .where(
                ProviderEvent.order_id == order.id,
                or_(*(kinds.contains(word) for word in REVERSAL_EVENTS)),
            )
            .limit(1)
        )
    ).scalar_one_or_none()
    return found is not None


async def apply_refund_news(
    session: AsyncSession, event: ProviderEvent, now: datetime, *, zone: str = UTC_ZONE
) -> str:
    """Apply a stored notification about a refund or a dispute of `event.order_id`; returns
    what happened (the caller marks the event processed). `zone`: the operator's time zone
    (`SIMCHARGE_OPERATOR_TIMEZONE`), whose year numbers the credit notes it issues."""
    assert event.order_id is not None
    source = f"webhook:{event.event_id}"
    if event.refund is not None:
        result = refund_from_json(event.refund)
        outcome = await complete_refund(session, event.order_id, result, now, zone=zone)
        if outcome != UNKNOWN_REFUND:
            return outcome
        return await refund_not_ours(
            session, event.order_id, result, now, source=source, what=event.event_type,
            zone=zone,
        )
    if event.dispute is not None:
        order = await session.get(Order, event.order_id, with_for_update=True)
        assert order is not None
        dispute = dispute_from_json(event.dispute)
        if dispute.dispute_status == DISPUTE_LOST:
            await record_lost_dispute(
                session, order, dispute, source=source, now=now, zone=zone
            )
        return record_dispute(order, dispute, source=source)
    return "ignored"


DISPUTE_LOST = "lost"
"""Stripe's status of a dispute decided for the payer (`charge.dispute.closed`): the money it
withdrew from the merchant's balance is gone for good. `won`, `warning_closed` and `prevented`
give it back or never took it; the others are undecided."""


async def record_lost_dispute(
    session: AsyncSession,
    order: Order,
    dispute: Dispute,
    *,
    source: str,
    now: datetime,
    zone: str = UTC_ZONE,
) -> None:
    """A dispute the operator lost is money that went back to the payer through their bank: it
    is recorded once per dispute as a refund by the provider, its money posted back like one
    (`record_provider_refund`) and numbered with a credit note, so the books and the documents
    say what the bank account does. The payer is not told (a reversal: see the policy), the
    line keeps its units (finance decides), and the order stays flagged `chargeback`. A lost
    dispute whose amount was not reported moves nothing: flagged, for finance to settle.

    What was left counts the done refunds only: a refund of ours still held that the provider
    makes afterwards is capped then (`refunds._past_what_was_paid`), one it refuses is voided.
    What the dispute took beyond what was left to refund (the order refunded already, in full
    or in part: the payer got the money twice) is no refund — the order cannot be refunded past
    what was paid — but the provider took it from the operator all the same: it leaves the
    provider's clearing account for the operator's dispute losses (`chart.dispute_losses`),
    once per dispute, the line untouched and the order flagged with it (`dispute_loss`)."""
    if dispute.amount is None:
        flag_order(
            order,
            Attention.provider_refund,
            f"dispute {dispute.dispute_id} lost: {AMOUNT_NOT_REPORTED} ({source})",
        )
        return
    key = f"dispute:{dispute.dispute_id}"
    loss_id = derived_id("dispute-loss", order.id, dispute.dispute_id)
    request_key = f"{PROVIDER}{order.id}:{key}"[:220]
    recorded = (
        await session.execute(select(Refund.id).where(Refund.request_key == request_key))
    ).scalar_one_or_none()
    if recorded is not None or await session.get(LedgerTransfer, loss_id) is not None:
        return  # decided once: a second notification of it changes nothing
    over = 0
    if order.paid_at is not None and not amount_unknown(order):
        # Beyond what was left: only once the payment is in the books (before, or with no
        # amount known, nothing of it is in the clearing account to take back).
        left = paid_of(order) - await known_refunds(session, order, done=True)
        over = max(0, dispute.amount - max(0, left))
    if dispute.amount - over > 0:
        await record_provider_refund(
            session,
            order,
            amount=dispute.amount - over,
            currency=dispute.currency,
            key=key,
            provider_refund_id=dispute.dispute_id,
            what=f"dispute {dispute.dispute_id} lost",
            source=source,
            now=now,
            zone=zone,
        )
    if over:
        await dispute_loss(session, order, dispute, over, loss_id, source=source, now=now)


async def dispute_loss(
    session: AsyncSession,
    order: Order,
    dispute: Dispute,
    amount: int,
    loss_id: uuid.UUID,
    *,
    source: str,
    now: datetime,
) -> None:
    """Post what a lost dispute took beyond what was left to refund: from the provider's
    clearing account (it owes the operator that much less) to the operator's dispute losses.
    Nothing goes to or from the line: the payer's wallet and buckets were settled by the refund."""
    currency = (dispute.currency or order.paid_currency or order.currency).upper()
    shard = chart.shard_of(order.id)  # the clearing account the order's payment went to
    clearing, loss = chart.clearing(order.provider, currency, shard), chart.dispute_losses(currency)
    await ensure_accounts(session, [clearing, loss])
    await post_transfers(
        session,
        [
            NewTransfer(
                id=loss_id,
                amount=amount,
                unit=currency,
                debit_account_id=loss.id,
                credit_account_id=clearing.id,
                code="dispute_loss",
                reference=f"order:{order.id}:dispute"[:160],
            )
        ],
        now=now,
    )
    flag_order(
        order,
        Attention.chargeback,
        f"dispute {dispute.dispute_id} lost: {shown(amount, currency)} taken by the provider "
        f"beyond what was left to refund, recorded as the operator's loss ({source})",
    )


def record_dispute(order: Order, dispute: Dispute, *, source: str) -> str:
    """A chargeback: flagged for finance; nothing moves until it is decided (see the policy)."""
    amount = (
        shown(dispute.amount, dispute.currency)
        if dispute.amount is not None
        else "an amount not reported"
    )
    flag_order(
        order,
        Attention.chargeback,
        f"dispute {dispute.dispute_id} ({dispute.reason or 'no reason given'}, "
        f"{dispute.dispute_status or 'open'}): {amount} ({source})",
    )
    return "flagged"
