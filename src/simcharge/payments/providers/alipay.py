"""Alipay Open Platform (the `gateway.do` API, RSA2 keys in public-key mode).

Page and wap payments are not server calls: we sign the request and send the payer's browser
to the gateway with it. Query, close and refund are signed POSTs whose `<method>_response` is
verified over its raw text. Notifications are form posts verified over their sorted fields.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from pydantic import SecretStr

from simcharge.kit.clock import utcnow
from simcharge.kit.money import LossyConversionError, from_minor, to_minor
from simcharge.payments.providers._common import (
    china_time,
    delivered_body,
    delivered_headers,
    header,
    parse_china_time,
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
    alipay_notify_sign_content,
    alipay_request_sign_content,
    json_member_spans,
    load_rsa_private_key,
    load_rsa_public_key,
    rsa_sha256_sign,
    rsa_sha256_verify,
)

NAME = "alipay"
LIVE_GATEWAY = "https://openapi.alipay.com/gateway.do"
SANDBOX_GATEWAY = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"
CURRENCY = "CNY"
SUCCESS = "10000"
PRODUCT_CODES = {PaymentFlow.redirect: "FAST_INSTANT_TRADE_PAY", PaymentFlow.wap: "QUICK_WAP_WAY"}
PAY_METHODS = {
    PaymentFlow.redirect: "alipay.trade.page.pay",
    PaymentFlow.wap: "alipay.trade.wap.pay",
}
OUT_TRADE_NO = re.compile(r"^[A-Za-z0-9_]{1,64}$")
"""Alipay's `out_trade_no`: unlike our references, no '-'."""
NOTIFY_CHARSETS = frozenset({"utf-8", "gbk", "gb2312"})
# Sub-codes that say "ask again later"; every other business error stays as it is.
TRANSIENT_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "aop.ACQ.SYSTEM_ERROR", "isp.unknow-error"})


@dataclass(frozen=True, slots=True)
class AlipayConfig:
    app_id: str
    private_key: SecretStr
    """The app's private key (PEM, PKCS#1 or PKCS#8, or bare base64 as the console shows it)."""
    alipay_public_key: str
    """Alipay's public key (not the app's): verifies responses and notifications."""
    gateway: str = LIVE_GATEWAY
    timeout: float = 30.0
    notify_max_age: timedelta = timedelta(hours=26)
    """How old a notification's `notify_time` may be. Alipay sends a notification again until
    it is answered `success`, for about 25 hours (4 m, 10 m, 10 m, 1 h, 2 h, 6 h, 15 h after the
    first); whether a retry carries a new `notify_time` is not documented, so every retry must
    fit. Replays inside the window are stopped by `notify_id` (stored once)."""
    notify_max_ahead: timedelta = timedelta(minutes=5)
    """How far in the future `notify_time` may be (clocks differ)."""
    seller_id: str | None = None
    """Our seller id (`2088…`, the merchant's Alipay account): a notification naming another
    seller, or none, is rejected as `foreign`. None: not compared."""


def yuan(minor: int, currency: str) -> str:
    """Minor units (fen) → Alipay's `"19.99"`; only CNY is accepted."""
    if currency != CURRENCY:
        raise LossyConversionError(f"Alipay takes {CURRENCY} only, not {currency}")
    return str(from_minor(minor, CURRENCY))


def _fen(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return to_minor(value, CURRENCY)
    except LossyConversionError:
        return None


def trade_state(
    trade_status: str | None, *, refunded: int, total: int | None, paid: bool
) -> PaymentState:
    """A `trade_status`: TRADE_CLOSED is a timeout, a close, or a full refund of a paid trade."""
    if trade_status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
        if refunded and total is not None and refunded >= total:
            return PaymentState.refunded
        return PaymentState.partially_refunded if refunded else PaymentState.succeeded
    if trade_status == "TRADE_CLOSED":
        return PaymentState.refunded if (refunded or paid) else PaymentState.cancelled
    return PaymentState.pending


def parse_response(text: str, method: str) -> tuple[dict[str, Any], str, str | None]:
    """(the `<method>_response` object, its raw text, the `sign`) from a gateway answer.

    Raises ValueError when the answer is not a gateway response.
    """
    spans = json_member_spans(text)
    key = method.replace(".", "_") + "_response"
    if key not in spans:
        key = "error_response"
    if key not in spans:
        raise ValueError("no response object")
    start, end = spans[key]
    raw = text[start:end]
    found = json.loads(raw)
    if not isinstance(found, dict):
        raise ValueError("the response is not an object")
    sign = None
    if "sign" in spans:
        value = json.loads(text[spans["sign"][0] : spans["sign"][1]])
        sign = value if isinstance(value, str) else None
    return found, raw, sign


class AlipayProvider:
    """Alipay: computer website payment (page.pay) and mobile website payment (wap.pay)."""

    name = NAME
    flows = frozenset({PaymentFlow.redirect, PaymentFlow.wap})

    def __init__(self, config: AlipayConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._client = client
        self._private_key = load_rsa_private_key(config.private_key.get_secret_value())
        self._alipay_key = load_rsa_public_key(config.alipay_public_key)

    def _signed(self, method: str, biz: Mapping[str, Any], **extra: str) -> dict[str, str]:
        params = {
            "app_id": self.config.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": china_time(utcnow()),
            "version": "1.0",
            **extra,
            # serialised once: the signed text and the sent text must be the same bytes
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        params["sign"] = rsa_sha256_sign(
            self._private_key, alipay_request_sign_content(params)
        ).decode()
        return params

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        if request.flow not in self.flows:
            raise ProviderError(
                NAME, "unsupported_flow", f"no {request.flow} flow", transient=False
            )
        if not OUT_TRADE_NO.match(request.reference):
            raise ProviderError(
                NAME,
                "invalid_reference",
                "Alipay takes letters, digits and '_' only",
                transient=False,
            )
        try:
            amount = yuan(request.amount, request.currency)
        except LossyConversionError as exc:
            raise ProviderError(NAME, "unsupported_currency", str(exc), transient=False) from exc
        biz: dict[str, Any] = {
            "out_trade_no": request.reference,
            "total_amount": amount,
            "subject": request.description[:256],
            "product_code": PRODUCT_CODES[request.flow],
            "time_expire": china_time(request.expires_at),
        }
        if request.flow is PaymentFlow.wap:
            biz["quit_url"] = request.cancel_url
        method = PAY_METHODS[request.flow]
        params = self._signed(
            method, biz, notify_url=request.notify_url, return_url=request.return_url
        )
        return Checkout(
            provider_ref=request.reference,
            redirect_url=f"{self.config.gateway}?{urlencode(params)}",
            qr_payload=None,
            expires_at=request.expires_at,
            raw={"method": method, "biz_content": biz},
        )

    async def _execute(self, method: str, biz: Mapping[str, Any]) -> dict[str, Any]:
        """One signed server call; the verified response object, whatever its `code`."""
        response = await send(
            self._client,
            NAME,
            "POST",
            self.config.gateway,
            time_limit=self.config.timeout,
            headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
            content=urlencode(self._signed(method, biz)).encode("ascii"),
        )
        if response.status_code != 200:
            raise ProviderError(
                NAME,
                f"http_{response.status_code}",
                f"the gateway answered {response.status_code}",
                transient=transient_status(response.status_code),
                status=response.status_code,
            )
        try:
            found, raw, sign = parse_response(response.content.decode("utf-8"), method)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ProviderError(NAME, "bad_response", str(exc), transient=True, status=200) from exc
        if sign is not None:
            if not rsa_sha256_verify(self._alipay_key, raw.encode("utf-8"), sign):
                # Alipay answered, and may have done what was asked (a refund): only our check
                # of its answer failed (its key changed). Not a refusal — asked again later, the
                # request is idempotent (`out_trade_no`, `out_request_no`).
                raise ProviderError(
                    NAME,
                    "bad_response_signature",
                    f"{method}: the signature does not verify",
                    transient=True,
                    status=200,
                )
        elif found.get("code") == SUCCESS:
            # An error may come unsigned; a success never counts without Alipay's signature.
            raise ProviderError(
                NAME,
                "unsigned_response",
                f"{method}: success without a signature",
                transient=True,
                status=200,
            )
        return found

    @staticmethod
    def _error(found: Mapping[str, Any]) -> ProviderError:
        code = str_at(found, "code") or ""
        sub_code = str_at(found, "sub_code")
        message = str_at(found, "sub_msg") or str_at(found, "msg") or "business error"
        transient = code == "20000" or sub_code in TRANSIENT_SUB_CODES
        return ProviderError(NAME, sub_code or code, message, transient=transient)

    async def query(self, reference: str, provider_ref: str | None) -> PaymentStatus:
        found = await self._execute("alipay.trade.query", {"out_trade_no": reference})
        if found.get("code") != SUCCESS:
            if found.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
                # page.pay creates the trade only once the payer opens Alipay's page
                return PaymentStatus(
                    PaymentState.pending,
                    reference,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    found,
                    provider_state="ACQ.TRADE_NOT_EXIST",
                )
            raise self._error(found)
        total = _fen(str_at(found, "total_amount"))
        paid_at = parse_china_time(str_at(found, "send_pay_date"))
        status = str_at(found, "trade_status")
        return PaymentStatus(
            state=trade_state(status, refunded=0, total=total, paid=paid_at is not None),
            reference=str_at(found, "out_trade_no") or reference,
            provider_ref=str_at(found, "trade_no"),
            payment_id=str_at(found, "trade_no"),
            amount=total,
            currency=CURRENCY,
            merchant=None,
            paid_at=paid_at,
            raw=found,
            provider_state=status,
        )

    async def close(self, reference: str, provider_ref: str | None) -> None:
        found = await self._execute("alipay.trade.close", {"out_trade_no": reference})
        if found.get("code") == SUCCESS or found.get("sub_code") == "ACQ.TRADE_NOT_EXIST":
            return
        if found.get("sub_code") == "ACQ.TRADE_STATUS_ERROR":  # paid, or closed already
            status = await self.query(reference, provider_ref)
            if status.state is PaymentState.cancelled:
                return
            if status.state is not PaymentState.pending:
                raise ProviderError(
                    NAME, "already_paid", f"trade {reference} is paid", transient=False
                )
        raise self._error(found)

    async def refund(self, request: RefundRequest) -> RefundResult:
        if not OUT_TRADE_NO.match(request.reference):
            raise ProviderError(
                NAME,
                "invalid_reference",
                "Alipay takes letters, digits and '_' only",
                transient=False,
            )
        try:
            amount = yuan(request.amount, request.currency)
        except LossyConversionError as exc:
            raise ProviderError(NAME, "unsupported_currency", str(exc), transient=False) from exc
        biz: dict[str, Any] = {
            "out_trade_no": request.reference,
            "trade_no": request.payment_id,
            "refund_amount": amount,
            "out_request_no": request.refund_id,
        }
        if request.reason:
            biz["refund_reason"] = request.reason[:256]
        found = await self._execute("alipay.trade.refund", biz)
        if found.get("code") != SUCCESS:
            raise self._error(found)
        if found.get("fund_change") == "Y":
            return RefundResult(
                refund_id=request.refund_id,
                provider_refund_id=None,
                state=RefundState.succeeded,
                amount=request.amount,
                currency=CURRENCY,
                raw={"refund": found},
                reference=request.reference,
                payment_id=str_at(found, "trade_no") or request.payment_id,
            )
        # "N" also answers a repeated out_request_no whose money moved the first time
        confirmed = await self.query_refund(request, None)
        return dataclasses.replace(
            confirmed,
            raw={"refund": found, **confirmed.raw},
            payment_id=str_at(found, "trade_no") or confirmed.payment_id,
        )

    async def query_refund(
        self, request: RefundRequest, provider_refund_id: str | None
    ) -> RefundResult:
        """`alipay.trade.fastpay.refund.query` by `out_request_no` (Alipay has no refund id of
        its own): `refund_status` `REFUND_SUCCESS` is done; without it, the refund is not (yet)
        done at Alipay — still pending here. Never `alipay.trade.refund` again."""
        confirmed = await self._execute(
            "alipay.trade.fastpay.refund.query",
            {"out_trade_no": request.reference, "out_request_no": request.refund_id},
        )
        done = (
            confirmed.get("code") == SUCCESS
            and confirmed.get("refund_status") == "REFUND_SUCCESS"
        )
        return RefundResult(
            refund_id=request.refund_id,
            provider_refund_id=None,
            state=RefundState.succeeded if done else RefundState.pending,
            amount=request.amount,
            currency=CURRENCY,
            raw={"refund_query": confirmed},
            reference=request.reference,
            payment_id=str_at(confirmed, "trade_no") or request.payment_id,
        )

    async def find_refund(self, request: RefundRequest) -> RefundSearch:
        """`alipay.trade.fastpay.refund.query` by our `out_request_no`: done (`REFUND_SUCCESS`),
        it is adopted; else Alipay asks that it be sent again with the same `out_request_no`
        and amount, which refunds a trade once however late (no expiry, unlike an idempotency
        key). No read reports the trade's refunded total (`alipay.trade.query` documents no
        `refund_fee`; the refund call and the notification do): None."""
        confirmed = await self.query_refund(request, None)
        found = confirmed if confirmed.state is RefundState.succeeded else None
        return RefundSearch(found, None)

    async def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now: datetime
    ) -> Notification:
        params = self._notify_params(headers, body)
        sign, sign_type = params.get("sign"), params.get("sign_type")
        if not sign or not sign_type:
            raise NotificationRejected("malformed", "no sign or sign_type")
        if sign_type != "RSA2":
            raise NotificationRejected("bad-signature", f"sign_type {sign_type} is not accepted")
        charset = (params.get("charset") or "utf-8").lower()
        content = alipay_notify_sign_content(params, charset)
        if not rsa_sha256_verify(self._alipay_key, content, sign):
            raise NotificationRejected("bad-signature", "the signature does not verify")
        notify_id, out_trade_no = params.get("notify_id"), params.get("out_trade_no")
        trade_status = params.get("trade_status")
        if not notify_id or not out_trade_no or not trade_status:
            raise NotificationRejected("malformed", "not a trade status notification")
        seller_id = self.config.seller_id
        if seller_id and params.get("seller_id") != seller_id:
            raise NotificationRejected("foreign", f"seller_id {params.get('seller_id')!r}")
        sent_at = parse_china_time(params.get("notify_time"))
        if sent_at is None:
            raise NotificationRejected("malformed", "no notify_time")
        if not now - self.config.notify_max_age <= sent_at <= now + self.config.notify_max_ahead:
            raise NotificationRejected("stale", f"notify_time {params.get('notify_time')}")
        total = _fen(params.get("total_amount"))
        refunded = _fen(params.get("refund_fee")) or 0
        paid_at = parse_china_time(params.get("gmt_payment"))
        status = PaymentStatus(
            # TRADE_CLOSED of a trade that had a payment time: it was refunded in full
            state=trade_state(
                trade_status, refunded=refunded, total=total, paid=paid_at is not None
            ),
            reference=out_trade_no,
            provider_ref=params.get("trade_no"),
            payment_id=params.get("trade_no"),
            amount=total,
            currency=CURRENCY,
            merchant=params.get("app_id"),
            paid_at=paid_at,
            raw=params,
            provider_state=trade_status,
            refunded_amount=refunded or None,
        )
        event_type = f"{params.get('notify_type') or 'trade_status_sync'}.{trade_status}"
        return Notification(
            NAME,
            notify_id,
            event_type,
            status,
            None,
            params,
            body=delivered_body(body),
            headers=delivered_headers(headers, ()),  # the signature is in the body
        )

    @staticmethod
    def _notify_params(headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        content_type = (header(headers, "Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in ("", "application/x-www-form-urlencoded"):
            raise NotificationRejected("malformed", f"unexpected content type {content_type}")
        try:
            text = body.decode("ascii")
            probe = dict(parse_qsl(text, keep_blank_values=True, encoding="latin-1"))
            charset = (probe.get("charset") or "utf-8").lower()
            if charset not in NOTIFY_CHARSETS:
                raise NotificationRejected("malformed", f"charset {charset}")
            pairs = parse_qsl(
                text, keep_blank_values=True, strict_parsing=True, encoding=charset, errors="strict"
            )
        except ValueError as exc:  # includes UnicodeDecodeError
            raise NotificationRejected("malformed", "not a form-encoded body") from exc
        params = dict(pairs)
        if len(params) != len(pairs):
            raise NotificationRejected("malformed", "a field appears twice")
        return params

    def reply(self, accepted: bool) -> WebhookReply:
        if accepted:
            return WebhookReply(200, b"success", "text/plain")
        return WebhookReply(400, b"failure", "text/plain")
