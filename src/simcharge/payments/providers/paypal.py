"""PayPal Orders v2 (intent CAPTURE), Payments v2 refunds, webhooks verified locally.

The payer approves an order on PayPal's page; nothing is paid until we `capture` it (on the
return URL or on `CHECKOUT.ORDER.APPROVED`). `query` only reports. Webhooks are verified with
PayPal's certificate (see `paypal_certs`), never by asking PayPal's verification API.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from pydantic import SecretStr

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
    json_object,
    notification_json,
    parse_rfc3339,
    scrub,
    send,
    str_at,
    transient_status,
)
from simcharge.payments.providers.base import (
    Checkout,
    CheckoutRequest,
    ListedRefund,
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
from simcharge.payments.providers.paypal_certs import (
    DEFAULT_CERT_HOSTS,
    CertificateCache,
    CertificateFetcher,
    CertificateRejected,
    cert_url_allowed,
    http_certificate_fetcher,
    system_trust_store,
    verify_certificate_chain,
)
from simcharge.payments.providers.signing import paypal_signed_message, rsa_sha256_verify

NAME = "paypal"
LIVE_API = "https://api-m.paypal.com"
SANDBOX_API = "https://api-m.sandbox.paypal.com"

CURRENCIES = frozenset(
    {"AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "ILS", "INR"}
    | {"JPY", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "SEK", "SGD", "THB", "TWD", "USD"}
)
"""The currencies PayPal's REST API takes (developer.paypal.com, "Currency codes"; BRL, CNY,
INR and MYR for in-country accounts only): the catalog refuses a PayPal method in any other
(BHD, KWD…), rather than PayPal at checkout."""
NO_DECIMALS = frozenset({"HUF", "JPY", "TWD"})
"""PayPal refuses decimals in these, although HUF and TWD have two in ISO 4217."""
LOCALES = {"en": "en-US", "zh-Hans": "zh-CN", "zh-Hant": "zh-TW", "es": "es-ES"}
_TOKEN_MARGIN = timedelta(seconds=60)
SIGNED_HEADERS = tuple(
    f"PAYPAL-{name}"
    for name in ("TRANSMISSION-ID", "TRANSMISSION-TIME", "TRANSMISSION-SIG", "CERT-URL", "AUTH-ALGO")
)

_CAPTURE_STATES = {
    "COMPLETED": PaymentState.succeeded,
    "PENDING": PaymentState.pending,
    "DECLINED": PaymentState.failed,
    "FAILED": PaymentState.failed,
    "REFUNDED": PaymentState.refunded,
    "PARTIALLY_REFUNDED": PaymentState.partially_refunded,
}
_CAPTURE_EVENTS = {
    "PAYMENT.CAPTURE.COMPLETED": PaymentState.succeeded,
    "PAYMENT.CAPTURE.PENDING": PaymentState.pending,
    # Orders v2 documents DECLINED, older guides DENIED: both mean the capture failed.
    "PAYMENT.CAPTURE.DECLINED": PaymentState.failed,
    "PAYMENT.CAPTURE.DENIED": PaymentState.failed,
    # Its resource is a refund (`up` links the capture); a capture resource means the same.
    "PAYMENT.CAPTURE.REVERSED": PaymentState.refunded,
}
_REFUND_STATES = {
    "COMPLETED": RefundState.succeeded,
    "PENDING": RefundState.pending,
    "FAILED": RefundState.failed,
    "CANCELLED": RefundState.failed,
}


def amount_step(currency: str) -> int:
    """PayPal's amount rule: the minor units of `currency` it takes one step of — a whole HUF,
    JPY or TWD (`NO_DECIMALS`), else any amount."""
    return int(10 ** minor_exponent(currency)) if currency in NO_DECIMALS else 1


def to_paypal_value(minor: int, currency: str) -> str:
    """Minor units → PayPal's decimal string (`"19.99"`, `"1000"` for HUF/JPY/TWD)."""
    value = from_minor(minor, currency)
    if currency in NO_DECIMALS:
        if value != value.to_integral_value():
            raise LossyConversionError(f"PayPal takes whole {currency} only")
        return str(value.quantize(Decimal(1)))
    return str(value)


def _money(amount: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """PayPal's `{"currency_code", "value"}` in our minor units (`"1000"` JPY is 1000, `"1000"`
    HUF 100000). No amount (None: not credited, flagged for finance) when it names none or one
    we cannot read: a currency ISO 4217 does not list, `"1000.5"` JPY, more than any amount."""
    value, currency = str_at(amount, "value"), str_at(amount, "currency_code")
    if value is None or currency is None:
        return None, currency
    try:
        minor = to_minor(value, currency)
    except ValueError:  # LossyConversionError, or an unknown currency
        return None, currency
    return (minor if 0 <= minor <= MINOR_BOUND else None), currency


@dataclass(frozen=True, slots=True)
class PayPalConfig:
    client_id: str
    client_secret: SecretStr
    webhook_id: str
    api_base: str = LIVE_API
    brand_name: str | None = None
    timeout: float = 30.0
    webhook_tolerance: int = 300
    """Seconds a transmission's time may differ from now, either way."""
    cert_hosts: frozenset[str] = DEFAULT_CERT_HOSTS
    trust_store: tuple[x509.Certificate, ...] | None = field(default=None, repr=False)
    """CAs a signing certificate must chain to; None: the certifi bundle."""


def order_status(order: Mapping[str, Any]) -> PaymentStatus:
    """An order (create, get or capture response, or the `CHECKOUT.ORDER.*` resource)."""
    units = order.get("purchase_units")
    unit: dict[str, Any] = dict(units[0]) if isinstance(units, list) and units else {}
    captures = dict_at(unit, "payments").get("captures")
    capture: dict[str, Any] = dict(captures[-1]) if isinstance(captures, list) and captures else {}
    order_state = str_at(order, "status")
    capture_state = str_at(capture, "status")
    if capture_state:
        state = _CAPTURE_STATES.get(capture_state, PaymentState.pending)
    elif order_state == "VOIDED":
        state = PaymentState.cancelled
    else:
        state = PaymentState.pending
    amount, currency = _money(dict_at(capture, "amount") or dict_at(unit, "amount"))
    return PaymentStatus(
        state=state,
        # REFUNDED: all of it, whatever the list says (`note_refunded_status` takes the amount).
        refunded_amount=_refunded(dict_at(unit, "payments").get("refunds"), currency)
        if state is PaymentState.partially_refunded
        else None,
        refunds=_listed_refunds(dict_at(unit, "payments").get("refunds"), currency)
        if state is PaymentState.partially_refunded
        else (),
        reference=str_at(unit, "custom_id")
        or str_at(capture, "custom_id")
        or str_at(unit, "reference_id"),
        provider_ref=str_at(order, "id"),
        payment_id=str_at(capture, "id"),
        amount=amount,
        currency=currency,
        merchant=str_at(unit, "payee", "merchant_id"),
        paid_at=parse_rfc3339(str_at(capture, "create_time"))
        if state is PaymentState.succeeded
        else None,
        raw=scrub(dict(order)),
        capturable=order_state == "APPROVED" and not capture_state,
        provider_state=f"{order_state}/{capture_state}" if capture_state else order_state,
    )


def _refunded(refunds: Any, currency: str | None) -> int | None:
    """What the order's refunds (`purchase_units[].payments.refunds`, which Orders v2 lists with
    the captures) gave back: the `COMPLETED` ones in the capture's currency — None when none
    did (a capture `PARTIALLY_REFUNDED` whose refunds are not listed, or still pending: how much
    went back is then not reported)."""
    total = 0
    for refund in refunds if isinstance(refunds, list) else []:
        if not isinstance(refund, Mapping) or str_at(refund, "status") != "COMPLETED":
            continue
        value, unit = _money(dict_at(refund, "amount"))
        if value is not None and value > 0 and unit == currency:
            total += value
    return total or None


def _listed_refunds(refunds: Any, currency: str | None) -> tuple[ListedRefund, ...]:
    """The refunds `_refunded` adds up, each with its id (the id its own notification,
    `PAYMENT.CAPTURE.REFUNDED`, carries) and its `custom_id` (ours: our refund's reference)."""
    listed = []
    for refund in refunds if isinstance(refunds, list) else []:
        if not isinstance(refund, Mapping) or str_at(refund, "status") != "COMPLETED":
            continue
        value, unit = _money(dict_at(refund, "amount"))
        refund_id = str_at(refund, "id")
        if value is not None and value > 0 and unit == currency and refund_id:
            listed.append(ListedRefund(refund_id, value, str_at(refund, "custom_id")))
    return tuple(listed)


def capture_status(capture: Mapping[str, Any], event_type: str) -> PaymentStatus:
    """A capture resource of a `PAYMENT.CAPTURE.*` event."""
    state = _CAPTURE_EVENTS.get(event_type) or _CAPTURE_STATES.get(
        str_at(capture, "status") or "", PaymentState.pending
    )
    amount, currency = _money(dict_at(capture, "amount"))
    return PaymentStatus(
        state=state,
        reference=str_at(capture, "custom_id"),
        provider_ref=str_at(capture, "supplementary_data", "related_ids", "order_id"),
        payment_id=str_at(capture, "id"),
        amount=amount,
        currency=currency,
        merchant=str_at(capture, "payee", "merchant_id"),
        paid_at=parse_rfc3339(str_at(capture, "create_time"))
        if state is PaymentState.succeeded
        else None,
        raw=scrub(dict(capture)),
        provider_state=str_at(capture, "status"),
    )


def _link(resource: Mapping[str, Any], rel: str) -> str | None:
    links = resource.get("links")
    for link in links if isinstance(links, list) else []:
        if (
            isinstance(link, Mapping)
            and link.get("rel") == rel
            and isinstance(link.get("href"), str)
        ):
            return str(link["href"])
    return None


def refund_result(refund: Mapping[str, Any], *, refund_id: str | None = None) -> RefundResult:
    """A refund (refund response, or the resource of `PAYMENT.CAPTURE.REFUNDED`)."""
    amount, currency = _money(dict_at(refund, "amount"))
    up = _link(refund, "up")
    return RefundResult(
        refund_id=refund_id or str_at(refund, "custom_id") or str_at(refund, "id") or "",
        provider_refund_id=str_at(refund, "id"),
        state=_REFUND_STATES.get(str_at(refund, "status") or "", RefundState.pending),
        amount=amount or 0,
        currency=currency or "",
        raw=scrub(dict(refund)),
        payment_id=up.rstrip("/").rsplit("/", 1)[-1] if up and "/captures/" in up else None,
    )


def _refund_of(refund: Mapping[str, Any], request: RefundRequest) -> RefundResult:
    """The answer about the refund `request` made (refund call or `GET` of the refund)."""
    result = refund_result(refund, refund_id=request.refund_id)
    if result.amount == 0:  # a minimal representation carries no amount
        result = RefundResult(
            result.refund_id,
            result.provider_refund_id,
            result.state,
            request.amount,
            request.currency,
            result.raw,
            request.reference,
            request.payment_id,
        )
    return result


def _error(response: httpx.Response) -> ProviderError:
    body = json_object(response.content) or {}
    details = body.get("details")
    issue = None
    if isinstance(details, list) and details and isinstance(details[0], Mapping):
        issue = str_at(details[0], "issue")
    code = issue or str_at(body, "name") or str_at(body, "error") or f"http_{response.status_code}"
    message = str_at(body, "message") or str_at(body, "error_description") or response.reason_phrase
    debug_id = str_at(body, "debug_id") or response.headers.get("paypal-debug-id")
    if debug_id:
        message = f"{message} (debug_id {debug_id})"
    return ProviderError(
        NAME,
        code,
        message,
        transient=transient_status(response.status_code),
        status=response.status_code,
    )


class PayPalProvider:
    """PayPal Checkout: the payer approves on PayPal's page, we capture."""

    name = NAME
    flows = frozenset({PaymentFlow.redirect, PaymentFlow.wap})

    def __init__(
        self,
        config: PayPalConfig,
        client: httpx.AsyncClient,
        *,
        cert_fetcher: CertificateFetcher | None = None,
    ) -> None:
        self.config = config
        self._client = client
        self._base = config.api_base.rstrip("/")
        self._token: str | None = None
        self._token_expires = utcnow()
        self._token_lock = asyncio.Lock()
        self._certs = CertificateCache(cert_fetcher or http_certificate_fetcher(client))

    # --- HTTP ----------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and utcnow() < self._token_expires:
                return self._token
            credentials = f"{self.config.client_id}:{self.config.client_secret.get_secret_value()}"
            response = await send(
                self._client,
                NAME,
                "POST",
                f"{self._base}/v1/oauth2/token",
                time_limit=self.config.timeout,
                headers={
                    "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
                content=b"grant_type=client_credentials",
            )
            body = json_object(response.content) if response.status_code == 200 else None
            token = str_at(body, "access_token") if body else None
            if body is None or token is None:
                raise _error(response)
            lifetime = body.get("expires_in")
            seconds = lifetime if isinstance(lifetime, int) and lifetime > 0 else 300
            self._token = token
            self._token_expires = utcnow() + timedelta(seconds=seconds) - _TOKEN_MARGIN
            return token

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        for attempt in (1, 2):
            token = await self._access_token()
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "Prefer": "return=representation",
            }
            if content is not None:
                headers["Content-Type"] = "application/json"
            if request_id is not None:
                headers["PayPal-Request-Id"] = request_id
            response = await send(
                self._client,
                NAME,
                method,
                f"{self._base}{path}",
                time_limit=self.config.timeout,
                headers=headers,
                content=content,
            )
            if response.status_code == 401 and attempt == 1:
                self._token = None  # expired or revoked early: fetch a new one, once
                continue
            if response.status_code >= 400:
                raise _error(response)
            found = json_object(response.content)
            if found is None:
                raise ProviderError(
                    NAME,
                    "bad_response",
                    "the answer is not a JSON object",
                    transient=True,
                    status=response.status_code,
                )
            return found
        raise AssertionError("unreachable")  # pragma: no cover

    # --- payments ------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        if request.flow not in self.flows:
            raise ProviderError(
                NAME, "unsupported_flow", f"PayPal has no {request.flow} flow", transient=False
            )
        try:
            value = to_paypal_value(request.amount, request.currency)
        except LossyConversionError as exc:
            raise ProviderError(NAME, "DECIMALS_NOT_SUPPORTED", str(exc), transient=False) from exc
        experience: dict[str, Any] = {
            "return_url": request.return_url,
            "cancel_url": request.cancel_url,
            "user_action": "PAY_NOW",
            "shipping_preference": "NO_SHIPPING",
            "payment_method_preference": "IMMEDIATE_PAYMENT_REQUIRED",
        }
        if locale := LOCALES.get(request.language):
            experience["locale"] = locale
        if self.config.brand_name:
            experience["brand_name"] = self.config.brand_name[:127]
        order = await self._call(
            "POST",
            "/v2/checkout/orders",
            body={
                "intent": "CAPTURE",
                "purchase_units": [
                    {
                        "reference_id": request.reference,
                        "custom_id": request.reference,
                        "invoice_id": request.reference,
                        "description": request.description[:127],
                        "amount": {"currency_code": request.currency, "value": value},
                    }
                ],
                "payment_source": {"paypal": {"experience_context": experience}},
            },
            request_id=request.idempotency_key,
        )
        order_id = str_at(order, "id")
        approve = _link(order, "payer-action") or _link(order, "approve")
        if order_id is None or approve is None:
            raise ProviderError(
                NAME, "bad_response", "no order id or approval link", transient=True
            )
        return Checkout(
            provider_ref=order_id,
            redirect_url=approve,
            qr_payload=None,
            expires_at=None,
            raw=scrub(order),
        )

    async def query(self, reference: str, provider_ref: str | None) -> PaymentStatus:
        if provider_ref is None:
            # No order was ever handed to the payer, so nothing can have been paid.
            return PaymentStatus(
                PaymentState.pending, reference, None, None, None, None, None, None, {}
            )
        return order_status(await self._call("GET", f"/v2/checkout/orders/{provider_ref}"))

    async def capture(self, provider_ref: str, idempotency_key: str) -> PaymentStatus:
        """Take the money of an approved order; a second capture reports the first one."""
        try:
            order = await self._call(
                "POST",
                f"/v2/checkout/orders/{provider_ref}/capture",
                body={},
                request_id=idempotency_key,
            )
        except ProviderError as exc:
            if exc.code == "ORDER_ALREADY_CAPTURED":  # a repeated return or webhook: report it
                return order_status(await self._call("GET", f"/v2/checkout/orders/{provider_ref}"))
            raise
        return order_status(order)

    async def close(self, reference: str, provider_ref: str | None) -> None:
        """PayPal cannot cancel a CAPTURE order: closing it means we never capture it.

        An unapproved or approved order lapses at PayPal by itself; a captured one is paid.
        """
        if provider_ref is None:
            return
        try:
            status = await self.query(reference, provider_ref)
        except ProviderError as exc:
            if exc.status == 404:
                return
            raise
        if status.state is PaymentState.pending and status.payment_id is not None:
            raise ProviderError(
                NAME, "payment_processing", "the capture is pending at PayPal", transient=True
            )
        if status.state in (
            PaymentState.succeeded,
            PaymentState.refunded,
            PaymentState.partially_refunded,
        ):
            raise ProviderError(
                NAME, "already_paid", f"order {provider_ref} is captured", transient=False
            )

    async def refund(self, request: RefundRequest) -> RefundResult:
        try:
            value = to_paypal_value(request.amount, request.currency)
        except LossyConversionError as exc:
            raise ProviderError(NAME, "DECIMALS_NOT_SUPPORTED", str(exc), transient=False) from exc
        body: dict[str, Any] = {
            "amount": {"currency_code": request.currency, "value": value},
            "custom_id": request.refund_id,
        }
        if request.reason:
            body["note_to_payer"] = request.reason[:255]
        refund = await self._call(
            "POST",
            f"/v2/payments/captures/{request.payment_id}/refund",
            body=body,
            request_id=request.refund_id,
        )
        return _refund_of(refund, request)

    async def query_refund(
        self, request: RefundRequest, provider_refund_id: str | None
    ) -> RefundResult:
        """`GET /v2/payments/refunds/{id}`, the id PayPal gave in its first answer. Never the
        refund call again: a `PayPal-Request-Id` is kept only for a while, then a repetition
        is a new refund."""
        if not provider_refund_id:
            raise ProviderError(
                NAME,
                "refund_id_unknown",
                f"PayPal's id of refund {request.refund_id} was never received",
                transient=False,
            )
        refund = await self._call(
            "GET", f"/v2/payments/refunds/{quote(provider_refund_id, safe='')}"
        )
        return _refund_of(refund, request)

    async def find_refund(self, request: RefundRequest) -> RefundSearch:
        """`GET /v2/checkout/orders/{id}`: Orders v2 lists the capture's refunds with it
        (`purchase_units[].payments.refunds`), each with its `custom_id` — ours is the one
        carrying our refund id (`refund` sets it). The refunded total: every refund listed in
        the payment's currency that is not `FAILED` or `CANCELLED`. Without the order's id
        nothing can be read: the `PayPal-Request-Id` (kept 45 days) is all there is."""
        if not request.provider_ref:
            return RefundSearch(None, None)
        order = await self._call(
            "GET", f"/v2/checkout/orders/{quote(request.provider_ref, safe='')}"
        )
        found: RefundResult | None = None
        refunded = 0
        units = order.get("purchase_units")
        for unit in units if isinstance(units, list) else []:
            refunds = (
                dict_at(unit, "payments").get("refunds") if isinstance(unit, Mapping) else None
            )
            for refund in refunds if isinstance(refunds, list) else []:
                if not isinstance(refund, Mapping):
                    continue
                if found is None and str_at(refund, "custom_id") == request.refund_id:
                    found = _refund_of(refund, request)
                value, currency = _money(dict_at(refund, "amount"))
                state = _REFUND_STATES.get(str_at(refund, "status") or "", RefundState.pending)
                if state is not RefundState.failed and value and currency == request.currency:
                    refunded += value
        return RefundSearch(found, refunded)

    # --- webhooks ------------------------------------------------------------------------------

    async def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> Notification:
        """Verify a webhook delivery. May raise a transient `ProviderError` when PayPal's
        certificate cannot be fetched (answer non-2xx: PayPal delivers again)."""
        names = (
            "transmission-id",
            "transmission-time",
            "transmission-sig",
            "cert-url",
            "auth-algo",
        )
        values = [header(headers, f"PAYPAL-{name.upper()}") for name in names]
        transmission_id, transmission_time, signature, cert_url, algorithm = values
        if not (transmission_id and transmission_time and signature and cert_url and algorithm):
            raise NotificationRejected("malformed", "a PAYPAL-* header is missing")
        if algorithm != "SHA256withRSA":
            raise NotificationRejected("bad-signature", f"algorithm {algorithm} is not accepted")
        sent_at = parse_rfc3339(transmission_time)
        if sent_at is None:
            raise NotificationRejected("malformed", "PAYPAL-TRANSMISSION-TIME is not a time")
        if abs((now - sent_at).total_seconds()) > self.config.webhook_tolerance:
            raise NotificationRejected("stale", f"transmitted at {transmission_time}")
        if not cert_url_allowed(cert_url, self.config.cert_hosts):
            raise NotificationRejected("bad-certificate", "the certificate URL is not PayPal's")
        pem = await self._certs.get(cert_url)
        trust = (
            self.config.trust_store if self.config.trust_store is not None else system_trust_store()
        )
        try:
            key = verify_certificate_chain(pem, trust, now)
        except CertificateRejected as exc:
            self._certs.forget(cert_url)
            raise NotificationRejected("bad-certificate", str(exc)) from exc
        message = paypal_signed_message(
            transmission_id, transmission_time, self.config.webhook_id, body
        )
        if not rsa_sha256_verify(key, message, signature):
            raise NotificationRejected("bad-signature", "the signature does not verify")
        event = notification_json(body)
        event_id, event_type = str_at(event, "id"), str_at(event, "event_type")
        resource = dict_at(event, "resource")
        if not event_id or not event_type or not resource:
            raise NotificationRejected("malformed", "not a PayPal webhook event")
        status: PaymentStatus | None = None
        refund: RefundResult | None = None
        if event_type.startswith("CHECKOUT.ORDER."):
            status = order_status(resource)
        elif event_type == "CHECKOUT.PAYMENT-APPROVAL.REVERSED":
            order_id = str_at(resource, "order_id") or str_at(resource, "id")
            status = PaymentStatus(
                PaymentState.cancelled,
                None,
                order_id,
                None,
                None,
                None,
                None,
                None,
                scrub(resource),
                provider_state="APPROVAL_REVERSED",
            )
        elif event_type == "PAYMENT.CAPTURE.REFUNDED" or (
            event_type == "PAYMENT.CAPTURE.REVERSED" and "/captures/" in (_link(resource, "up") or "")
        ):
            # A refund resource: ours carries our refund id (`custom_id`); one made in PayPal's
            # dashboard, or a reversal (a chargeback PayPal settled), carries only PayPal's.
            refund = refund_result(resource)
        elif event_type in _CAPTURE_EVENTS:
            status = capture_status(resource, event_type)
        return Notification(
            NAME,
            event_id,
            event_type,
            status,
            refund,
            scrub(event),
            body=delivered_body(body),
            headers=delivered_headers(headers, SIGNED_HEADERS),
        )

    def reply(self, accepted: bool) -> WebhookReply:
        if accepted:
            return WebhookReply(200, b"", "text/plain")
        return WebhookReply(400, b"", "text/plain")
