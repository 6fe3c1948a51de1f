"""Refunds asked of the provider by us — and what the ledger takes back.

What a payment put into the ledger. Credited (`fulfilled`): its total went from the provider's
clearing account to revenue (the sale and the fee). Taken but not credited (`paid`: another
amount or currency, an unusable line, money refunded at the provider before we heard of the
payment): what was paid, in the currency it was paid in, went from clearing to `unapplied` —
the money is in the ledger, owed to no plan (`received_unapplied`).

The ledger policy. A refund of `r`:
- of a credited order whose total is `T`: gives back money, revenue → the provider's clearing
  account, `r` split between the sale and the fee in the order's proportion (the fee share
  rounded half up); and takes back, from what the order granted and is still unused, the share
  `r / T` (rounded up) of each bucket and of the wallet credit, capped at what is left — for a
  refund of everything still refundable, all that is left of them. Of the wallet credit (the
  wallet is the line's, not the order's), never more than the order granted less what its
  other refunds took: its own buckets cap themselves. Units and credit already
  used stay used (the customer had them); the line's validity extension stays.
- of an uncredited order: gives back money, `unapplied` → clearing; nothing to take back.

Ours are asked of the provider by the worker, after commit. Until the provider confirms,
everything above is held as pending ledger transfers: the units and credit cannot be spent, and
nothing is final. Confirmed: posted, each transfer under the code it was held with (`refund`,
`refund_fee`, `clawback`), and the order `partially_refunded` or `refunded` — an uncredited one
`refunded` once all that was paid is refunded (it no longer awaits credit), still `paid` before.
Refused: voided (the customer keeps everything) and the order is flagged `refund_failed` for
finance. Confirmed for more than is left of the payment — a dispute lost, or a refund at the
provider, took the rest while it was held — only what was left is a refund: an order is never
refunded past what was paid; the rest the provider paid the payer twice, the operator's loss
(`_past_what_was_paid`; flagged `chargeback` when a dispute took the rest, `provider_refund`
when a refund at the provider did). An order whose payment is disputed, the dispute open, is
not refunded (`409 order-disputed`): the provider would refuse it.

A done refund of an order that has a receipt gets a credit note, numbered in the transaction
that completes it (`service.issue_credit_note`: `C2026-000001`, its own gapless series), and its
notice goes by e-mail with the credit note attached (`CREDIT_NOTE_JOB`), by SMS and in the portal
at once. The receipt is never changed (`receipts`).

Refunds made at the provider without us, and chargebacks: `orders.reversals`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.catalog.steps import payable_step
from simcharge.db import dialect_name
from simcharge.errors import Conflict, IdempotencyKeyReused, ValidationFailed
from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.moments import UTC_ZONE
from simcharge.kit.money import from_minor
from simcharge.kit.translations import N_
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount, LedgerTransfer, TransferKind
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from simcharge.lifecycle.service import forfeit_transfers
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import bucket_id
from simcharge.notifications.service import CHANNELS, notify
from simcharge.orders.models import (
    Attention,
    Order,
    OrderState,
    ProviderEvent,
    Refund,
    RefundState,
)
from simcharge.orders.service import (
    OrderNotFound,
    applied_transfer_id,
    flag_order,
    issue_credit_note,
    issue_receipt_number,
)
from simcharge.payments.codec import dispute_from_json
from simcharge.payments.providers import RefundResult
from simcharge.payments.providers import RefundState as ProviderRefundState
from simcharge.worker.service import enqueue

REFUND_JOB = "payments.refund"
CREDIT_NOTE_JOB = "orders.credit_note"
"""Render a done refund's credit note in the payer's language and e-mail it with the refund's
notice (`payments.jobs.credit_note`)."""
PROVIDER = "provider:"
"""`Refund.requested_by` of a refund made at the provider without us: `provider:<name>`."""
AMOUNT_NOT_REPORTED = "amount not reported"
"""In the note of an order refunded at the provider by an amount the provider did not say
(WeChat Pay's `REFUND`: `reversals.note_refunded_status`)."""
REFUNDABLE = (OrderState.fulfilled, OrderState.partially_refunded, OrderState.paid)
UNKNOWN_REFUND = "unknown_refund"


class NotRefundable(Conflict):
    slug = "order-not-refundable"
    title = N_("This order cannot be refunded.")


class PaidAmountUnknown(Conflict):
    slug = "paid-amount-unknown"
    title = N_(
        "The provider has not said how much was paid: check the payment with the provider "
        "before refunding it."
    )


class RefundAmountUnreported(Conflict):
    slug = "refund-amount-unreported"
    title = N_(
        "Part of this payment was refunded at the provider by an amount it has not reported "
        "yet: apply it once that refund is recorded, or refund the rest."
    )


class RefundTooLarge(ValidationFailed):
    slug = "refund-too-large"
    title = N_("The refund is larger than what is left to refund.")


class OrderDisputed(Conflict):
    slug = "order-disputed"
    title = N_(
        "The payer disputed this payment with their bank: it cannot be refunded while the "
        "dispute is open (the provider refuses it). If the dispute is lost, the money goes back "
        "to the payer through their bank."
    )


class RefundNotPayable(ValidationFailed):
    slug = "refund-amount-not-payable"
    title = N_("The payment's provider cannot refund this amount in this currency.")


def shown(amount: int, currency: str | None) -> str:
    """An amount for a note to finance: `19.99 USD` (minor units if the currency is unknown)."""
    try:
        return f"{from_minor(amount, currency or '')} {currency}"
    except ValueError:
        return f"{amount} (minor units) {currency or ''}".rstrip()


def paid_of(order: Order) -> int:
    """What the payer paid: the amount the provider reported; before the payment is known, the
    order's total; taken with no amount named (`amount_unknown`), nothing we can account for —
    none of it is in the ledger until the provider says how much."""
    if order.paid_amount is not None:
        return order.paid_amount
    return order.total if order.paid_at is None else 0


def amount_unknown(order: Order) -> bool:
    """Taken and not credited, the provider naming no amount or no currency: nothing was posted
    for it (`received_unapplied`)."""
    return (
        order.paid_at is not None
        and order.fulfilled_at is None
        and (order.paid_amount is None or not order.paid_currency)
    )


async def refundable(session: AsyncSession, order: Order) -> int:
    """What can still be refunded: paid, minus refunds done or on their way, minus what finance
    applied to the line's wallet (an uncredited payment's money)."""
    held = (
        await session.execute(
            select(func.coalesce(func.sum(Refund.amount), 0)).where(
                Refund.order_id == order.id, Refund.state == RefundState.pending.value
            )
        )
    ).scalar_one()
    applied = await applied_to_wallet(session, order) if order.fulfilled_at is None else 0
    return max(0, paid_of(order) - order.refunded_amount - int(held) - applied)


async def refund_unreported(session: AsyncSession, order: Order) -> bool:
    """Refunded at the provider by an amount it did not report, and no refund of it recorded
    since (its own notification — WeChat Pay's `REFUND.SUCCESS` — says how much): what is left
    of the payment is not known, so none of it may be put on the line's wallet. Finance settles
    it once the refund is recorded, or by refunding the rest of an amount it reads at the
    provider (which refuses more than is left there); resolving the flag is saying it checked."""
    if order.attention != Attention.provider_refund.value:
        return False
    if AMOUNT_NOT_REPORTED not in (order.attention_note or ""):
        return False
    recorded = (
        await session.execute(
            select(Refund.id)
            .where(Refund.order_id == order.id, Refund.requested_by.startswith(PROVIDER))
            .limit(1)
        )
    ).first()
    return recorded is None


def _applied_id(order: Order) -> uuid.UUID:
    return _applied_transfer(order.id)


def _applied_transfer(order_id: uuid.UUID) -> uuid.UUID:
    return applied_transfer_id(order_id)


async def applied_to_wallet(session: AsyncSession, order: Order) -> int:
    """What of an uncredited payment finance put on the line's wallet (0: nothing)."""
    transfer = await session.get(LedgerTransfer, _applied_id(order))
    return transfer.amount if transfer is not None else 0


async def applied_orders(
    session: AsyncSession, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Which of these orders finance put on the line's wallet, and how much went on it (reports),
    in one query per thousand orders."""
    by_transfer = {_applied_transfer(order_id): order_id for order_id in order_ids}
    found: dict[uuid.UUID, int] = {}
    ids = list(by_transfer)
    for start in range(0, len(ids), 1000):
        rows = await session.execute(
            select(LedgerTransfer.id, LedgerTransfer.amount).where(
                LedgerTransfer.id.in_(ids[start : start + 1000])
            )
        )
        found.update((by_transfer[transfer_id], int(amount or 0)) for transfer_id, amount in rows)
    return found


class NothingToApply(Conflict):
    slug = "nothing-to-apply"
    title = N_("This order holds no money taken and not credited, or it was applied already.")


class WalletCurrencyDiffers(Conflict):
    slug = "wallet-currency-differs"
    title = N_("The payment is in another currency than the line's wallet: refund it instead.")


async def apply_to_wallet(session: AsyncSession, order: Order, now: datetime) -> int:
    """Put what is left of an uncredited payment (`paid`: its money in `unapplied`) on the
    line's wallet: one transfer `unapplied` → wallet, once per order (its id derives from the
    order), so the money the operator held for the payer becomes the payer's credit. What is
    applied can no longer be refunded (`refundable`). The caller holds the order's lock.
    Returns the amount applied."""
    if order.state != OrderState.paid.value or order.fulfilled_at is not None:
        raise NothingToApply(field="order_id")
    if await refund_unreported(session, order):
        raise RefundAmountUnreported(field="order_id")
    # What was applied is no longer refundable: applied once, nothing is left the second time.
    amount = await refundable(session, order)
    currency = order.paid_currency
    if amount <= 0 or not currency:
        raise NothingToApply(field="order_id")
    line = await session.get(Line, order.line_id, with_for_update=True)
    if line is None or line.currency != currency:
        raise WalletCurrencyDiffers(field="order_id")
    unapplied = chart.unapplied(currency, chart.shard_of(order.id))
    await ensure_accounts(session, [unapplied])
    await post_transfers(
        session,
        [
            NewTransfer(
                id=_applied_id(order),
                amount=amount,
                unit=currency,
                debit_account_id=unapplied.id,
                credit_account_id=line.wallet_account_id,
                code="applied",
                reference=f"order:{order.id}",
            )
        ],
        now=now,
    )
    return amount


async def received_unapplied(session: AsyncSession, order: Order, now: datetime) -> None:
    """Money taken but not credited: clearing → `unapplied`, what was paid in the currency it was
    paid in (one transfer per order, its id derived from the order)."""
    amount, currency = order.paid_amount, order.paid_currency
    if not amount or amount <= 0 or not currency:
        return  # the provider named no amount: nothing to post, finance sees the flag
    source, shard = f"order:{order.id}", chart.shard_of(order.id)
    clearing = chart.clearing(order.provider, currency, shard)
    unapplied = chart.unapplied(currency, shard)
    await ensure_accounts(session, [clearing, unapplied])
    transfer = NewTransfer(
        id=derived_id(source, "unapplied"),
        amount=amount,
        unit=currency,
        debit_account_id=clearing.id,
        credit_account_id=unapplied.id,
        code="unapplied",
        reference=source,
    )
    await post_transfers(session, [transfer], now=now)


async def request_refund(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    amount: int | None,
    reason: str | None,
    requested_by: str,
    now: datetime,
    idempotency_key: str | None = None,
) -> Refund:
    """Hold back what the refund takes (pending transfers) and ask the worker to refund at the
    provider. With an `idempotency_key` already used by `requested_by`: the refund it made."""
    refund, _ = await ask_for_refund(
        session,
        order_id,
        amount=amount,
        reason=reason,
        requested_by=requested_by,
        now=now,
        idempotency_key=idempotency_key,
    )
    return refund


async def ask_for_refund(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    amount: int | None,
    reason: str | None,
    requested_by: str,
    now: datetime,
    idempotency_key: str | None = None,
) -> tuple[Refund, bool]:
    """Hold back what the refund takes (pending transfers) and ask the worker to refund at the
    provider. With an `idempotency_key` already used by `requested_by`: the refund it made.
    Also says whether the refund was made now (False: a repeat of the one that key made)."""
    order = await session.get(Order, order_id, with_for_update=True)
    if order is None:
        raise OrderNotFound(field="order_id")
    request_key = f"{requested_by}:{idempotency_key}" if idempotency_key else None
    asked = refund_request(amount, reason)
    if request_key is not None:
        await _lock_request_key(session, request_key)
        earlier = (
            await session.execute(select(Refund).where(Refund.request_key == request_key))
        ).scalar_one_or_none()
        if earlier is not None:
            if earlier.order_id != order_id or not _same_request(earlier, asked):
                raise IdempotencyKeyReused(field="Idempotency-Key")
            return earlier, False
    if OrderState(order.state) not in REFUNDABLE or order.paid_at is None:
        raise NotRefundable(field="order_id")
    if amount_unknown(order):
        raise PaidAmountUnknown(field="order_id")
    if await dispute_open(session, order):
        # Refused here, not by the provider after a 202: Stripe answers `charge_disputed`.
        raise OrderDisputed(field="order_id")
    left = await refundable(session, order)
    currency = order.paid_currency or order.currency
    amount = left if amount is None else amount
    if amount <= 0 or amount > left:
        raise RefundTooLarge(
            N_("At most {left} can still be refunded."),
            field="amount",
            left=f"{from_minor(left, currency)} {currency}",
        )
    step = payable_step(order.provider, currency)
    if amount % step:
        # Refused here, not by the provider after a 202: Stripe takes KWD in steps of 0.010 and
        # whole HUF only, PayPal whole HUF, JPY and TWD (`catalog.steps`).
        raise RefundNotPayable(
            N_("This payment can only be refunded in steps of {step}."),
            field="amount",
            step=f"{from_minor(step, currency)} {currency}",
        )
    refund = Refund(
        id=uuid7(),
        order_id=order.id,
        reference="RF" + uuid7().hex[:24].upper(),
        amount=amount,
        currency=currency,
        reason=reason,
        state=RefundState.pending.value,
        requested_by=requested_by,
        request_key=request_key,
        created_at=now,
    )
    transfers = await money_back(session, order, refund, kind=TransferKind.pending)
    if order.fulfilled_at is not None:
        transfers += await _clawback(session, order, refund, full=amount == left)
    if transfers:
        await post_transfers(session, transfers, now=now)
    refund.plan = plan_of(transfers, request=asked)
    session.add(refund)
    await session.flush()
    await enqueue(
        session,
        REFUND_JOB,
        {"refund_id": str(refund.id)},
        max_attempts=20,
        dedupe_key=f"{REFUND_JOB}:{refund.id}",
    )
    return refund, True


def refund_request(amount: int | None, reason: str | None) -> dict[str, Any]:
    """What a refund was asked as, kept in its `plan` with its idempotency key: the amount
    (None: "all that is left", whatever that came to) and the reason. A request sent again with
    the same key is the same refund only if it asks this: the amount stored on the refund is no
    guide — "all" is stored as what was left then, and a refund confirmed past what was left is
    cut down to it (`_past_what_was_paid`)."""
    return {"amount": amount, "reason": reason}


def _same_request(earlier: Refund, asked: dict[str, Any]) -> bool:
    stored = (earlier.plan or {}).get("request")
    if stored is not None:
        return bool(stored == asked)
    # A refund asked before the request was kept (sixteenth round): its reason and, when an
    # amount is asked, its amount; "all" cannot be told from the amount it came to.
    return earlier.reason == asked["reason"] and asked["amount"] in (None, earlier.amount)


async def _lock_request_key(session: AsyncSession, request_key: str) -> None:
    """Take the refund request key for this transaction, after the order's row: the same key
    sent for two orders at once (each under its own order's lock) makes one refund and one
    `idempotency-key-reused`, never a unique violation. PostgreSQL only — an advisory lock
    held until the transaction ends; SQLite lets one writer in at a time anyway."""
    if dialect_name(session) == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"refund:{request_key}".encode()).digest()[:8], "big")
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key - 2**63})


DISPUTE_DECIDED = frozenset({"won", "lost", "warning_closed", "prevented", "charge_refunded"})
"""Stripe's statuses of a dispute that is over: decided for one side (`won`, `lost`), an inquiry
closed (`warning_closed`), one prevented, or (its former status) settled by a refund."""
DISPUTE_INQUIRY = "warning_"
"""Stripe's inquiry (`warning_needs_response`, `warning_under_review`): a question from the
issuer, no chargeback — the money is not withdrawn and the charge can still be refunded
(`is_charge_refundable`); refunding it is one way to answer it."""


async def dispute_open(session: AsyncSession, order: Order) -> bool:
    """Whether a chargeback of this order's payment is open: a dispute on record (its
    notifications, processed or not) that none of them says is over — in whatever order they
    came, a dispute once decided stays decided — and that is no inquiry. The provider holds the
    money and refuses a refund (Stripe: `charge_disputed`) until it is decided."""
    # Read in Python: an event that reports none stores JSON `null`, which is no SQL NULL. An
    # order has a handful of events.
    rows = (
        await session.execute(
            select(ProviderEvent.dispute).where(ProviderEvent.order_id == order.id)
        )
    ).scalars().all()
    statuses: dict[str, set[str | None]] = {}
    for found in rows:
        if not found:
            continue
        dispute = dispute_from_json(found)
        statuses.setdefault(dispute.dispute_id, set()).add(dispute.dispute_status)
    return any(
        not (seen & DISPUTE_DECIDED)
        and not all((status or "").startswith(DISPUTE_INQUIRY) for status in seen)
        for seen in statuses.values()
    )


def plan_of(transfers: list[NewTransfer], **more: Any) -> dict[str, Any]:
    return {
        "transfers": [str(t.id) for t in transfers],
        "fee": sum(t.amount or 0 for t in transfers if t.code == "refund_fee"),
        **more,
    }


def _transfer(
    refund: Refund,
    key: str,
    amount: int,
    unit: str,
    debit: uuid.UUID,
    credit: uuid.UUID,
    code: str,
    kind: TransferKind,
) -> NewTransfer:
    return NewTransfer(
        id=derived_id("refund", refund.id, key),
        amount=amount,
        unit=unit,
        debit_account_id=debit,
        credit_account_id=credit,
        kind=kind,
        code=code,
        reference=f"refund:{refund.id}",
    )


async def money_back(
    session: AsyncSession, order: Order, refund: Refund, *, kind: TransferKind
) -> list[NewTransfer]:
    """The money of a refund going back out through the provider's clearing account: from
    revenue (sale and fee) for a credited order, from `unapplied` for an uncredited one — or,
    once finance put that money on the line's wallet, from `funding` (the operator's: a refund
    made at the provider afterwards; finance takes it back from the wallet, if it must, with an
    adjustment, as for a credited order's units)."""
    r, shard = refund.amount, chart.shard_of(order.id)  # the accounts the order used
    if order.fulfilled_at is None:
        clearing = chart.clearing(order.provider, refund.currency, shard)
        if await applied_to_wallet(session, order):
            source = chart.funding(refund.currency)
        else:
            source = chart.unapplied(refund.currency, shard)
        await ensure_accounts(session, [clearing, source])
        return [
            _transfer(refund, "unapplied", r, refund.currency, source.id, clearing.id,
                      "refund", kind)
        ]
    total = order.total
    others = (
        await session.execute(
            select(Refund).where(
                Refund.order_id == order.id,
                Refund.state != RefundState.failed.value,
                Refund.id != refund.id,
            )
        )
    ).scalars().all()
    done = [x for x in others if x.state == RefundState.succeeded.value]
    if refund.requested_by.startswith(PROVIDER):
        # Money the provider gave back without us (a dispute lost…) is split against what is
        # done only: a refund of ours still held may yet be refused, or complete past what was
        # paid (`_past_what_was_paid`) — the fee it held would then never come back.
        others = done
    previous_fee = sum(int((x.plan or {}).get("fee", 0)) for x in others)
    if sum(x.amount for x in done) + r >= total:
        # All that the done refunds left (the last of the money; or ours completing past what
        # was paid, for what was left of it): all the fee they did not give back.
        done_fee = sum(int((x.plan or {}).get("fee", 0)) for x in done)
        fee_back = max(0, min(r, order.fee - done_fee))
    elif sum(x.amount for x in others) + r >= total:
        # The last of the money: all the fee not given back yet, whatever the parts' rounding
        # did (700 + 700 + 719 of 2,119 with a fee of 119 gave back 118 of it, and 2,001 of
        # sales for 2,000 sold) — never more than the part itself.
        fee_back = max(0, min(r, order.fee - previous_fee))
    else:
        # The fee's share of r, rounded half up, within what the other parts left: at least
        # what r takes beyond the sale left, at most the fee left. Rounded alone, five parts of
        # 8 of 2,119 (no fee each) then 2,078 (117) gave back 1,961 of a sale of which 1,960
        # were left, and the last cent was refused as a sale of −1.
        share, rest = divmod(order.fee * r, total)
        proportional = share + (1 if rest * 2 >= total else 0)
        previous_sale = sum(x.amount for x in others) - previous_fee
        least = max(0, r - (total - order.fee - previous_sale))
        most = max(0, min(r, order.fee - previous_fee))
        fee_back = min(most, max(least, proportional))
    sales_back = r - fee_back
    clearing = chart.clearing(order.provider, order.currency, shard)
    sales, fees = chart.sales(order.currency, shard), chart.fees(order.currency, shard)
    await ensure_accounts(session, [clearing, sales, fees])
    transfers = []
    if sales_back:
        transfers.append(
            _transfer(refund, "sale", sales_back, order.currency, sales.id, clearing.id,
                      "refund", kind)
        )
    if fee_back:
        transfers.append(
            _transfer(refund, "fee", fee_back, order.currency, fees.id, clearing.id,
                      "refund_fee", kind)
        )
    return transfers


async def _clawback(
    session: AsyncSession, order: Order, refund: Refund, *, full: bool
) -> list[NewTransfer]:
    """The pending transfers that take back the unused share of what the order granted (see
    the module's policy)."""
    r, total, shard = refund.amount, order.total, chart.shard_of(order.id)
    line = await session.get(Line, order.line_id, with_for_update=True)
    assert line is not None
    source = f"order:{order.id}"
    snapshot = order.plan_snapshot
    transfers = []
    pending = TransferKind.pending
    for i, grant in enumerate(snapshot.get("buckets", [])):
        account = await session.get(LedgerAccount, bucket_id(source, i))
        if account is None:
            continue
        left = account.credits_posted - account.debits_posted - account.debits_pending
        share = left if full else min(left, math.ceil(int(grant["amount"]) * r / total))
        if share > 0:
            issuance = chart.issuance(grant["unit"], shard)
            transfers.append(
                _transfer(refund, f"bucket:{i}", share, grant["unit"], account.id, issuance.id,
                          "clawback", pending)
            )
    wallet_credit = int(snapshot.get("wallet_credit", {}).get(line.currency, 0))
    if wallet_credit:
        wallet = await session.get(LedgerAccount, line.wallet_account_id)
        assert wallet is not None
        available = wallet.credits_posted - wallet.debits_posted - wallet.debits_pending
        # The wallet is the line's, not the order's: what is left of the credit to take back is
        # what the order granted less what its other refunds took (or hold), never the wallet's
        # other money (a refund of the rest took the whole credit a second time).
        left = wallet_credit - await _wallet_taken(session, order, refund)
        share = min(available, left, left if full else math.ceil(wallet_credit * r / total))
        if share > 0:
            funding = chart.funding(line.currency, shard)
            await ensure_accounts(session, [funding])
            transfers.append(
                _transfer(refund, "wallet", share, line.currency, wallet.id, funding.id,
                          "clawback", pending)
            )
    return transfers


async def _wallet_taken(session: AsyncSession, order: Order, refund: Refund) -> int:
    """What the order's other refunds, done or on their way, took (or hold) of its wallet
    credit: their `wallet` clawbacks (a failed refund's was voided: it took nothing)."""
    others = (
        await session.execute(
            select(Refund.id).where(
                Refund.order_id == order.id,
                Refund.state != RefundState.failed.value,
                Refund.id != refund.id,
            )
        )
    ).scalars().all()
    if not others:
        return 0
    ids = [derived_id("refund", other, "wallet") for other in others]
    taken = (
        await session.execute(
            select(func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
                LedgerTransfer.id.in_(ids)
            )
        )
    ).scalar_one()
    return int(taken)


async def complete_refund(
    session: AsyncSession,
    order_id: uuid.UUID,
    result: RefundResult,
    now: datetime,
    *,
    note: str | None = None,
    zone: str = UTC_ZONE,
) -> str:
    """Apply the provider's answer about one of our refunds (once); returns what happened —
    `unknown_refund` for a refund that is not ours. `note`: finance's note on a refused refund
    when it was not the provider that refused (a job given up on in the back office). `zone`:
    the operator's time zone (`SIMCHARGE_OPERATOR_TIMEZONE`), whose year numbers a done
    refund's credit note (a refusal numbers nothing: the back office's discarded job leaves
    it out)."""
    refund = (
        await session.execute(
            select(Refund)
            .where(Refund.order_id == order_id, Refund.reference == result.refund_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if refund is None:
        return UNKNOWN_REFUND  # not ours: `reversals.apply_refund_news` records it
    if refund.state != RefundState.pending.value:
        return "already"
    if result.state is ProviderRefundState.pending:
        # The provider has answered: from now on its refund is only read (`query_refund`).
        refund.provider_refund_id = result.provider_refund_id or refund.provider_refund_id
        return "pending"
    order = await session.get(Order, order_id, with_for_update=True)
    assert order is not None
    ids = [uuid.UUID(t) for t in (refund.plan or {}).get("transfers", [])]
    succeeded = result.state is ProviderRefundState.succeeded
    line = None
    if not succeeded and ids and order.fulfilled_at is not None:
        # The voids give the line back what they held: locked first (a line before its
        # accounts, as a top-up and termination take them), so it is not terminated meanwhile.
        line = await session.get(Line, order.line_id, with_for_update=True)
    refund.completed_at = now
    refund.provider_refund_id = result.provider_refund_id
    if not succeeded:
        await post_transfers(session, [_end(refund, pid, None) for pid in ids], now=now)
        refund.state, refund.error = RefundState.failed.value, f"{result.raw or 'refused'}"[:500]
        flag_order(order, Attention.refund_failed, note or f"refund {refund.reference} refused")
        if line is not None and line.state == LineState.terminated.value:
            await _forfeit_on_terminated_line(session, line, refund, now)
        return "refund_failed"
    refund.state = RefundState.succeeded.value
    held = await _held_codes(session, ids)
    left = max(0, paid_of(order) - order.refunded_amount)
    if refund.amount > left:
        return await _past_what_was_paid(session, order, refund, ids, held, left, now, zone)
    # Each posted under the code it was held with (`refund`, `refund_fee`, `clawback`).
    await post_transfers(session, [_end(refund, pid, held.get(pid, "refund")) for pid in ids], now=now)
    order.refunded_amount += refund.amount
    refunded_state(order)
    # The receipt stays as issued; the refund gets its own credit note, numbered now — in this
    # transaction, under the refund's lock, so a completion arriving twice numbers it once.
    await issue_receipt_number(session, order.id, zone=zone)
    credit_note = await issue_credit_note(session, refund.id, now, zone=zone)
    await tell_payer_of_refund(session, order, refund, credit_note)
    return "refunded"


MONEY_CODES = ("refund", "refund_fee")
"""The codes of a refund's transfers that give money back (`money_back`); its others take back
what the order granted (`clawback`)."""


async def _held_codes(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The code each of a refund's pending transfers was made with. (Until the fifteenth review
    round every one was posted as `refund`: the fee's share and the clawbacks lost their
    codes in the ledger once the refund was done.)"""
    if not ids:
        return {}
    rows = await session.execute(
        select(LedgerTransfer.id, LedgerTransfer.code).where(LedgerTransfer.id.in_(ids))
    )
    return {transfer_id: code for transfer_id, code in rows.all()}


def _end(refund: Refund, pending_id: uuid.UUID, code: str | None) -> NewTransfer:
    """The end of one of a refund's holds: posted under the code it was held with (`code`), or
    voided (None: `refund_voided`)."""
    return NewTransfer(
        id=derived_id("refund-end", refund.id, pending_id),
        kind=TransferKind.void_pending if code is None else TransferKind.post_pending,
        pending_id=pending_id,
        code=code or "refund_voided",
        reference=f"refund:{refund.id}",
    )


async def _past_what_was_paid(
    session: AsyncSession,
    order: Order,
    refund: Refund,
    ids: Sequence[uuid.UUID],
    held: dict[uuid.UUID, str],
    left: int,
    now: datetime,
    zone: str,
) -> str:
    """One of our refunds done at the provider for more than was left of the payment: what
    went back meanwhile — a dispute lost while it was held (the bank gave the payer the money,
    `reversals.record_lost_dispute`), a refund at the provider — took the rest. The order is
    never refunded past what was paid: of this refund only `left` is a refund (its money back
    like any, split anew, a credit note for it alone); the provider paid the payer the rest
    twice, which is the operator's loss — `clearing → loss:disputes:<CUR>`, code
    `dispute_loss`, as what a lost dispute takes beyond what was left. What the refund held of
    the line is taken as asked. The payer is not sent "your refund" (the order's money went
    back through a dispute or outside us: finance's call), and the order is flagged for finance:
    `chargeback` when a dispute or a reversal took the rest, else `provider_refund` — the payer
    was refunded at the provider's dashboard too (until round 17 it read `chargeback` then).
    The ledger is the same either way: the provider paid it out of the clearing account.

    The alternative — a lost dispute counting our refunds still held in what it leaves — makes
    a refund refused afterwards re-split the dispute (part of its loss a refund again): done at
    completion, a refused refund voids as any other and nothing is re-split."""
    asked, over = refund.amount, refund.amount - left
    codes = {pid: held.get(pid, "refund") for pid in ids}
    ends = [_end(refund, pid, code) for pid, code in codes.items() if code not in MONEY_CODES]
    ends += [_end(refund, pid, None) for pid, code in codes.items() if code in MONEY_CODES]
    await post_transfers(session, ends, now=now)
    refund.amount = left  # what it refunded of the payment: the rest is in its plan
    within = []
    if left:
        within = [
            dataclasses.replace(t, id=derived_id("refund-within", refund.id, t.id))
            for t in await money_back(session, order, refund, kind=TransferKind.posted)
        ]
    currency = refund.currency
    clearing = chart.clearing(order.provider, currency, chart.shard_of(order.id))
    loss = chart.dispute_losses(currency)
    await ensure_accounts(session, [clearing, loss])
    beyond = NewTransfer(
        id=derived_id("refund-beyond", refund.id),
        amount=over,
        unit=currency,
        debit_account_id=loss.id,
        credit_account_id=clearing.id,
        code="dispute_loss",
        reference=f"refund:{refund.id}",
    )
    await post_transfers(session, [*within, beyond], now=now)
    refund.plan = {
        **plan_of(within),
        "request": (refund.plan or {}).get("request"),
        "transfers": [str(pid) for pid in ids] + [str(t.id) for t in within],
        "asked": asked,
        "beyond_paid": over,
        # Nothing of it a refund: no credit note (`service.issue_credit_note` numbers a refund
        # whose money is posted as one).
        "posted": left > 0,
    }
    order.refunded_amount += left
    refunded_state(order)
    if await _gone_back_by_dispute(session, order):
        flag_order(
            order,
            Attention.chargeback,
            f"refund {refund.reference} done at the provider for {shown(asked, currency)} "
            f"after the payment had gone back (a dispute lost, a refund at the provider): "
            f"{shown(over, currency)} beyond what was paid, recorded as the operator's loss",
        )
    else:
        # No dispute in it: someone refunded the payer at the provider (its dashboard) while
        # ours was on its way. Finance must read that, not "chargeback" (round 17).
        flag_order(
            order,
            Attention.provider_refund,
            f"refund {refund.reference} done at the provider for {shown(asked, currency)} "
            f"after the payment had been refunded at the provider without us: "
            f"{shown(over, currency)} beyond what was paid (the payer was refunded twice), "
            f"recorded as the operator's loss",
        )
    if left:
        await issue_receipt_number(session, order.id, zone=zone)
        await issue_credit_note(session, refund.id, now, zone=zone)
    return "refunded"


def names_a_reversal(reason: str | None) -> bool:
    """A provider refund recorded from a reversal or a dispute (its `reason` is the event type
    or the status word it came in: `PAYMENT.CAPTURE.REVERSED`, a status `REVERSED`, `dispute
    du_… lost`)."""
    words = (reason or "").lower()
    return "reversed" in words or "dispute" in words


async def _gone_back_by_dispute(session: AsyncSession, order: Order) -> bool:
    """Whether a chargeback took part of the payment back: a lost dispute recorded as a refund
    by the provider (its key names the dispute, `reversals.record_lost_dispute`), a reversal
    the provider settled (its reason says so), or what a lost dispute took beyond what was left
    (`reversals.dispute_loss`). Otherwise what went back outside us was a refund at the
    provider: finance is told so, not "chargeback"."""
    by_provider = await session.execute(
        select(Refund.request_key, Refund.reason).where(
            Refund.order_id == order.id,
            Refund.requested_by.startswith(PROVIDER),
            Refund.state == RefundState.succeeded.value,
        )
    )
    if any(":dispute:" in (key or "") or names_a_reversal(why) for key, why in by_provider):
        return True
    lost = await session.execute(
        select(LedgerTransfer.id)
        .where(LedgerTransfer.reference == f"order:{order.id}:dispute")
        .limit(1)
    )
    return lost.first() is not None


async def tell_payer_of_refund(
    session: AsyncSession, order: Order, refund: Refund, credit_note: str | None
) -> None:
    """The payer's notice of a done refund (ours, or one made at the provider: `reversals`):
    `order.refunded` by SMS and in the portal now, and by e-mail with the credit note attached
    (`CREDIT_NOTE_JOB`, which renders it first); of a payment never credited (no credit note),
    by every channel now. Once per refund: its job and notice are keyed by the refund."""
    params = {
        "amount": refund.amount,
        "currency": refund.currency,
        "msisdn": order.msisdn,
        "receipt": order.receipt_number,
        "credit_note": credit_note,
    }
    channels: tuple[str, ...] = CHANNELS
    if credit_note is not None:
        channels = tuple(c for c in CHANNELS if c != "email")
        await enqueue(
            session,
            CREDIT_NOTE_JOB,
            {"refund_id": str(refund.id)},
            dedupe_key=f"{CREDIT_NOTE_JOB}:{refund.id}",
        )
    await notify(
        session,
        account_id=order.account_id,
        template="order.refunded",
        params=params,
        channels=channels,
        line_id=order.line_id,
        dedupe_key=f"order.refunded:{refund.id}",
    )


async def _forfeit_on_terminated_line(
    session: AsyncSession, line: Line, refund: Refund, now: datetime
) -> None:
    """A refused refund's voided holds give back to the line what they took of the order's
    grant. A terminated line keeps nothing: that goes where termination sent the rest
    (`expiry:<unit>`, `expiry:<CUR>`; `lifecycle.service._forfeit`), by transfers whose ids
    derive from the refund, so that a second pass writes nothing twice."""
    batch = await forfeit_transfers(
        session, [line.id], lambda account: ("refund-forfeit", refund.id, account)
    )
    if batch:
        await post_transfers(session, batch, now=now)


def refunded_state(order: Order) -> None:
    """The order's state once a refund is done. Credited: `refunded` when all that was paid is
    refunded, else `partially_refunded`. Never credited (`paid`): `refunded` when all that was
    paid is refunded — nothing was credited, so nothing is taken back, and nothing is left to
    credit: it no longer awaits credit; still `paid` while part of the money is held."""
    whole = order.refunded_amount >= paid_of(order)
    if order.fulfilled_at is not None:
        order.state = (OrderState.refunded if whole else OrderState.partially_refunded).value
    elif whole and order.state == OrderState.paid.value:
        order.state = OrderState.refunded.value


async def credit_notes_of(
    session: AsyncSession, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Refund]]:
    """The refunds of these orders that have a credit note, oldest first, by order (the
    portal's order page and "My orders" link them beside the receipt)."""
    found: dict[uuid.UUID, list[Refund]] = {}
    ids = list(order_ids)
    for start in range(0, len(ids), 1000):
        rows = await session.execute(
            select(Refund)
            .where(
                Refund.order_id.in_(ids[start : start + 1000]),
                Refund.credit_note_number.is_not(None),
            )
            .order_by(Refund.completed_at, Refund.id)
        )
        for refund in rows.scalars():
            found.setdefault(refund.order_id, []).append(refund)
    return found


def refund_summary(refund: Refund) -> dict[str, Any]:
    return {
        "id": str(refund.id),
        "reference": refund.reference,
        "credit_note_number": refund.credit_note_number,
        "amount": refund.amount,
        "currency": refund.currency,
        "state": refund.state,
        "reason": refund.reason,
        "created_at": refund.created_at.isoformat(),
        "completed_at": refund.completed_at.isoformat() if refund.completed_at else None,
    }
