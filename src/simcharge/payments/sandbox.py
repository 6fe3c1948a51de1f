"""The sandbox: a payment provider that simcharge runs itself, for demos, development and tests.

It behaves like a hosted-checkout PSP. Its own state lives in `sandbox_payments` (what a real
provider keeps on its side); the payer pays, declines or cancels on `/sandbox/pay/<id>`; and it
tells us by signed webhooks (`Sandbox-Signature: t=…,v1=…`, HMAC-SHA256 of `"{t}.{body}"` with
`SIMCHARGE_SANDBOX_SECRET`, as Stripe signs), sent by the outbox worker to our webhook endpoint.
Each webhook can be sent several times with random delays (`SIMCHARGE_SANDBOX_WEBHOOK_COPIES`,
`…_MAX_DELAY_SECONDS`; `make run` sends three copies up to 2 s late, and the tests of
duplicates and reordering do too), so that duplicates and reordering are part of every demo.

A real provider's state is not ours to commit: the sandbox writes its rows in transactions of
its own, never in the caller's.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database, table_of, upsert_insert
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import constant_time_equals, keyed_hash
from simcharge.orders.models import SandboxPayment
from simcharge.payments.providers._common import delivered_body, delivered_headers
from simcharge.payments.providers.base import (
    Checkout,
    CheckoutRequest,
    Notification,
    NotificationRejected,
    PaymentFlow,
    PaymentState,
    PaymentStatus,
    ProviderError,
    RefundRequest,
    RefundResult,
    RefundSearch,
    RefundState,
    WebhookReply,
)
from simcharge.payments.providers.signing import (
    parse_stripe_signature_header,
    stripe_signature,
    stripe_signature_valid,
)
from simcharge.worker.service import enqueue

NAME = "sandbox"
MERCHANT = "sandbox-merchant"
SIGNATURE_HEADER = "sandbox-signature"
TOLERANCE = timedelta(seconds=300)
DELIVER_WEBHOOK = "sandbox.deliver_webhook"

_STATES = {
    "open": PaymentState.pending,
    "paid": PaymentState.succeeded,
    "failed": PaymentState.failed,
    "cancelled": PaymentState.cancelled,
    "expired": PaymentState.expired,
}
_table = table_of(SandboxPayment)


class SandboxActionRefused(Exception):
    """The payer's action no longer applies (already paid, cancelled, expired)."""


def _status(row: SandboxPayment, now: datetime) -> PaymentStatus:
    state = _STATES[row.state]
    if state is PaymentState.pending and row.expires_at <= now:
        state = PaymentState.expired
    if state is PaymentState.succeeded and row.refunded:
        state = (
            PaymentState.refunded if row.refunded >= row.amount else PaymentState.partially_refunded
        )
    return PaymentStatus(
        state=state,
        reference=row.reference,
        provider_ref=row.id,
        payment_id=row.id,
        amount=row.amount,
        currency=row.currency,
        merchant=MERCHANT,
        paid_at=row.paid_at,
        raw={"id": row.id, "state": row.state, "refunded": row.refunded},
        refunded_amount=row.refunded or None,
    )


def _refund_result(row: SandboxPayment, refund_id: str) -> RefundResult:
    return RefundResult(
        refund_id=refund_id,
        provider_refund_id=f"rf_{refund_id}",
        state=RefundState.succeeded,
        amount=int(row.refunds[refund_id]),
        currency=row.currency,
        raw={"refunded": row.refunded},
    )


def _event(kind: str, row: SandboxPayment, now: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "id": "evt_" + secrets.token_hex(12),
        "type": kind,
        "created": int(now.timestamp()),
        "data": {
            "object": {
                "id": row.id,
                "reference": row.reference,
                "amount": row.amount,
                "currency": row.currency,
                "state": row.state,
                "refunded": row.refunded,
                "merchant": MERCHANT,
                "paid_at": row.paid_at.isoformat() if row.paid_at else None,
                **extra,
            }
        },
    }


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    """The `Sandbox-Signature` header for `body`."""
    timestamp = int(time.time()) if at is None else at
    return f"t={timestamp},v1={stripe_signature(secret, timestamp, body)}"


def page_token(settings: Settings, sandbox_id: str) -> str:
    """A token the hosted page's forms carry, so no other site can make the payer pay."""
    return keyed_hash(settings.secret_key, "sandbox-page", sandbox_id)


@dataclass
class SandboxProvider:
    """The `PaymentProvider` protocol, backed by the sandbox's own table."""

    db: Database
    settings: Settings
    name: str = NAME
    flows: frozenset[PaymentFlow] = frozenset(PaymentFlow)

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        now = utcnow()

        async def open_payment(s: AsyncSession) -> SandboxPayment:
            await s.execute(
                upsert_insert(s, _table)
                .values(
                    id="sbx_" + secrets.token_hex(12),
                    reference=request.reference,
                    amount=request.amount,
                    currency=request.currency,
                    description=request.description[:255],
                    state="open",
                    return_url=request.return_url,
                    cancel_url=request.cancel_url,
                    notify_url=request.notify_url,
                    expires_at=request.expires_at,
                    refunded=0,
                    language=request.language,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["reference"])
            )
            row = (
                await s.execute(
                    select(SandboxPayment).where(SandboxPayment.reference == request.reference)
                )
            ).scalar_one()
            return row

        row = await self.db.run(open_payment)
        if row.amount != request.amount or row.currency != request.currency:
            raise ProviderError(
                NAME,
                code="idempotency_conflict",
                transient=False,
                message="another payment already uses this reference",
            )
        url = f"{self.settings.base_url.rstrip('/')}/sandbox/pay/{row.id}"
        return Checkout(
            provider_ref=row.id,
            redirect_url=url,
            qr_payload=url if request.flow is PaymentFlow.qr else None,
            expires_at=row.expires_at,
            raw={"id": row.id},
        )

    async def _row(self, reference: str, provider_ref: str | None) -> SandboxPayment | None:
        async with self.db.read() as s:
            stmt = select(SandboxPayment).where(SandboxPayment.reference == reference)
            return (await s.execute(stmt)).scalar_one_or_none()

    async def query(self, reference: str, provider_ref: str | None) -> PaymentStatus:
        row = await self._row(reference, provider_ref)
        if row is None:
            return PaymentStatus(
                state=PaymentState.pending,
                reference=reference,
                provider_ref=None,
                payment_id=None,
                amount=None,
                currency=None,
                merchant=MERCHANT,
                paid_at=None,
                raw={},
            )
        return _status(row, utcnow())

    async def close(self, reference: str, provider_ref: str | None) -> None:
        async def close_open(s: AsyncSession) -> str | None:
            await s.execute(
                update(SandboxPayment)
                .where(SandboxPayment.reference == reference, SandboxPayment.state == "open")
                .values(state="cancelled")
            )
            return (
                await s.execute(
                    select(SandboxPayment.state).where(SandboxPayment.reference == reference)
                )
            ).scalar_one_or_none()

        if await self.db.run(close_open) == "paid":
            raise ProviderError(
                NAME, code="already_paid", transient=False, message="the payment was completed"
            )

    async def refund(self, request: RefundRequest) -> RefundResult:
        async def take_back(s: AsyncSession) -> SandboxPayment:
            row = (
                await s.execute(
                    select(SandboxPayment)
                    .where(SandboxPayment.reference == request.reference)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if row is None or row.state != "paid":
                raise ProviderError(
                    NAME,
                    code="not_paid",
                    transient=False,
                    message="only a paid payment can be refunded",
                )
            if request.refund_id in row.refunds:  # a repetition: the same refund, once
                return row
            if row.refunded + request.amount > row.amount:
                raise ProviderError(
                    NAME,
                    code="exceeds_payment",
                    transient=False,
                    message="the refunds would exceed the payment",
                )
            row.refunded += request.amount
            row.refunds = {**row.refunds, request.refund_id: request.amount}
            await _schedule(
                s,
                self.settings,
                _event(
                    "refund.succeeded",
                    row,
                    utcnow(),
                    refund_id=request.refund_id,
                    refund_amount=request.amount,
                ),
                row.notify_url,
            )
            return row

        return _refund_result(await self.db.run(take_back), request.refund_id)

    async def query_refund(
        self, request: RefundRequest, provider_refund_id: str | None
    ) -> RefundResult:
        """The refund as the sandbox keeps it (every sandbox refund succeeds at once)."""
        row = await self._row(request.reference, None)
        if row is None or request.refund_id not in row.refunds:
            raise ProviderError(
                NAME,
                code="no_such_refund",
                transient=False,
                message=f"no refund {request.refund_id} of {request.reference}",
            )
        return _refund_result(row, request.refund_id)

    async def find_refund(self, request: RefundRequest) -> RefundSearch:
        """Our refund if the sandbox made it, and everything it refunded of the payment."""
        row = await self._row(request.reference, None)
        if row is None:
            return RefundSearch(None, None)
        found = _refund_result(row, request.refund_id) if request.refund_id in row.refunds else None
        return RefundSearch(found, row.refunded)

    async def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> Notification:
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
        if header is None:
            raise NotificationRejected("bad-signature")
        try:
            timestamp, candidates = parse_stripe_signature_header(header)
        except ValueError as exc:
            raise NotificationRejected("bad-signature") from exc
        secret = self.settings.sandbox_secret.get_secret_value()
        if not stripe_signature_valid(secret, timestamp, body, candidates):
            raise NotificationRejected("bad-signature")
        if abs(now.timestamp() - timestamp) > TOLERANCE.total_seconds():
            raise NotificationRejected("stale")
        try:
            event = json.loads(body)
            obj = event["data"]["object"]
            event_id, kind = str(event["id"]), str(event["type"])
        except (ValueError, KeyError, TypeError) as exc:
            raise NotificationRejected("malformed") from exc
        if not isinstance(obj, dict):
            raise NotificationRejected("malformed", "the event's object is not an object")
        # What the sandbox sends (`_event`): amounts are integers (minor units; a JSON float or
        # a boolean would compare equal to one), ids and the currency strings, `paid_at` an ISO
        # time. Anything else is no sandbox event: not a 500, and never a credit.
        amounts = (obj.get("amount"), obj.get("refund_amount"))
        if any(type(a) is not int for a in amounts if a is not None):
            raise NotificationRejected("malformed", "an amount is not an integer")
        texts = ("id", "reference", "currency", "merchant", "refund_id")
        if any(not isinstance(obj.get(name), str | None) for name in texts):
            raise NotificationRejected("malformed", "an identifier is not a string")
        # Every event names the merchant (`_event`), a refund's as a payment's: another merchant's
        # is refused as `foreign`, as `webhooks` refuses a payment naming one (`merchant_mismatch`).
        merchant = obj.get("merchant")
        if merchant is not None and merchant != MERCHANT:
            raise NotificationRejected("foreign", f"merchant {merchant!r}")
        try:
            paid_at = datetime.fromisoformat(obj["paid_at"]) if obj.get("paid_at") else None
        except (TypeError, ValueError) as exc:
            raise NotificationRejected("malformed", "paid_at is not a time") from exc
        state = {
            "payment.succeeded": PaymentState.succeeded,
            "payment.failed": PaymentState.failed,
            "payment.cancelled": PaymentState.cancelled,
            "payment.processing": PaymentState.pending,
        }.get(kind)
        status = None
        refund = None
        if state is not None:
            status = PaymentStatus(
                state=state,
                reference=obj.get("reference"),
                provider_ref=obj.get("id"),
                payment_id=obj.get("id"),
                amount=obj.get("amount"),
                currency=obj.get("currency"),
                merchant=obj.get("merchant"),
                paid_at=paid_at,
                raw=obj,
            )
        elif kind == "refund.succeeded":
            refund = RefundResult(
                refund_id=str(obj.get("refund_id")),
                provider_refund_id=f"rf_{obj.get('refund_id')}",
                state=RefundState.succeeded,
                amount=obj.get("refund_amount") or 0,
                currency=str(obj.get("currency")),
                raw=obj,
                reference=obj.get("reference"),
                payment_id=obj.get("id"),
            )
        return Notification(
            provider=NAME,
            event_id=event_id,
            event_type=kind,
            status=status,
            refund=refund,
            raw=event,
            body=delivered_body(body),
            headers=delivered_headers(headers, (SIGNATURE_HEADER,)),
        )

    def reply(self, accepted: bool) -> WebhookReply:
        body = b'{"received": true}' if accepted else b'{"received": false}'
        return WebhookReply(200 if accepted else 400, body, "application/json")


async def _schedule(s: AsyncSession, settings: Settings, event: dict[str, Any], url: str) -> None:
    """Send `event` to `url` — `sandbox_webhook_copies` times, each after a random delay."""
    now = utcnow()
    for _ in range(settings.sandbox_webhook_copies):
        delay = random.uniform(0, settings.sandbox_webhook_max_delay_seconds)  # noqa: S311
        await enqueue(
            s,
            DELIVER_WEBHOOK,
            {"url": url, "event": event},
            run_at=now + timedelta(seconds=delay),
            max_attempts=8,
        )


async def act(db: Database, settings: Settings, sandbox_id: str, action: str) -> SandboxPayment:
    """The payer pays, declines or cancels on the hosted page; webhooks follow."""
    if action not in ("pay", "fail", "cancel"):
        raise SandboxActionRefused(action)

    async def run(s: AsyncSession) -> SandboxPayment:
        now = utcnow()
        row = (
            await s.execute(
                select(SandboxPayment).where(SandboxPayment.id == sandbox_id).with_for_update()
            )
        ).scalar_one_or_none()
        if row is None or row.state != "open" or row.expires_at <= now:
            raise SandboxActionRefused(action)
        row.state = {"pay": "paid", "fail": "failed", "cancel": "cancelled"}[action]
        if action == "pay":
            row.paid_at = now
            # A "processing" event too: with random delays it may arrive after the success.
            await _schedule(s, settings, _event("payment.processing", row, now), row.notify_url)
        kind = {
            "pay": "payment.succeeded",
            "fail": "payment.failed",
            "cancel": "payment.cancelled",
        }[action]
        await _schedule(s, settings, _event(kind, row, now), row.notify_url)
        await s.flush()
        return row

    return await db.run(run)


async def find(db: Database, sandbox_id: str) -> SandboxPayment | None:
    async with db.read() as s:
        return (
            await s.execute(select(SandboxPayment).where(SandboxPayment.id == sandbox_id))
        ).scalar_one_or_none()


def token_ok(settings: Settings, sandbox_id: str, token: str) -> bool:
    return constant_time_equals(page_token(settings, sandbox_id), token)
