"""Stripe Checkout Sessions through the official SDK, over the application's httpx client.

The SDK's own `HTTPXClient` builds its own connection pool; `_SharedHTTPXClient` instead sends
through the injected `httpx.AsyncClient`, so one pool serves the whole process and respx can
intercept requests in tests. Webhooks are verified by `signing.stripe_signature_valid`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, NoReturn

import httpx
import stripe
from pydantic import SecretStr
from stripe.params import RefundCreateParams, RefundListParams
from stripe.params.checkout import SessionCreateParams

from simcharge.kit.clock import utcnow
from simcharge.kit.money import (
    MINOR_BOUND,
    LossyConversionError,
    from_minor,
    minor_exponent,
    to_minor,
)
from simcharge.payments.providers._common import (
    delivered_body,
    delivered_headers,
    dict_at,
    header,
    notification_json,
    scrub,
    str_at,
)
from simcharge.payments.providers.base import (
    Checkout,
    CheckoutRequest,
    Dispute,
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
    stripe_signature_valid,
)

NAME = "stripe"
LIVE_API = stripe.DEFAULT_API_BASE

# Stripe's amounts are in *its* smallest unit, which is not always ISO 4217's
# (docs.stripe.com/currencies): these have none, these three (last digit 0), and its "special
# cases" keep two decimals in the API but take whole units only — ISK and UGX ("to charge 5 UGX,
# provide an amount value of 500"; UGX is also in Stripe's zero-decimal list, but the special
# case is what its API does), HUF and TWD (chargeable with decimals, but Stripe pays them out in
# whole units only and rounds a fraction in the balance: a charge we could not reconcile).
ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"}
    | {"PYG", "RWF", "VND", "VUV", "XAF", "XOF", "XPF"}
)
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
WHOLE_UNITS_ONLY = frozenset({"HUF", "ISK", "TWD", "UGX"})

CHECKOUT_MIN_LIFETIME = timedelta(minutes=30)
CHECKOUT_MAX_LIFETIME = timedelta(hours=24)
_LIFETIME_MARGIN = timedelta(minutes=5)
_STRIPE_SLACK = timedelta(minutes=1)
"""How much later than 30 minutes from its clock an expiry must be for Stripe to take it
surely (clocks differ a little)."""

LOCALES = {"en": "en", "zh-Hans": "zh", "zh-Hant": "zh-TW", "fil": "fil", "es": "es"}
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
SESSION_PLACEHOLDER = "{CHECKOUT_SESSION_ID}"
SIGNED_HEADERS = ("Stripe-Signature",)


def stripe_exponent(currency: str) -> int:
    currency = currency.upper()
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def amount_step(currency: str) -> int:
    """Stripe's amount rule: the minor units of `currency` it takes one step of — a whole unit
    of `WHOLE_UNITS_ONLY`, ten thousandths of `THREE_DECIMAL`, a whole unit of a currency it
    has no decimals for (`ZERO_DECIMAL`) although ISO 4217 has, else any amount."""
    currency = currency.upper()
    exponent = minor_exponent(currency)
    if currency in WHOLE_UNITS_ONLY:
        return int(10**exponent)
    if currency in THREE_DECIMAL:
        return 10
    return int(10 ** max(0, exponent - stripe_exponent(currency)))


def to_stripe_amount(minor: int, currency: str) -> int:
    """Our minor units → Stripe's integer amount; raises LossyConversionError if Stripe can't."""
    scaled = from_minor(minor, currency.upper()).scaleb(stripe_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise LossyConversionError(f"{minor} {currency} has no exact Stripe amount")
    value = int(scaled)
    if currency.upper() in THREE_DECIMAL and value % 10:
        raise LossyConversionError(f"Stripe needs {currency} amounts ending in 0")
    if currency.upper() in WHOLE_UNITS_ONLY and value % 100:
        raise LossyConversionError(f"Stripe takes whole {currency} only")
    return value


def from_stripe_amount(amount: int, currency: str) -> int:
    """Stripe's integer amount → our minor units, exactly."""
    return to_minor(Decimal(amount).scaleb(-stripe_exponent(currency)), currency.upper())


@dataclass(frozen=True, slots=True)
class StripeConfig:
    secret_key: SecretStr
    webhook_secret: SecretStr
    api_base: str = LIVE_API
    webhook_tolerance: int = 300
    """Seconds a webhook's timestamp may differ from now, either way."""
    timeout: float = 30.0
    max_network_retries: int = 0
    """SDK retries (idempotent by key); the outbox retries anyway, so none by default."""
    api_version: str | None = None
    """Pin a Stripe API version; default: the SDK's."""


class _SharedHTTPXClient(stripe.HTTPClient):
    """The SDK's transport, sending through an `httpx.AsyncClient` that the application owns."""

    name: ClassVar[str] = "httpx"

    def __init__(self, client: httpx.AsyncClient, timeout: float) -> None:
        super().__init__()
        self._client = client
        self._timeout = timeout

    @staticmethod
    def _connection_error(exc: httpx.HTTPError) -> NoReturn:
        raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]  # unannotated in the SDK
            f"Network error talking to Stripe: {type(exc).__name__}", should_retry=True
        ) from exc

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            response = await self._client.request(
                method, url, headers=dict(headers), content=post_data, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            self._connection_error(exc)
        return response.content, response.status_code, response.headers

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[AsyncIterable[bytes], int, Mapping[str, str]]:
        request = self._client.build_request(
            method, url, headers=dict(headers), content=post_data, timeout=self._timeout
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._connection_error(exc)
        return response.aiter_bytes(), response.status_code, response.headers

    async def close_async(self) -> None:
        """The httpx client belongs to the application, which closes it."""

    def close(self) -> None:
        """Nothing to close: see `close_async`."""

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)


def _provider_error(exc: stripe.StripeError) -> ProviderError:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = dict_at(body, "error")
    code = str_at(error, "code") or exc.code or str_at(error, "type") or type(exc).__name__
    message = exc.user_message or str_at(error, "message") or type(exc).__name__
    status = exc.http_status
    if isinstance(exc, stripe.APIConnectionError):
        timed_out = isinstance(exc.__cause__, httpx.TimeoutException)
        return ProviderError(
            NAME, "timeout" if timed_out else "network_error", message, transient=True
        )
    transient = isinstance(exc, stripe.RateLimitError) or (
        status is not None and (status >= 500 or status == 409)
    )
    return ProviderError(NAME, code, message, transient=transient, status=status)


def _id_of(value: Any) -> str | None:
    """An expandable field: an id string, or the expanded object's id."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _amount(value: Any, currency: str | None) -> int | None:
    """An amount Stripe reports, in our minor units; None (no amount known: the payment is not
    credited but flagged for finance) when it names none, or one we cannot read — a currency
    ISO 4217 does not list, a fraction Stripe never charges (750 UGX), more than any amount."""
    if not isinstance(value, int) or isinstance(value, bool) or not currency:
        return None
    try:
        minor = from_stripe_amount(value, currency)
    except ValueError:  # LossyConversionError, or an unknown currency
        return None
    return minor if 0 <= minor <= MINOR_BOUND else None


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None


def session_status(
    session: Mapping[str, Any], *, event_type: str | None = None, event_time: datetime | None = None
) -> PaymentStatus:
    """A Checkout Session (plain or with `payment_intent.latest_charge` expanded) as a status."""
    currency = str_at(session, "currency")
    intent = session.get("payment_intent")
    intent_status = str_at(intent, "status") if isinstance(intent, Mapping) else None
    charge = intent.get("latest_charge") if isinstance(intent, Mapping) else None
    charge = charge if isinstance(charge, Mapping) else {}
    status, payment_status = str_at(session, "status"), str_at(session, "payment_status")
    refunded = (
        charge.get("amount_refunded") if isinstance(charge.get("amount_refunded"), int) else 0
    )
    paid = status == "complete" and payment_status in ("paid", "no_payment_required")
    if event_type == "checkout.session.async_payment_failed":
        state = PaymentState.failed
    elif status == "expired":
        state = PaymentState.expired
    elif paid and refunded:
        state = PaymentState.refunded if charge.get("refunded") else PaymentState.partially_refunded
    elif paid:
        state = PaymentState.succeeded
    elif status == "complete" and intent_status in ("requires_payment_method", "canceled"):
        state = PaymentState.failed
    else:
        state = PaymentState.pending
    paid_at = None
    if paid:
        paid_at = _timestamp(charge.get("created")) or event_time
    return PaymentStatus(
        state=state,
        reference=str_at(session, "client_reference_id")
        or str_at(session, "metadata", "reference"),
        provider_ref=str_at(session, "id"),
        payment_id=_id_of(intent),
        amount=_amount(session.get("amount_total"), currency),
        currency=currency.upper() if currency else None,
        merchant=None,
        paid_at=paid_at,
        raw=scrub(dict(session)),
        provider_state=f"{status}/{payment_status}",
        refunded_amount=_amount(refunded, currency) if refunded else None,
    )


def charge_status(charge: Mapping[str, Any]) -> PaymentStatus:
    """A Charge (`charge.refunded`) as a status of the payment intent it belongs to."""
    currency = str_at(charge, "currency")
    refunded = charge.get("amount_refunded")
    refunded = refunded if isinstance(refunded, int) else 0
    if refunded and charge.get("refunded"):
        state = PaymentState.refunded
    elif refunded:
        state = PaymentState.partially_refunded
    else:
        state = PaymentState.succeeded if charge.get("paid") else PaymentState.pending
    return PaymentStatus(
        state=state,
        reference=str_at(charge, "metadata", "reference"),
        provider_ref=None,
        payment_id=_id_of(charge.get("payment_intent")),
        amount=_amount(charge.get("amount_captured", charge.get("amount")), currency),
        currency=currency.upper() if currency else None,
        merchant=None,
        paid_at=_timestamp(charge.get("created")),
        raw=scrub(dict(charge)),
        provider_state=str_at(charge, "status"),
        refunded_amount=_amount(refunded, currency),
    )


_REFUND_STATES = {
    "succeeded": RefundState.succeeded,
    "pending": RefundState.pending,
    "requires_action": RefundState.pending,
    "failed": RefundState.failed,
    "canceled": RefundState.failed,
}


def refund_result(refund: Mapping[str, Any]) -> RefundResult:
    currency = str_at(refund, "currency") or ""
    amount = refund.get("amount")
    return RefundResult(
        refund_id=str_at(refund, "metadata", "refund_id") or str_at(refund, "id") or "",
        provider_refund_id=str_at(refund, "id"),
        state=_REFUND_STATES.get(str_at(refund, "status") or "", RefundState.pending),
        amount=_amount(amount, currency) or 0,
        currency=currency.upper(),
        raw=scrub(dict(refund)),
        reference=str_at(refund, "metadata", "reference"),
        payment_id=_id_of(refund.get("payment_intent")),
    )


def dispute_of(dispute: Mapping[str, Any]) -> Dispute:
    """A Dispute (`charge.dispute.*`): a chargeback of a charge of one of our payments."""
    currency = str_at(dispute, "currency")
    return Dispute(
        dispute_id=str_at(dispute, "id") or "",
        amount=_amount(dispute.get("amount"), currency),
        currency=currency.upper() if currency else None,
        reason=str_at(dispute, "reason"),
        dispute_status=str_at(dispute, "status"),
        payment_id=_id_of(dispute.get("payment_intent")),
        reference=str_at(dispute, "metadata", "reference"),
    )


def success_url(return_url: str) -> str:
    """The return URL with `session_id={CHECKOUT_SESSION_ID}` (left unencoded for Stripe)."""
    if SESSION_PLACEHOLDER in return_url:
        return return_url
    base, hash_, fragment = return_url.partition("#")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}session_id={SESSION_PLACEHOLDER}{hash_}{fragment}"


class StripeProvider:
    """Card payments (and whatever Stripe Checkout offers) on Stripe's hosted page."""

    name = NAME
    flows = frozenset({PaymentFlow.redirect, PaymentFlow.wap})

    def __init__(self, config: StripeConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._stripe = stripe.StripeClient(
            config.secret_key.get_secret_value(),
            base_addresses={"api": config.api_base.rstrip("/")},
            http_client=_SharedHTTPXClient(client, config.timeout),
            max_network_retries=config.max_network_retries,
            stripe_version=config.api_version,
        )

    def _expires_at(self, wanted: datetime, placed_at: datetime | None) -> int:
        """Stripe accepts 30 min to 24 h from now; outside that the nearest bound is used —
        bounds counted from when the order was placed, so that a retry sends what the first
        attempt sent (the same idempotency key with another `expires_at` is refused), as long
        as Stripe still takes it (within a few minutes of placing); from the clock after that."""
        now = utcnow()
        anchor = placed_at if placed_at is not None and placed_at <= now else now
        earliest = anchor + CHECKOUT_MIN_LIFETIME + _LIFETIME_MARGIN
        if earliest < now + CHECKOUT_MIN_LIFETIME + _STRIPE_SLACK:
            anchor = now
            earliest = now + CHECKOUT_MIN_LIFETIME + _LIFETIME_MARGIN
        latest = anchor + CHECKOUT_MAX_LIFETIME - _LIFETIME_MARGIN
        return int(min(max(wanted, earliest), latest).timestamp())

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        if request.flow not in self.flows:
            raise ProviderError(
                NAME,
                "unsupported_flow",
                f"Stripe Checkout has no {request.flow} flow",
                transient=False,
            )
        try:
            unit_amount = to_stripe_amount(request.amount, request.currency)
        except LossyConversionError as exc:
            raise ProviderError(
                NAME, "amount_not_representable", str(exc), transient=False
            ) from exc
        metadata = {"reference": request.reference}
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": unit_amount,
                        "product_data": {"name": request.description},
                    },
                }
            ],
            "client_reference_id": request.reference,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": success_url(request.return_url),
            "cancel_url": request.cancel_url,
            "expires_at": self._expires_at(request.expires_at, request.placed_at),
        }
        if locale := LOCALES.get(request.language):
            params["locale"] = locale
        try:
            session = await self._stripe.v1.checkout.sessions.create_async(
                params, {"idempotency_key": request.idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        data = session.to_dict()
        return Checkout(
            provider_ref=session.id,
            redirect_url=session.url,
            qr_payload=None,
            expires_at=_timestamp(data.get("expires_at")),
            raw=scrub(data),
        )

    async def _retrieve(self, session_id: str) -> dict[str, Any]:
        try:
            session = await self._stripe.v1.checkout.sessions.retrieve_async(
                session_id, {"expand": ["payment_intent", "payment_intent.latest_charge"]}
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        return session.to_dict()

    async def query(self, reference: str, provider_ref: str | None) -> PaymentStatus:
        if provider_ref is None:
            # No session was ever handed to the payer, so nothing can have been paid.
            return PaymentStatus(
                PaymentState.pending, reference, None, None, None, None, None, None, {}
            )
        return session_status(await self._retrieve(provider_ref))

    async def close(self, reference: str, provider_ref: str | None) -> None:
        if provider_ref is None:
            return
        try:
            await self._stripe.v1.checkout.sessions.expire_async(provider_ref)
            return
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 400:
                raise _provider_error(exc) from exc
            refusal = exc  # only an open session expires: find out what it is instead
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        status = session_status(await self._retrieve(provider_ref))
        if status.state in (PaymentState.expired, PaymentState.failed, PaymentState.cancelled):
            return
        if status.state is PaymentState.pending:
            raise ProviderError(
                NAME, "payment_processing", "the payment is being processed", transient=True
            ) from refusal
        raise ProviderError(
            NAME, "already_paid", f"session {provider_ref} is paid", transient=False
        ) from refusal

    async def refund(self, request: RefundRequest) -> RefundResult:
        try:
            amount = to_stripe_amount(request.amount, request.currency)
        except LossyConversionError as exc:
            raise ProviderError(
                NAME, "amount_not_representable", str(exc), transient=False
            ) from exc
        metadata = {"reference": request.reference, "refund_id": request.refund_id}
        params: RefundCreateParams = {
            "payment_intent": request.payment_id,
            "amount": amount,
            "metadata": metadata,
        }
        if request.reason in REFUND_REASONS:
            params["reason"] = request.reason
        elif request.reason:
            metadata["reason"] = request.reason[:500]
        try:
            refund = await self._stripe.v1.refunds.create_async(
                params, {"idempotency_key": request.refund_id}
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        return refund_result(refund.to_dict())

    async def query_refund(
        self, request: RefundRequest, provider_refund_id: str | None
    ) -> RefundResult:
        """`GET /v1/refunds/{id}`. Never `refunds.create` again: Stripe replays the first
        answer to a key unchanged, and makes a second refund once the key is pruned (24 h).
        Without Stripe's id (a refund answered before it was kept), the payment intent's
        refunds are listed and ours is found by its `metadata.refund_id`."""
        try:
            if provider_refund_id is not None:
                refund = await self._stripe.v1.refunds.retrieve_async(provider_refund_id)
                return refund_result(refund.to_dict())
            found = await self._stripe.v1.refunds.list_async(
                {"payment_intent": request.payment_id, "limit": 100}
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc) from exc
        for listed in found.data:
            data = listed.to_dict()
            if str_at(data, "metadata", "refund_id") == request.refund_id:
                return refund_result(data)
        raise ProviderError(
            NAME,
            "refund_not_found",
            f"no refund {request.refund_id} of {request.payment_id}",
            transient=False,
        )

    async def find_refund(self, request: RefundRequest) -> RefundSearch:
        """`GET /v1/refunds?payment_intent=…`, every page: ours is the one whose
        `metadata.refund_id` is our refund's (`refund` sets it); the payment's refunded total
        is every refund listed that is not `failed` or `canceled` (a `pending` one is on its
        way, as `charge.amount_refunded` counts it)."""
        found: RefundResult | None = None
        refunded = 0
        params: RefundListParams = {"payment_intent": request.payment_id, "limit": 100}
        while True:
            try:
                page = await self._stripe.v1.refunds.list_async(params)
            except stripe.StripeError as exc:
                raise _provider_error(exc) from exc
            listed = [item.to_dict() for item in page.data]
            for data in listed:
                result = refund_result(data)
                if str_at(data, "metadata", "refund_id") == request.refund_id and found is None:
                    found = result
                if result.state is not RefundState.failed:
                    refunded += result.amount
            if not page.has_more or not listed:
                return RefundSearch(found, refunded)
            last = str_at(listed[-1], "id")
            if last is None:
                raise ProviderError(
                    NAME, "bad_response", "a listed refund has no id", transient=True
                )
            params = {**params, "starting_after": last}

    async def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> Notification:
        signature = header(headers, "Stripe-Signature")
        if not signature:
            raise NotificationRejected("malformed", "no Stripe-Signature header")
        try:
            timestamp, candidates = parse_stripe_signature_header(signature)
        except ValueError as exc:
            raise NotificationRejected("malformed", f"Stripe-Signature: {exc}") from exc
        secret = self.config.webhook_secret.get_secret_value()
        if not stripe_signature_valid(secret, timestamp, body, candidates):
            raise NotificationRejected("bad-signature", "no v1 signature matches")
        if abs(now.timestamp() - timestamp) > self.config.webhook_tolerance:
            raise NotificationRejected("stale", f"signed at {timestamp}")
        event = notification_json(body)
        event_id, event_type = str_at(event, "id"), str_at(event, "type")
        obj = dict_at(event, "data", "object")
        if not event_id or not event_type or not obj:
            raise NotificationRejected("malformed", "not a Stripe event")
        status: PaymentStatus | None = None
        refund: RefundResult | None = None
        dispute: Dispute | None = None
        kind = str_at(obj, "object")
        if event_type.startswith("checkout.session.") and kind == "checkout.session":
            status = session_status(
                obj, event_type=event_type, event_time=_timestamp(event.get("created"))
            )
        elif event_type == "charge.refunded" and kind == "charge":
            status = charge_status(obj)
        elif kind == "refund" and event_type.startswith(("refund.", "charge.refund.")):
            # Only ours (they carry our refund id): a refund made in Stripe's dashboard is
            # reported, with every other, by `charge.refunded` (the amount refunded so far).
            if str_at(obj, "metadata", "refund_id"):
                refund = refund_result(obj)
        elif kind == "dispute" and event_type.startswith("charge.dispute."):
            dispute = dispute_of(obj)
        return Notification(
            NAME,
            event_id,
            event_type,
            status,
            refund,
            scrub(event),
            body=delivered_body(body, blank_secrets=True),
            headers=delivered_headers(headers, SIGNED_HEADERS),
            dispute=dispute,
        )

    def reply(self, accepted: bool) -> WebhookReply:
        if accepted:
            return WebhookReply(200, b'{"received":true}', "application/json")
        return WebhookReply(400, b'{"received":false}', "application/json")
