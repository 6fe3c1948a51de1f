"""What every payment provider adapter offers, and the values that cross its boundary.

Amounts are always integers in the currency's minor units (`simcharge.kit.money`); each
adapter converts exactly to and from what its provider expects. Times are aware UTC datetimes.
Nothing here touches the database: the orders code decides what a status means for an order.

A `ProviderError` never says that a payment failed; only a `PaymentStatus` does. A caller that
cannot reach a provider keeps the payment as it was and asks again later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

REFERENCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{6,32}$")
"""Our order reference: fits Alipay's and WeChat Pay's `out_trade_no` and everyone's metadata."""


class PaymentFlow(StrEnum):
    """How the payer reaches the provider."""

    redirect = "redirect"
    """A hosted page in a browser (Stripe Checkout, PayPal approval, Alipay page.pay)."""
    wap = "wap"
    """A mobile web page (Alipay wap.pay, WeChat Pay H5)."""
    qr = "qr"
    """A code to show as a QR code and scan with the provider's app (WeChat Pay Native)."""


class PaymentState(StrEnum):
    """What the provider says about one payment attempt."""

    pending = "pending"
    """Not paid yet: created, waiting for the payer, approved but not captured, or processing."""
    succeeded = "succeeded"
    """The money is taken."""
    failed = "failed"
    """The payer tried and the payment was declined or failed."""
    cancelled = "cancelled"
    """Closed before it was paid (by us, the payer, or the provider)."""
    expired = "expired"
    """The attempt ran out of time without being paid."""
    refunded = "refunded"
    """It was paid and the whole amount has been refunded."""
    partially_refunded = "partially_refunded"
    """It was paid and part of the amount has been refunded."""


class RefundState(StrEnum):
    """Where one refund stands at the provider."""

    pending = "pending"
    """Accepted, the money is on its way back (or the provider has not confirmed it yet)."""
    succeeded = "succeeded"
    """The money went back to the payer."""
    failed = "failed"
    """The provider refused or gave up; nothing was refunded."""


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """One payment attempt to open at a provider."""

    reference: str
    amount: int
    currency: str
    description: str
    return_url: str
    cancel_url: str
    notify_url: str
    expires_at: datetime
    language: str
    flow: PaymentFlow
    idempotency_key: str
    client_ip: str | None = None
    placed_at: datetime | None = None
    """When the order was placed: a provider that bounds the expiry it is sent bounds it from
    this rather than from its clock, so that a retry under the same idempotency key sends the
    very same request (Stripe refuses a key reused with other parameters)."""

    def __post_init__(self) -> None:
        if not REFERENCE_PATTERN.match(self.reference):
            raise ValueError(f"reference {self.reference!r} must match {REFERENCE_PATTERN.pattern}")
        if self.amount <= 0:
            raise ValueError("amount must be positive")
        if self.expires_at.tzinfo is None:
            raise ValueError("expires_at must be an aware datetime")
        if not self.idempotency_key:
            raise ValueError("idempotency_key must not be empty")


@dataclass(frozen=True, slots=True)
class Checkout:
    """What a provider answered to a new payment attempt: where to send the payer."""

    provider_ref: str
    redirect_url: str | None
    qr_payload: str | None
    expires_at: datetime | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ListedRefund:
    """A done refund a provider lists with the payment (PayPal's order lists its capture's
    refunds): its own id, its amount in minor units, and the id we gave it if it is ours (PayPal's
    `custom_id`: our refund's reference)."""

    refund_id: str
    amount: int
    our_reference: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentStatus:
    """A payment attempt as the provider reports it (query, capture or notification)."""

    state: PaymentState
    reference: str | None
    provider_ref: str | None
    payment_id: str | None
    amount: int | None
    currency: str | None
    merchant: str | None
    paid_at: datetime | None
    raw: dict[str, Any]
    capturable: bool = False
    """PayPal: the payer approved the order; `capture()` takes the money (state stays pending)."""
    provider_state: str | None = None
    """The provider's own status word (`APPROVED`, `TRADE_CLOSED`, `NOTPAY`…), for logs and support."""
    refunded_amount: int | None = None
    """Minor units refunded so far, where the provider reports it."""
    refunds: tuple[ListedRefund, ...] = ()
    """The done refunds that make up `refunded_amount`, each with its id, where the provider
    lists them (PayPal): recorded each under its id, as its own notification is
    (`reversals.note_refunded_status`), so neither records it twice."""

    def __post_init__(self) -> None:
        # ISO 4217 codes are upper case everywhere in simcharge; a provider (or a hand-signed
        # sandbox event) saying "usd" is the same currency, not another one.
        if self.currency is not None and self.currency != self.currency.upper():
            object.__setattr__(self, "currency", self.currency.upper())


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Give back `amount` of a payment whose whole amount was `total`."""

    reference: str
    payment_id: str
    refund_id: str
    amount: int
    total: int
    currency: str
    reason: str | None
    notify_url: str | None = None
    """WeChat Pay: where to send the refund notification (else the merchant platform's setting)."""
    provider_ref: str | None = None
    """The payment attempt's id at the provider (PayPal's order, which lists its refunds)."""

    def __post_init__(self) -> None:
        if not 0 < self.amount <= self.total:
            raise ValueError("a refund must be positive and at most the payment's total")
        if not self.refund_id:
            raise ValueError("refund_id must not be empty")


@dataclass(frozen=True, slots=True)
class RefundResult:
    """One refund as the provider reports it."""

    refund_id: str
    provider_refund_id: str | None
    state: RefundState
    amount: int
    currency: str
    raw: dict[str, Any]
    reference: str | None = None
    """Our payment reference, when the provider reports it."""
    payment_id: str | None = None
    """The refunded payment (Stripe payment intent, PayPal capture, WeChat transaction)."""


@dataclass(frozen=True, slots=True)
class RefundSearch:
    """What a provider says, before a refund is (re)sent, about the refunds of its payment."""

    found: RefundResult | None
    """Our refund (`RefundRequest.refund_id`), when the provider already has it."""
    refunded: int | None
    """Minor units of the payment refunded or being refunded at the provider, by anyone (ours,
    its dashboard's) — None where the provider does not report it."""


@dataclass(frozen=True, slots=True)
class Dispute:
    """A chargeback: the payer disputed a paid payment with their bank (Stripe
    `charge.dispute.*`). The money is held by the provider until the dispute is decided."""

    dispute_id: str
    amount: int | None
    currency: str | None
    reason: str | None
    dispute_status: str | None
    payment_id: str | None
    """The disputed payment (Stripe payment intent)."""
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """A webhook or asynchronous notification whose authenticity has been verified."""

    provider: str
    event_id: str
    event_type: str
    status: PaymentStatus | None
    refund: RefundResult | None
    raw: dict[str, Any]
    """Decoded, secrets removed (WeChat Pay: the resource decrypted)."""
    body: str = ""
    """The body as delivered, as text (secrets blanked where a provider puts one in a body)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """The delivery's headers its signature depends on, and its content type."""
    dispute: Dispute | None = None


@dataclass(frozen=True, slots=True)
class WebhookReply:
    """What to answer the provider after a notification."""

    status_code: int
    body: bytes
    media_type: str


class ProviderError(Exception):
    """A provider call did not give an answer we can use.

    `transient` is true when asking again later may work (network error, timeout, 5xx, 429, a
    conflicting concurrent request); false for a refusal that will not change (bad parameters,
    authentication, a business rule). It never means the payment failed.
    """

    def __init__(
        self,
        provider_name: str,
        code: str,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
    ) -> None:
        self.provider_name = provider_name
        self.code = code
        self.message = message
        self.transient = transient
        self.status = status
        super().__init__(f"{provider_name}: {code}: {message}")

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.provider_name!r}, {self.code!r}, transient={self.transient}, "
            f"status={self.status})"
        )


REJECTION_REASONS = frozenset(
    {"bad-signature", "stale", "probe", "malformed", "unknown-key", "bad-certificate", "foreign"}
)
"""`foreign`: genuine, but another merchant's, app's or seller's (WeChat Pay's `appid`, Alipay's
`seller_id`), as `webhooks` rejects a merchant id that is not ours."""


class NotificationRejected(Exception):
    """A notification that must not be acted on; `reason` is one of `REJECTION_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REJECTION_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@runtime_checkable
class PaymentProvider(Protocol):
    """A payment provider adapter. Implementations hold no state but caches and a token.

    Every method raises `ProviderError` when the provider cannot give a usable answer.
    """

    name: str

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Open a payment attempt; repeating it with the same idempotency key is harmless."""
        ...

    async def query(self, reference: str, provider_ref: str | None) -> PaymentStatus:
        """What the provider says now. An attempt it does not know (yet) is `pending`."""
        ...

    async def close(self, reference: str, provider_ref: str | None) -> None:
        """Expire or cancel the attempt at the provider; already closed or unknown is fine.

        Raises `ProviderError(code="already_paid", transient=False)` when it was paid.
        """
        ...

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of a payment; `refund_id` makes a repetition harmless — but only
        of a request that got no answer, and only while the provider keeps the key (Stripe: at
        least 24 hours). Once it has answered, ask `query_refund`, never this again."""
        ...

    async def query_refund(
        self, request: RefundRequest, provider_refund_id: str | None
    ) -> RefundResult:
        """What the provider says now about the refund `request` made, which it has answered
        (`provider_refund_id`: the provider's id of it from that answer, when it gave one).
        Only reads: it never makes a refund, however often and however late it is asked."""
        ...

    async def find_refund(self, request: RefundRequest) -> RefundSearch:
        """Before `refund` is asked again late (a retry after long failures, a refund still
        pending in a restored backup — when the idempotency key may be pruned): our refund if
        the provider already has it, and how much of the payment it has refunded. Only reads."""
        ...

    async def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> Notification:
        """Verify, then decode, a notification's raw body; raise `NotificationRejected`.

        A transient `ProviderError` means it could not be verified now (PayPal's certificate
        could not be fetched): answer with a 5xx so that the provider delivers it again.
        """
        ...

    def reply(self, accepted: bool) -> WebhookReply:
        """What to answer the provider once the notification is stored (or rejected)."""
        ...
