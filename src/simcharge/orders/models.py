"""Orders, their payment attempt, what providers told us, refunds, receipts."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7


class OrderState(StrEnum):
    pending = "pending"
    """Created; waiting for the payer and the provider."""
    paid = "paid"
    """The money is taken but nothing was credited (a mismatch, an unusable line): see
    `attention`; finance credits or refunds."""
    fulfilled = "fulfilled"
    """Paid and credited: the plan's money and units are on the line."""
    failed = "failed"
    """The provider declined the payment."""
    cancelled = "cancelled"
    """Cancelled by the payer (closed at the provider first)."""
    expired = "expired"
    """Not paid in time (closed at the provider first)."""
    refunded = "refunded"
    """Paid, then wholly refunded: fulfilled first, or never credited (`fulfilled_at` is None:
    nothing to take back)."""
    partially_refunded = "partially_refunded"
    """Fulfilled, then partly refunded."""


OPEN_STATES = (OrderState.pending,)
CLOSED_UNPAID = (OrderState.failed, OrderState.cancelled, OrderState.expired)


class Attention(StrEnum):
    """Why finance must look at an order."""

    amount_mismatch = "amount_mismatch"
    """The provider took another amount or currency than the order's: nothing credited."""
    late_success = "late_success"
    """Paid after it expired or was cancelled: credited anyway (the customer paid)."""
    line_unavailable = "line_unavailable"
    """Paid for a line that can no longer be credited (terminated): nothing credited."""
    refund_failed = "refund_failed"
    """The provider refused a refund."""
    provider_refund = "provider_refund"
    """Money went back to the payer at the provider without us (a refund in its dashboard, a
    reversal): recorded as a refund, nothing taken back from the line."""
    chargeback = "chargeback"
    """The payer disputed the payment with their bank: nothing moves until it is decided."""
    merchant_mismatch = "merchant_mismatch"
    """The provider's answer names another merchant than ours: nothing credited."""
    stuck_pending = "stuck_pending"
    """Still pending long after it should have been settled."""
    refund_pending = "refund_pending"
    """A refund the provider still reported pending after every follow-up: whether the money
    went back is not known (its notification may still tell)."""


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_account_id", "account_id", "created_at"),
        Index("ix_orders_line_id", "line_id", "created_at"),
        Index("ix_orders_state_expires", "state", "expires_at"),
        # The reports' and the back office's ranges of days (migration 0011).
        Index("ix_orders_created_at", "created_at"),
        Index("ix_orders_paid_at", "paid_at"),
        Index(
            "ix_orders_attention",
            "attention",
            postgresql_where=text("attention IS NOT NULL"),
            sqlite_where=text("attention IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    """Our reference at the provider (Alipay / WeChat `out_trade_no`, Stripe `client_reference_id`)."""
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    """The payer; the order is theirs (the line may be someone else's: a gift)."""
    line_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lines.id"))
    msisdn: Mapped[str] = mapped_column(String(16))
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"))
    plan_code: Mapped[str] = mapped_column(String(64))
    plan_version: Mapped[int] = mapped_column()
    plan_snapshot: Mapped[dict[str, Any]] = mapped_column()
    """The plan as it was sold: names, descriptions, grants, validity."""
    method_code: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(16))
    """The provider that serves the payment (the sandbox may stand in for another in demos)."""
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[int] = mapped_column()
    fee: Mapped[int] = mapped_column()
    total: Mapped[int] = mapped_column()
    state: Mapped[str] = mapped_column(String(20), default=OrderState.pending.value)
    language: Mapped[str] = mapped_column(String(8), default="en")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    paid_at: Mapped[datetime | None] = mapped_column()
    fulfilled_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    paid_amount: Mapped[int | None] = mapped_column()
    paid_currency: Mapped[str | None] = mapped_column(String(3))
    receipt_number: Mapped[str | None] = mapped_column(String(24), unique=True)
    receipt_issued_at: Mapped[datetime | None] = mapped_column()
    """When its receipt was issued: the moment its number was taken, under the series' counter
    lock (`orders.service.issue_receipt_number`) — the receipt's date, whose year (the
    operator's) is its number's, so numbers and dates go in the same order."""
    refunded_amount: Mapped[int] = mapped_column(default=0)
    attention: Mapped[str | None] = mapped_column(String(24))
    attention_note: Mapped[str | None] = mapped_column(Text)


class PaymentStatusValue(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    expired = "expired"


class Payment(Base):
    """The attempt at the provider for an order (one per order)."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_ref"),
        # A provider's payment id names one payment: an event naming another order's is
        # refused (`payments.webhooks`), and the database refuses it too.
        Index(
            "uq_payments_provider_payment_id",
            "provider",
            "payment_id",
            unique=True,
            postgresql_where=text("payment_id IS NOT NULL"),
            sqlite_where=text("payment_id IS NOT NULL"),
        ),
        Index(
            "ix_payments_due",
            "next_check_at",
            postgresql_where=text("next_check_at IS NOT NULL"),
            sqlite_where=text("next_check_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), unique=True)
    provider: Mapped[str] = mapped_column(String(16))
    flow: Mapped[str] = mapped_column(String(8))
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    payment_id: Mapped[str | None] = mapped_column(String(128))
    """What refunds need: Stripe payment intent, PayPal capture, Alipay trade_no, WeChat transaction."""
    state: Mapped[str] = mapped_column(String(12), default=PaymentStatusValue.pending.value)
    redirect_url: Mapped[str | None] = mapped_column(Text)
    qr_payload: Mapped[str | None] = mapped_column(Text)
    checkout_expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_check_at: Mapped[datetime | None] = mapped_column()
    """When the provider is asked again: pending payments until they settle, closed ones for a
    while after closing (a late payment, `payments.service.LATE_PAYMENT_WINDOW`); else None."""
    checks: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class ProviderEvent(Base):
    """A verified notification, stored as delivered before it is processed (in the same
    transaction; if processing fails, alone); one per (provider, event id)."""

    __tablename__ = "provider_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index("ix_provider_events_order_id", "order_id", "received_at"),
        Index(
            "ix_provider_events_unprocessed",
            "received_at",
            postgresql_where=text("processed_at IS NULL"),
            sqlite_where=text("processed_at IS NULL"),
        ),
        # The notifications that matched no order, waiting or settled, newest first
        # (`backoffice.provider_events`): a few among every notification ever received.
        Index(
            "ix_provider_events_unmatched",
            "outcome",
            "received_at",
            "id",
            postgresql_where=text("outcome = 'unmatched' OR outcome = 'unmatched_settled'"),
            sqlite_where=text("outcome = 'unmatched' OR outcome = 'unmatched_settled'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"))
    body: Mapped[str | None] = mapped_column(Text)
    """The body exactly as delivered (every provider's is UTF-8 text; WeChat Pay's resource still
    encrypted). Secrets are blanked only where the provider puts one in a body: Stripe's
    `client_secret` (`providers._common.SECRET_FIELDS`)."""
    headers: Mapped[dict[str, str] | None] = mapped_column()
    """The headers its signature depends on (and its content type), as delivered."""
    payload: Mapped[dict[str, Any]] = mapped_column()
    """The notification decoded (WeChat Pay's resource decrypted), secrets removed."""
    status: Mapped[dict[str, Any] | None] = mapped_column()
    """The payment status it reports, as verified at receipt (`payments.codec`)."""
    refund: Mapped[dict[str, Any] | None] = mapped_column()
    """A refund it reports (ours, or one made at the provider)."""
    dispute: Mapped[dict[str, Any] | None] = mapped_column()
    """A chargeback it reports (the payer disputed the payment with their bank)."""
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column()
    outcome: Mapped[str | None] = mapped_column(String(64))


class RefundState(StrEnum):
    pending = "pending"
    """Asked of the provider; units and credit held back (pending ledger transfers)."""
    succeeded = "succeeded"
    failed = "failed"


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (Index("ix_refunds_order_id", "order_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    """Our refund id at the provider (Alipay out_request_no, WeChat out_refund_no)."""
    amount: Mapped[int] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(12), default=RefundState.pending.value)
    provider_refund_id: Mapped[str | None] = mapped_column(String(128))
    requested_by: Mapped[str] = mapped_column(String(80))
    request_key: Mapped[str | None] = mapped_column(String(220), unique=True)
    """`requested_by` + the request's Idempotency-Key: asking twice refunds once."""
    plan: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The pending ledger transfers that claw back and pay back (posted on success)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    credit_note_number: Mapped[str | None] = mapped_column(String(24), unique=True)
    """Its credit note's number (`C2026-000001`), given once the refund is done and its money
    posted, for an order that has a receipt (`orders.service.issue_credit_note`); a failed refund has
    none."""
    credit_note_issued_at: Mapped[datetime | None] = mapped_column()
    """When its credit note was issued: the moment its number was taken, under the series'
    counter lock — the credit note's date and its number's year. Later than `completed_at` for
    a refund made at the provider reported before its payment: its money, and its credit note,
    come when the payment is known (`reversals.settle_provider_refunds`)."""


class IdempotencyKey(Base):
    """A client's `Idempotency-Key`, the request it came with and the order it made: a retry
    with the same key and request gets that order again."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("account_id", "key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReceiptCounter(Base):
    """Gapless receipt numbers: one row per year (`R2026-000001`), incremented when the receipt
    is issued (`orders.service.issue_receipt_number`, the worker's job), not when the order is
    credited: numbering is then never the bottleneck of fulfilment. Credit notes count in rows of
    their own (`credit_note:<year>`, `C2026-000001`), in the transaction that completes the
    refund (`orders.service.issue_credit_note`)."""

    __tablename__ = "receipt_counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


class ReceiptDocument(Base):
    """A rendered receipt (PDF), kept: rendering embeds a 16 MB CJK font and takes a while."""

    __tablename__ = "receipt_documents"

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    revision: Mapped[int] = mapped_column()
    """0: the receipt as issued — what it says never changes, a refund has its own credit note
    (`CreditNoteDocument`). Before migration 0014 a refund rendered the receipt again with the
    order's refunded amount as its revision: such a kept receipt is not the one issued, and is
    rendered again as issued (`receipts.stored_receipt`)."""
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CreditNoteDocument(Base):
    """A rendered credit note (PDF) of a refund, kept per language: like a receipt, it never
    changes once issued."""

    __tablename__ = "credit_note_documents"

    refund_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("refunds.id"), primary_key=True)
    language: Mapped[str] = mapped_column(String(8), primary_key=True)
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxPayment(Base):
    """The sandbox provider's own record of a payment (what a real PSP keeps on its side)."""

    __tablename__ = "sandbox_payments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    amount: Mapped[int] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(12), default="open")
    """open, paid, failed, cancelled, expired."""
    return_url: Mapped[str] = mapped_column(Text)
    cancel_url: Mapped[str] = mapped_column(Text)
    notify_url: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8), default="en")
    expires_at: Mapped[datetime] = mapped_column()
    refunded: Mapped[int] = mapped_column(default=0)
    refunds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Its refunds by our refund id, each its amount: one refund id is refunded once, and is
    what `SandboxProvider.query_refund` reads."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column()
