"""WeChat Pay API v3 for a direct merchant: Native (QR code) and H5 (mobile browser).

Every request is signed with the merchant API key (`WECHATPAY2-SHA256-RSA2048`); every answer
and every callback is verified with WeChat Pay's key named by `Wechatpay-Serial` (a platform
certificate serial or a `PUB_KEY_ID_…`); callbacks carry their payload AES-256-GCM encrypted
with the APIv3 key.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from simcharge.kit.clock import utcnow
from simcharge.payments.providers._common import (
    CHINA_TIME,
    delivered_body,
    delivered_headers,
    dict_at,
    epoch_seconds,
    header,
    json_object,
    notification_json,
    parse_rfc3339,
    send,
    str_at,
    transient_status,
)
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
    aes_256_gcm_decrypt,
    load_rsa_private_key,
    load_rsa_public_key,
    rsa_sha256_sign,
    rsa_sha256_verify,
    wechatpay_authorization,
    wechatpay_request_message,
    wechatpay_response_message,
)

NAME = "wechatpay"
LIVE_API = "https://api.mch.weixin.qq.com"
CURRENCY = "CNY"
"""The only currency of a domestic merchant; its minor unit, the fen, is WeChat Pay's unit, so
amounts cross as they are (integers, never converted through a decimal)."""
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
CODE_URL_LIFETIME = timedelta(hours=2)
SIGNED_HEADERS = (
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Signature",
    "Wechatpay-Serial",
    "Wechatpay-Signature-Type",
)

_TRADE_STATES = {
    "SUCCESS": PaymentState.succeeded,
    # "转入退款" (moved into refund) is all the order query documents, and its answer names no
    # refunded amount; WeChat Pay's staff say it means a refund was made, never "in full". So:
    # paid, then refunded by an amount not reported (a partial refund must not be recorded as
    # all of the payment); the refund's own `REFUND.*` notification says how much.
    "REFUND": PaymentState.partially_refunded,
    "NOTPAY": PaymentState.pending,
    "USERPAYING": PaymentState.pending,
    "CLOSED": PaymentState.cancelled,
    "REVOKED": PaymentState.cancelled,
    "PAYERROR": PaymentState.failed,
}
_PAID = (PaymentState.succeeded, PaymentState.refunded, PaymentState.partially_refunded)
"""What an order query may answer of a payment made (`REFUND`: made, then refunded)."""
_REFUND_STATES = {
    "SUCCESS": RefundState.succeeded,
    "PROCESSING": RefundState.pending,
    "CLOSED": RefundState.failed,
    # Not final: the refund met a problem (the payer's card closed, say) and is finished by the
    # merchant (`apply-abnormal-refund`, to the card or a bank account): held, followed up, and
    # after its days flagged for finance — never read as refused while the money may go back.
    "ABNORMAL": RefundState.pending,
}
_RESPONSE_ERRORS = {
    "malformed": "unsigned_response",
    "probe": "bad_response_signature",
    "bad-signature": "bad_response_signature",
    "unknown-key": "unknown_platform_key",
    "stale": "stale_response",
}


@dataclass(frozen=True, slots=True)
class WeChatPayConfig:
    mchid: str
    appid: str
    serial_no: str
    """Serial number of the merchant API certificate (the key that signs our requests)."""
    private_key: SecretStr
    """The merchant API private key (`apiclient_key.pem`)."""
    apiv3_key: SecretStr
    """The 32-character APIv3 key: decrypts callbacks (used as its 32 ASCII bytes)."""
    platform_keys: Mapping[str, str] = field(default_factory=dict)
    """WeChat Pay's keys by serial: platform certificate serials and/or `PUB_KEY_ID_…`, each a
    PEM public key or certificate. Keep old and new during a rotation."""
    api_base: str = LIVE_API
    timeout: float = 30.0
    tolerance: int = 300
    """Seconds a signed answer's or callback's timestamp may differ from now, either way."""
    h5_type: str = "Wap"


def transaction_status(transaction: Mapping[str, Any]) -> PaymentStatus:
    """A transaction (query answer or decrypted `TRANSACTION.*` resource)."""
    trade_state = str_at(transaction, "trade_state")
    state = _TRADE_STATES.get(trade_state or "", PaymentState.pending)
    total = dict_at(transaction, "amount").get("total")
    return PaymentStatus(
        state=state,
        reference=str_at(transaction, "out_trade_no"),
        provider_ref=str_at(transaction, "transaction_id"),
        payment_id=str_at(transaction, "transaction_id"),
        amount=total if isinstance(total, int) else None,
        currency=str_at(transaction, "amount", "currency") or CURRENCY,
        merchant=str_at(transaction, "mchid"),
        paid_at=parse_rfc3339(str_at(transaction, "success_time")),
        raw=dict(transaction),
        provider_state=trade_state,
    )


def refund_result(refund: Mapping[str, Any]) -> RefundResult:
    """A refund (refund answer, or decrypted `REFUND.*` resource whose field is `refund_status`)."""
    status = str_at(refund, "status") or str_at(refund, "refund_status") or ""
    amount = dict_at(refund, "amount").get("refund")
    return RefundResult(
        refund_id=str_at(refund, "out_refund_no") or "",
        provider_refund_id=str_at(refund, "refund_id"),
        state=_REFUND_STATES.get(status, RefundState.pending),
        amount=amount if isinstance(amount, int) else 0,
        currency=str_at(refund, "amount", "currency") or CURRENCY,
        raw=dict(refund),
        reference=str_at(refund, "out_trade_no"),
        payment_id=str_at(refund, "transaction_id"),
    )


class WeChatPayProvider:
    """WeChat Pay: a QR code to scan (Native) or a page for mobile browsers (H5)."""

    name = NAME
    flows = frozenset({PaymentFlow.qr, PaymentFlow.wap})

    def __init__(self, config: WeChatPayConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._client = client
        self._base = config.api_base.rstrip("/")
        self._private_key = load_rsa_private_key(config.private_key.get_secret_value())
        self._apiv3_key = config.apiv3_key.get_secret_value().encode("utf-8")
        if len(self._apiv3_key) != 32:
            raise ValueError("the WeChat Pay APIv3 key must be 32 characters")
        self._platform_keys: dict[str, rsa.RSAPublicKey] = {
            serial: load_rsa_public_key(pem) for serial, pem in config.platform_keys.items()
        }

    # --- signatures ----------------------------------------------------------------------------

    def _check_signature(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        """Raise `NotificationRejected` unless WeChat Pay signed `body` with these headers."""
        timestamp = header(headers, "Wechatpay-Timestamp")
        nonce = header(headers, "Wechatpay-Nonce")
        signature = header(headers, "Wechatpay-Signature")
        serial = header(headers, "Wechatpay-Serial")
        if not (timestamp and nonce and signature and serial):
            raise NotificationRejected("malformed", "a Wechatpay-* header is missing")
        if signature.startswith(PROBE_PREFIX):
            raise NotificationRejected("probe", "a signature probe")
        key = self._platform_keys.get(serial)
        if key is None:
            raise NotificationRejected("unknown-key", f"no WeChat Pay key with serial {serial}")
        signed_at = epoch_seconds(timestamp)
        if signed_at is None:
            raise NotificationRejected("malformed", "Wechatpay-Timestamp is not a number")
        if abs(now.timestamp() - signed_at) > self.config.tolerance:
            raise NotificationRejected("stale", f"signed at {timestamp}")
        if not rsa_sha256_verify(
            key, wechatpay_response_message(timestamp, nonce, body), signature
        ):
            raise NotificationRejected("bad-signature", "the signature does not verify")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One signed call; the verified JSON answer ({} for 204), or a `ProviderError`."""
        canonical = f"{path}?{urlencode(query)}" if query else path
        # serialised once: the signed bytes are the sent bytes
        content = (
            json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            if body is not None
            else b""
        )
        timestamp = int(utcnow().timestamp())
        nonce = secrets.token_hex(16).upper()
        message = wechatpay_request_message(method, canonical, timestamp, nonce, content)
        signature = rsa_sha256_sign(self._private_key, message).decode()
        headers = {
            "Authorization": wechatpay_authorization(
                self.config.mchid, self.config.serial_no, nonce, timestamp, signature
            ),
            "Accept": "application/json",
            "User-Agent": "simcharge",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        response = await send(
            self._client,
            NAME,
            method,
            f"{self._base}{canonical}",
            time_limit=self.config.timeout,
            headers=headers,
            content=content if body is not None else None,
        )
        status = response.status_code
        if status >= 400:
            error = json_object(response.content) or {}
            raise ProviderError(
                NAME,
                str_at(error, "code") or f"http_{status}",
                str_at(error, "message") or response.reason_phrase,
                transient=transient_status(status),
                status=status,
            )
        try:
            self._check_signature(response.headers, response.content, utcnow())
        except NotificationRejected as exc:
            # WeChat Pay answered, and may have done what was asked (a refund): only our check
            # of its answer failed (a platform key not configured yet, our clock off). Not a
            # refusal — asked again later; the requests are idempotent (`out_refund_no`).
            raise ProviderError(
                NAME,
                _RESPONSE_ERRORS[exc.reason],
                f"{method} {path}: {exc.detail}",
                transient=True,
                status=status,
            ) from exc
        if status == 204 or not response.content:
            return {}
        found = json_object(response.content)
        if found is None:
            raise ProviderError(
                NAME, "bad_response", "not a JSON object", transient=True, status=status
            )
        return found

    # --- payments ------------------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        if request.flow not in self.flows:
            raise ProviderError(
                NAME, "unsupported_flow", f"no {request.flow} flow", transient=False
            )
        if request.currency != CURRENCY:
            raise ProviderError(
                NAME, "unsupported_currency", f"WeChat Pay takes {CURRENCY} only", transient=False
            )
        body: dict[str, Any] = {
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": request.description[:127],
            "out_trade_no": request.reference,
            "time_expire": request.expires_at.astimezone(CHINA_TIME).isoformat(timespec="seconds"),
            "notify_url": request.notify_url,
            "amount": {"total": request.amount, "currency": CURRENCY},
        }
        if request.flow is PaymentFlow.wap:
            if not request.client_ip:
                raise ProviderError(
                    NAME, "client_ip_required", "H5 needs the payer's IP address", transient=False
                )
            body["scene_info"] = {
                "payer_client_ip": request.client_ip,
                "h5_info": {"type": self.config.h5_type},
            }
            found = await self._call("POST", "/v3/pay/transactions/h5", body=body)
            h5_url = str_at(found, "h5_url")
            if h5_url is None:
                raise ProviderError(NAME, "bad_response", "no h5_url", transient=True)
            separator = "&" if "?" in h5_url else "?"
            return Checkout(
                provider_ref=request.reference,
                redirect_url=f"{h5_url}{separator}redirect_url={quote(request.return_url, safe='')}",
                qr_payload=None,
                expires_at=request.expires_at,
                raw=found,
            )
        found = await self._call("POST", "/v3/pay/transactions/native", body=body)
        code_url = str_at(found, "code_url")
        if code_url is None:
            raise ProviderError(NAME, "bad_response", "no code_url", transient=True)
        return Checkout(
            provider_ref=request.reference,
            redirect_url=None,
            qr_payload=code_url,
            expires_at=min(request.expires_at, utcnow() + CODE_URL_LIFETIME),
            raw=found,
        )

    async def query(self, reference: str, provider_ref: str | None) -> PaymentStatus:
        try:
            found = await self._call(
                "GET",
                f"/v3/pay/transactions/out-trade-no/{quote(reference, safe='')}",
                query={"mchid": self.config.mchid},
            )
        except ProviderError as exc:
            if exc.code == "ORDER_NOT_EXIST":
                return PaymentStatus(
                    PaymentState.pending,
                    reference,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    {},
                    provider_state="ORDER_NOT_EXIST",
                )
            raise
        status = transaction_status(found)
        foreign = self._foreign(found, paid=True)
        if foreign is not None:
            # Another merchant's, or another app's of our merchant (the same `out_trade_no` may
            # be theirs too): named so, the answer is flagged `merchant_mismatch` and credits
            # nothing (`payments.service`), as its notification would be rejected as `foreign`.
            return dataclasses.replace(status, merchant=f"{status.merchant or '-'} ({foreign})")
        return status

    async def close(self, reference: str, provider_ref: str | None) -> None:
        """Close an unpaid order; WeChat Pay asks to query first (a payer may pay at the end)."""
        status = await self.query(reference, provider_ref)
        if status.provider_state == "ORDER_NOT_EXIST" or status.state in (
            PaymentState.cancelled,
            PaymentState.failed,
        ):
            return
        if status.state is not PaymentState.pending:
            raise ProviderError(NAME, "already_paid", f"order {reference} is paid", transient=False)
        try:
            await self._call(
                "POST",
                f"/v3/pay/transactions/out-trade-no/{quote(reference, safe='')}/close",
                body={"mchid": self.config.mchid},
            )
        except ProviderError as exc:
            if exc.code == "ORDER_CLOSED":
                return
            if exc.code in ("ORDERPAID", "ORDER_PAID", "TRADE_ERROR"):
                again = await self.query(reference, provider_ref)
                if again.state in _PAID:
                    raise ProviderError(
                        NAME, "already_paid", f"order {reference} is paid", transient=False
                    ) from exc
            raise

    async def refund(self, request: RefundRequest) -> RefundResult:
        if request.currency != CURRENCY:
            raise ProviderError(
                NAME, "unsupported_currency", f"WeChat Pay takes {CURRENCY} only", transient=False
            )
        body: dict[str, Any] = (
            {"transaction_id": request.payment_id}
            if request.payment_id
            else {"out_trade_no": request.reference}
        )
        body["out_refund_no"] = request.refund_id
        if request.reason:
            body["reason"] = request.reason[:80]
        if request.notify_url:
            body["notify_url"] = request.notify_url
        body["amount"] = {"refund": request.amount, "total": request.total, "currency": CURRENCY}
        return refund_result(await self._call("POST", "/v3/refund/domestic/refunds", body=body))

    async def query_refund(
        self, request: RefundRequest, provider_refund_id: str | None
    ) -> RefundResult:
        """`GET /v3/refund/domestic/refunds/{out_refund_no}` (a direct merchant's: no `mchid`
        in the query), answered in the refund call's own shape."""
        return refund_result(
            await self._call(
                "GET", f"/v3/refund/domestic/refunds/{quote(request.refund_id, safe='')}"
            )
        )

    async def find_refund(self, request: RefundRequest) -> RefundSearch:
        """The refund by our `out_refund_no` (`query_refund`); 404 `RESOURCE_NOT_EXISTS`: WeChat
        Pay has none. Sending it again is safe however late ("同一退款单号多次请求只退一笔"); no
        read reports the transaction's refunded total: None."""
        try:
            found = await self.query_refund(request, None)
        except ProviderError as exc:
            if exc.status == 404 and exc.code == "RESOURCE_NOT_EXISTS":
                return RefundSearch(None, None)
            raise
        return RefundSearch(found, None)

    # --- callbacks -----------------------------------------------------------------------------

    async def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> Notification:
        self._check_signature(headers, body, now)
        envelope = notification_json(body)
        event_id, event_type = str_at(envelope, "id"), str_at(envelope, "event_type")
        resource = dict_at(envelope, "resource")
        ciphertext, nonce = str_at(resource, "ciphertext"), str_at(resource, "nonce")
        if not event_id or not event_type or not ciphertext or not nonce:
            raise NotificationRejected("malformed", "not a WeChat Pay notification")
        if resource.get("algorithm") != "AEAD_AES_256_GCM":
            raise NotificationRejected("malformed", f"algorithm {resource.get('algorithm')}")
        associated = str_at(resource, "associated_data") or ""
        try:
            plaintext = aes_256_gcm_decrypt(
                self._apiv3_key, nonce.encode(), associated.encode(), ciphertext
            )
        except ValueError as exc:
            raise NotificationRejected("malformed", "the resource does not decrypt") from exc
        decrypted = json_object(plaintext)
        if decrypted is None:
            raise NotificationRejected("malformed", "the resource is not a JSON object")
        foreign = self._foreign(decrypted, paid=event_type.startswith("TRANSACTION."))
        if foreign is not None:
            raise NotificationRejected("foreign", foreign)
        status: PaymentStatus | None = None
        refund: RefundResult | None = None
        if event_type.startswith("TRANSACTION."):
            status = transaction_status(decrypted)
        elif event_type.startswith("REFUND."):
            refund = refund_result(decrypted)
        raw = {**envelope, "resource": decrypted}
        return Notification(
            NAME,
            event_id,
            event_type,
            status,
            refund,
            raw,
            body=delivered_body(body),  # the resource as sent: encrypted
            headers=delivered_headers(headers, SIGNED_HEADERS),
        )

    def _foreign(self, resource: Mapping[str, Any], *, paid: bool) -> str | None:
        """Why a decrypted resource is not ours, if it is not: every resource names its `mchid`,
        a transaction (`paid`) its `appid` too (a refund's names none) — another app of the same
        merchant is notified under the same APIv3 key and may use the same `out_trade_no`."""
        mchid = resource.get("mchid")
        if mchid != self.config.mchid:
            return f"mchid {mchid!r}"
        if paid and resource.get("appid") != self.config.appid:
            return f"appid {resource.get('appid')!r}"
        return None

    def reply(self, accepted: bool) -> WebhookReply:
        if accepted:
            return WebhookReply(204, b"", "application/json")
        body = json.dumps({"code": "FAIL", "message": "失败"}, ensure_ascii=False).encode()
        return WebhookReply(400, body, "application/json")
