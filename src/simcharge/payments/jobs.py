"""The worker's payment jobs: reconciliation, refunds, receipts and credit notes, and the sandbox's
webhooks."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.kit.clock import utcnow
from simcharge.notifications.jobs import send_message
from simcharge.notifications.transports import Attachment
from simcharge.orders.fulfilment import RECEIPT_JOB, issue_receipt_number
from simcharge.orders.models import Attention, Order, Refund, RefundState
from simcharge.orders.receipts import credit_note_filename, credit_note_for, filename, receipt_for
from simcharge.orders.refunds import (
    CREDIT_NOTE_JOB,
    REFUND_JOB,
    applied_to_wallet,
    complete_refund,
    shown,
)
from simcharge.orders.reversals import known_refunds
from simcharge.orders.service import flag_order, payment_of
from simcharge.payments.providers import (
    PaymentProvider,
    ProviderError,
    RefundRequest,
    RefundResult,
)
from simcharge.payments.providers import RefundState as ProviderRefundState
from simcharge.payments.registry import Providers
from simcharge.payments.sandbox import DELIVER_WEBHOOK, sign
from simcharge.payments.service import check_order, reconcile, urls
from simcharge.payments.webhooks import CAPTURE_JOB
from simcharge.worker.registry import JobContext, PermanentJobError, every, job
from simcharge.worker.service import enqueue

log = structlog.get_logger("simcharge.payments")

REFUND_FOLLOW_UP_LONGEST = timedelta(hours=4)
"""The longest wait between two reads of a refund the provider still reports as pending."""
REFUND_FOLLOW_UPS = 66
"""How many times such a refund is read again (`refund_follow_up_delay` apart): 2, 4, 8 … 128
minutes, then every 4 hours: for 10 days and 14 minutes after its first answer, longer than the
delays the providers document (README "Refunds"). Then finance is told (`refund_pending`)."""


RESEND_CHECK_AFTER = timedelta(minutes=15)
"""A refund asked for longer ago than this and never answered — a retry after long failures, or a
refund still pending in a restored backup — is looked for at the provider before it is sent
(`find_refund`): an idempotency key does not last (Stripe prunes keys after 24 hours, PayPal keeps
a `PayPal-Request-Id` 45 days), and restored books do not know a refund made after the backup."""
HELD = "refund_held"
"""The `code` of a refund not sent because the provider reports more refunded than we know of."""


def refund_follow_up_delay(follow_up: int) -> timedelta:
    """How long after the answer before it the `follow_up`th read (from 1) of a refund still
    pending is made: 2 ** follow_up minutes, at most `REFUND_FOLLOW_UP_LONGEST`."""
    return min(REFUND_FOLLOW_UP_LONGEST, timedelta(minutes=2 ** min(max(follow_up, 1), 16)))


REFUND_FOLLOW_UP_SPAN = sum(
    (refund_follow_up_delay(n) for n in range(1, REFUND_FOLLOW_UPS + 1)), timedelta()
)
"""From a refund's first "pending" answer to its last follow-up, at the earliest: 10 days, 14 min."""


def providers_of(ctx: JobContext) -> Providers:
    """The worker's providers, made once and shared by its jobs (PayPal's token is cached)."""
    found = ctx.shared.get("providers")
    if found is None:
        found = ctx.shared["providers"] = Providers(ctx.settings, ctx.http, ctx.db)
    assert isinstance(found, Providers)
    return found


def _uuid(payload: dict[str, Any], key: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(payload[key]))
    except (KeyError, ValueError) as exc:
        raise PermanentJobError(f"payload without a valid {key}") from exc


@every("payments.reconcile", timedelta(seconds=30))
async def reconcile_payments(ctx: JobContext, _payload: dict[str, Any]) -> None:
    """Ask again about pending payments that are due, expire overdue orders, apply stored
    events whose processing failed."""
    providers = providers_of(ctx)
    while await reconcile(ctx.db, providers) >= 100:
        pass


@job(CAPTURE_JOB)
async def capture(ctx: JobContext, payload: dict[str, Any]) -> None:
    """The payer approved (PayPal): take the money and credit the order."""
    order_id = _uuid(payload, "order_id")
    async with ctx.db.read() as s:
        order = await s.get(Order, order_id)
    if order is None:
        raise PermanentJobError(f"no order {order_id}")
    if order.state == "pending":
        await check_order(ctx.db, providers_of(ctx), order_id, source="approval", capture=True)


@job(REFUND_JOB)
async def refund(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Ask the provider to refund; apply its answer. A refund it reports as pending is read
    again later (`query_refund`), never asked for again: an idempotency key only makes a
    repetition of a request that got no answer harmless, and only while the provider keeps it
    (Stripe prunes keys after 24 hours; a repetition after that is a second refund). So a refund
    asked for long ago (`RESEND_CHECK_AFTER`: retried for long, or pending in a restored backup)
    is first looked for at the provider (`_looked_for`): found, it is adopted; the provider
    reporting more refunded than we know of, it is not sent but failed and flagged for finance."""
    refund_id = _uuid(payload, "refund_id")
    follow_up = int(payload.get("follow_up", 0))
    async with ctx.db.read() as s:
        row = await s.get(Refund, refund_id)
        if row is None:
            raise PermanentJobError(f"no refund {refund_id}")
        if row.state != RefundState.pending.value:
            return
        order = await s.get(Order, row.order_id)
        assert order is not None
        payment = await payment_of(s, order.id)
    provider = providers_of(ctx).named(order.provider)
    if provider is None:
        raise PermanentJobError(f"provider {order.provider} is not configured")
    request = RefundRequest(
        reference=order.reference,
        payment_id=payment.payment_id or payment.provider_ref or "",
        refund_id=row.reference,
        amount=row.amount,
        total=order.paid_amount if order.paid_amount is not None else order.total,
        currency=row.currency,
        # Not the refund's `reason`: staff's own note (kept with the refund, in the back office
        # and the audit), which PayPal (`note_to_payer`), WeChat Pay and Alipay show the payer.
        reason=None,
        notify_url=urls(ctx.settings, order)[2],
        provider_ref=payment.provider_ref,
    )
    # A follow-up is only ever scheduled after an answer; the provider's id is kept from one.
    answered = follow_up > 0 or row.provider_refund_id is not None
    result: RefundResult | None = None
    held: str | None = None
    try:
        if answered:
            result = await provider.query_refund(request, row.provider_refund_id)
        else:
            if utcnow() - row.created_at >= RESEND_CHECK_AFTER:
                result, held = await _looked_for(ctx, provider, request, row)
            if result is None and held is None:
                result = await provider.refund(request)
    except ProviderError as exc:
        if exc.transient:
            raise  # tried again with the same payload: a refund that got no answer is repeated
        if answered:
            # The provider accepted this refund: a read it refuses says nothing of the money,
            # which is not voided on it. Read again at the next follow-up.
            log.warning("payments.refund_unreadable", refund=row.reference, provider_error=exc.code)
            result = None
        else:
            log.warning("payments.refund_refused", refund=row.reference, provider_error=exc.code)
            result = RefundResult(
                refund_id=row.reference,
                provider_refund_id=None,
                state=ProviderRefundState.failed,
                amount=row.amount,
                currency=row.currency,
                raw={"code": exc.code, "message": exc.message},
            )
    note = None
    if held is not None:
        log.error("payments.refund_held", refund=row.reference, why=held)
        note = f"refund {row.reference} not sent: {held}"
        result = RefundResult(
            refund_id=row.reference,
            provider_refund_id=None,
            state=ProviderRefundState.failed,
            amount=row.amount,
            currency=row.currency,
            raw={"code": HELD, "message": held},
        )
    if result is not None and result.refund_id != row.reference:
        log.error("payments.refund_answer_mismatch", refund=row.reference, got=result.refund_id)
        result = None

    async def apply(s: AsyncSession) -> None:
        """The answer, and the next follow-up of a refund still pending, in one transaction:
        the provider's id and the follow-up that only reads are kept together."""
        if (
            result is not None
            and await complete_refund(
                s, order.id, result, utcnow(), note=note, zone=ctx.settings.operator_timezone
            )
            != "pending"
        ):
            return
        if follow_up + 1 > REFUND_FOLLOW_UPS:
            log.error("payments.refund_still_pending", refund=row.reference)
            locked = await s.get(Order, order.id, with_for_update=True)
            assert locked is not None
            flag_order(
                locked,
                Attention.refund_pending,
                f"refund {row.reference} still pending at the provider after "
                f"{REFUND_FOLLOW_UPS} follow-ups over {REFUND_FOLLOW_UP_SPAN.days} days",
            )
            return
        await enqueue(
            s,
            REFUND_JOB,
            {"refund_id": str(refund_id), "follow_up": follow_up + 1},
            run_at=utcnow() + refund_follow_up_delay(follow_up + 1),
            dedupe_key=f"{REFUND_JOB}:{refund_id}:{follow_up + 1}",
            max_attempts=20,
        )

    await ctx.db.run(apply)


async def _looked_for(
    ctx: JobContext, provider: PaymentProvider, request: RefundRequest, row: Refund
) -> tuple[RefundResult | None, str | None]:
    """Before a refund asked for long ago is sent (`RESEND_CHECK_AFTER`): ours as the provider
    has it, if it has it — adopted, as its notification would be, and not made again — or why it
    must not be sent: the provider reports more refunded of the payment than our books know of
    besides this refund (a refund made after the backup these books were restored from, or one
    we never heard of), or it could not be asked. (None, None): send it. A transient error is
    raised: the job is tried again later."""
    try:
        search = await provider.find_refund(request)
    except ProviderError as exc:
        if exc.transient:
            raise
        return None, f"the provider could not be asked whether it was made ({exc.code})"
    if search.found is not None:
        log.warning(
            "payments.refund_adopted",
            refund=row.reference,
            provider_refund_id=search.found.provider_refund_id,
            state=search.found.state.value,
        )
        return search.found, None
    if search.refunded is None:
        return None, None
    async with ctx.db.read() as s:
        order = await s.get(Order, row.order_id)
        assert order is not None
        known = await known_refunds(s, order) - row.amount  # this one is pending: counted
    if search.refunded > known:
        return None, (
            f"the provider has refunded {shown(search.refunded, row.currency)} of this payment, "
            f"{shown(known, row.currency)} known here — a refund these books do not know of "
            "(made after the backup they were restored from?)"
        )
    return None, None


@job(RECEIPT_JOB)
async def receipt(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Number the receipt, render it in the payer's language, keep it, and e-mail it to them
    (when their address is verified)."""
    order_id = _uuid(payload, "order_id")
    zone = ctx.settings.operator_timezone
    if await ctx.db.run(lambda s: issue_receipt_number(s, order_id, zone=zone)) is None:
        raise PermanentJobError(f"order {order_id} was not credited: no receipt")
    async with ctx.db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        account = await s.get(Account, order.account_id)
        assert account is not None
    language = account.language
    pdf = await receipt_for(
        ctx.db, order.id, language, ctx.settings.operator_name, ctx.settings.operator_timezone
    )
    assert pdf is not None
    if not (account.email and account.email_verified_at):
        return
    params: dict[str, Any] = {
        "msisdn": order.msisdn,
        "plan": order.plan_snapshot.get("names", {}),
        "total": order.total,
        "currency": order.currency,
        "receipt": order.receipt_number,
    }
    template = "order.receipt"
    if order.fulfilled_at is None:  # the payment put on the line's balance by finance
        async with ctx.db.read() as s:
            applied = await applied_to_wallet(s, order)
        template = "order.applied"
        params.update(amount=applied, currency=order.paid_currency or order.currency)
    await send_message(
        ctx,
        "email",
        account.id,
        template,
        account.email,
        language,
        params,
        attachments=[Attachment(filename(order), "application/pdf", pdf)],
    )


@job(CREDIT_NOTE_JOB)
async def credit_note(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Render a done refund's credit note in the payer's language, keep it, and e-mail it to
    them with the refund's notice (`order.refunded`; when their address is verified). The
    refund's SMS and portal notice went out when it was done (`refunds.complete_refund`; of a
    refund made at the provider, `reversals.tell_payer_of_refund`). A credit note numbered by
    `simcharge receipts backfill-credit-notes` has no such job: its refund was told long ago."""
    refund_id = _uuid(payload, "refund_id")
    async with ctx.db.read() as s:
        refund = await s.get(Refund, refund_id)
        order = await s.get(Order, refund.order_id) if refund is not None else None
        account = await s.get(Account, order.account_id) if order is not None else None
    if refund is None or order is None or account is None:
        raise PermanentJobError(f"refund {refund_id} is not known")
    language = account.language
    pdf = await credit_note_for(
        ctx.db, refund_id, language, ctx.settings.operator_name, ctx.settings.operator_timezone
    )
    if pdf is None:
        raise PermanentJobError(f"refund {refund_id} has no credit note")
    if not (account.email and account.email_verified_at):
        return
    async with ctx.db.read() as s:  # numbered now, and the receipt it corrects with it
        refund = await s.get(Refund, refund_id)
        order = await s.get(Order, order.id)
        assert refund is not None
        assert order is not None
    await send_message(
        ctx,
        "email",
        account.id,
        "order.refunded",
        account.email,
        language,
        {
            "amount": refund.amount,
            "currency": refund.currency,
            "msisdn": order.msisdn,
            "receipt": order.receipt_number,
            "credit_note": refund.credit_note_number,
            "attached": True,
        },
        attachments=[Attachment(credit_note_filename(refund), "application/pdf", pdf)],
    )


@job(DELIVER_WEBHOOK)
async def deliver_sandbox_webhook(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Send one of the sandbox's webhooks, signed at the moment it is sent (as a provider
    does); anything but a 2xx answer is tried again later."""
    try:
        url, event = str(payload["url"]), payload["event"]
    except KeyError as exc:
        raise PermanentJobError("payload without url and event") from exc
    body = json.dumps(event, separators=(",", ":")).encode()
    secret = ctx.settings.sandbox_secret.get_secret_value()
    response = await ctx.http.post(
        url,
        content=body,
        timeout=10,
        headers={"content-type": "application/json", "sandbox-signature": sign(secret, body)},
    )
    if not response.is_success:
        raise RuntimeError(f"webhook answered {response.status_code}")
