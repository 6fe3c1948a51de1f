"""What the orders API takes and gives."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from simcharge.errors import ValidationFailed
from simcharge.kit.schemas import Money, Schema
from simcharge.kit.translations import N_
from simcharge.payments.providers import PaymentFlow


class QuoteIn(Schema):
    plan: str = Field(
        min_length=1, max_length=64, description="The plan's code", examples=["traveller-20"]
    )
    method: str = Field(
        min_length=1, max_length=32, description="The payment method's code", examples=["card"]
    )
    line_id: uuid.UUID | None = Field(default=None, description="One of my lines")
    msisdn: str | None = Field(
        default=None,
        max_length=32,
        description="Or any of the operator's numbers (a gift)",
        examples=["+14155550101"],
    )
    flow: PaymentFlow | None = Field(
        default=None,
        description="redirect (a browser page), wap (a mobile page: Alipay wap.pay, WeChat "
        "Pay H5) or qr (a code to scan: WeChat Pay Native); default: what the method does best "
        "for the browser that asks (its User-Agent: a phone gets wap for Alipay and WeChat Pay)",
    )


class OrderIn(QuoteIn):
    quote: str | None = Field(
        default=None,
        max_length=1024,
        description="The `quote` of `POST /quotes`: the order is placed only at that quote's "
        "price, fee and total, before its `expires_at` (else 409 `quote-changed` or "
        "`quote-expired`, with the new quote); without it, at the price of the moment",
    )


class PlanRef(Schema):
    code: str
    version: int
    name: str


class QuoteOut(Schema):
    plan: PlanRef
    method: str
    msisdn: str
    gift: bool = Field(description="The line is not one of mine")
    price: Money
    fee: Money
    total: Money
    expires_at: datetime
    quote: str = Field(
        description="This quote, signed: send it with `POST /orders` to pay exactly this total"
    )


class NextAction(Schema):
    type: Literal["redirect", "qr", "none"]
    url: str | None = None
    qr_payload: str | None = Field(default=None, description="What the QR code encodes")
    qr_svg: str | None = Field(default=None, description="The QR code as an SVG image")


class PaymentOut(Schema):
    provider: str
    flow: str
    state: str
    checks: int


class EventOut(Schema):
    type: str
    received_at: datetime
    outcome: str | None


class RefundOut(Schema):
    """A refund as the payer sees it: no `reason` (what staff wrote is theirs, `StaffRefundOut`)."""

    id: uuid.UUID
    reference: str
    amount: Money
    state: str
    created_at: datetime
    completed_at: datetime | None
    credit_note_number: str | None = Field(
        description="Its credit note's number (`C2026-000001`), once the refund is done, for an "
        "order that has a receipt"
    )
    credit_note_url: str | None = Field(
        description="The credit note: PDF, or JSON with `Accept: application/json`"
    )


class StaffRefundOut(RefundOut):
    reason: str | None = Field(
        description="What the staff member wrote, or what a provider's own refund was (a "
        "dispute…): internal, never shown to the payer"
    )


class OrderOut(Schema):
    id: uuid.UUID
    reference: str
    state: str
    msisdn: str
    gift: bool
    plan: PlanRef
    method: str
    price: Money
    fee: Money
    total: Money
    refunded: Money
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    fulfilled_at: datetime | None
    closed_at: datetime | None
    receipt_number: str | None
    next_action: NextAction
    payment: PaymentOut


class OrderDetailOut(OrderOut):
    events: list[EventOut]
    refunds: list[RefundOut]


class OrdersOut(Schema):
    items: list[OrderOut]
    next_before: datetime | None = Field(description="Pass as `before` for the next page…")
    next_before_id: uuid.UUID | None = Field(
        description="… with this as `before_id` (orders created at the same time)"
    )


class ReceiptOut(Schema):
    number: str
    issued_at: datetime
    order_reference: str
    operator: str
    payer: str
    msisdn: str
    plan: str
    includes: list[str]
    method: str
    price: Money
    fee: Money
    total: Money
    refunded: Money
    status: str
    pdf_url: str


class CreditNoteOut(Schema):
    """A refund's credit note: what it gave back, of the receipt it corrects (the PDF's facts)."""

    number: str
    issued_at: datetime
    receipt_number: str
    order_id: uuid.UUID
    order_reference: str
    refund_reference: str
    operator: str
    payer: str
    msisdn: str
    plan: str
    method: str
    price: Money = Field(description="Refunded of the price")
    fee: Money = Field(description="Refunded of the payment fee")
    total: Money = Field(description="All that was refunded")
    taken_back: list[str] = Field(description="What was taken back from the line")
    pdf_url: str


REASON_MAX = 500
"""The longest refund reason, trimmed (as the back office's forms: `backoffice.money`)."""


def _reason(value: str) -> str:
    """A refund's reason as the back office's form takes it: trimmed, NULs dropped, not empty,
    at most `REASON_MAX` characters (422 naming `reason`)."""
    text = value.strip().replace("\x00", "")
    if not text:
        raise ValidationFailed(N_("Give a reason."), field="reason")
    if len(text) > REASON_MAX:
        raise ValidationFailed(N_("At most {max} characters."), field="reason", max=REASON_MAX)
    return text


RefundReason = Annotated[str, Field(max_length=REASON_MAX), AfterValidator(_reason)]
"""At most `REASON_MAX` characters as sent (the form's field's bound too), then trimmed."""


class RefundIn(Schema):
    amount: int | None = Field(
        default=None,
        gt=0,
        strict=True,  # a JSON integer: `true` is not 1, nor "1e3" a thousand
        description="Minor units; omitted: everything still refundable",
    )
    reason: RefundReason = Field(
        description="Why: staff's own note (the order panel, the admin API, the audit log), "
        "never shown to the payer. Required, trimmed, 1 to 500 characters, as the back "
        "office's refund form takes it",
        examples=["Line ported out before the package was used"],
    )


class StaffOrderOut(OrderDetailOut):
    refunds: list[StaffRefundOut]  # type: ignore[assignment]  # narrower: with reasons
    account_id: uuid.UUID
    attention: str | None
    attention_note: str | None
    paid: Money | None
    refundable: Money = Field(
        description="What can still be refunded (in the currency paid): paid, less refunds done "
        "or on their way, less what was put on the line's balance (before the payment is "
        "known, of the order's total) — what the back office's refund form offers"
    )
