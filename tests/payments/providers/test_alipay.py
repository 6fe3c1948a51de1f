"""Alipay: signed gateway URLs, signed server calls verified over the raw response, notifies."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from simcharge.payments.providers.alipay import AlipayConfig, AlipayProvider
from simcharge.payments.providers.base import (
    CheckoutRequest,
    NotificationRejected,
    PaymentFlow,
    PaymentState,
    ProviderError,
    RefundRequest,
    RefundState,
)

from .conftest import NOW, private_pem

GATEWAY = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"
APP_ID = "2021000000000000"
TRADE_NO = "2026112622001004920264050508"


def bare_public_key(key: rsa.RSAPrivateKey) -> str:
    """Alipay's console shows its public key as base64 DER without PEM armour."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture
def provider(
    http: httpx.AsyncClient,
    frozen_now: datetime,
    merchant_key: rsa.RSAPrivateKey,
    provider_key: rsa.RSAPrivateKey,
) -> AlipayProvider:
    config = AlipayConfig(
        APP_ID,
        SecretStr(private_pem(merchant_key, pkcs1=True)),
        bare_public_key(provider_key),
        gateway=GATEWAY,
    )
    return AlipayProvider(config, http)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def checkout_request(**changes: Any) -> CheckoutRequest:
    fields: dict[str, Any] = {
        "reference": "ord_123456",
        "amount": 1999,
        "currency": "CNY",
        "description": "eSIM 5 GB 30 天",
        "return_url": "https://shop.test/orders/ord_123456/return",
        "cancel_url": "https://shop.test/orders/ord_123456/cancel",
        "notify_url": "https://shop.test/webhooks/alipay",
        "expires_at": NOW + timedelta(hours=2),
        "language": "zh-Hans",
        "flow": PaymentFlow.redirect,
        "idempotency_key": "checkout-ord_123456-1",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


def sign_content(params: dict[str, str], *, drop: tuple[str, ...], keep_empty: bool,
                 encoding: str = "utf-8") -> bytes:
    """Alipay's rule, written out here independently of the code under test: the content in
    the message's charset (`rsaCheckV1(params, key, charset)` signs `getBytes(charset)`)."""
    items = sorted((k, v) for k, v in params.items() if k not in drop and (keep_empty or v))
    return "&".join(f"{k}={v}" for k, v in items).encode(encoding)


def rsa2(key: rsa.RSAPrivateKey, content: bytes) -> str:
    return base64.b64encode(key.sign(content, padding.PKCS1v15(), hashes.SHA256())).decode()


def assert_signed_by(params: dict[str, str], key: rsa.RSAPrivateKey) -> None:
    content = sign_content(params, drop=("sign",), keep_empty=False)
    signature = base64.b64decode(params["sign"])
    key.public_key().verify(signature, content, padding.PKCS1v15(), hashes.SHA256())


def sent_params(request: httpx.Request) -> dict[str, str]:
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded;charset=utf-8"
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True, strict_parsing=True))


def gateway_response(
    method: str, obj: dict[str, Any], key: rsa.RSAPrivateKey | None, *, sign_first: bool = False
) -> bytes:
    """A gateway answer signed over the exact text of `<method>_response`: compact, with raw
    UTF-8 and an escaped slash, so that only the raw text verifies, never a re-serialisation."""
    name = method.replace(".", "_") + "_response"
    inner = json.dumps({**obj, "note": "a/b 交易"}, ensure_ascii=False, separators=(",", ":"))
    inner = inner.replace("a/b", "a\\/b")
    if key is None:
        return f'{{"{name}":{inner}}}'.encode()
    sign = rsa2(key, inner.encode())
    if sign_first:
        return f'{{"sign":"{sign}", "{name}" :\n {inner}}}'.encode()
    return f'{{"{name}":{inner},"sign":"{sign}"}}'.encode()


def trade(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": "10000", "msg": "Success", "trade_no": TRADE_NO, "out_trade_no": "ord_123456",
        "buyer_logon_id": "403***@qq.com", "trade_status": "TRADE_SUCCESS", "total_amount": "19.99",
        "buyer_pay_amount": "19.99", "receipt_amount": "19.99", "send_pay_date": "2026-11-26 17:58:00",
    }
    body.update(changes)
    return body


NOT_EXIST = {
    "code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST",
    "sub_msg": "交易不存在", "out_trade_no": "ord_123456",
}


# --- checkout ----------------------------------------------------------------------------------


async def test_page_pay_is_a_signed_gateway_url(
    provider: AlipayProvider, merchant_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    checkout = await provider.create_checkout(checkout_request())

    assert not mock.calls
    assert checkout.redirect_url is not None
    url = urlsplit(checkout.redirect_url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == GATEWAY
    assert "timestamp=2026-11-26+18%3A00%3A00" in url.query
    params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
    assert params["app_id"] == APP_ID
    assert params["method"] == "alipay.trade.page.pay"
    assert (params["charset"], params["sign_type"], params["version"]) == ("utf-8", "RSA2", "1.0")
    assert params["timestamp"] == "2026-11-26 18:00:00"
    assert params["notify_url"] == "https://shop.test/webhooks/alipay"
    assert params["return_url"] == "https://shop.test/orders/ord_123456/return"
    assert json.loads(params["biz_content"]) == {
        "out_trade_no": "ord_123456",
        "total_amount": "19.99",
        "subject": "eSIM 5 GB 30 天",
        "product_code": "FAST_INSTANT_TRADE_PAY",
        "time_expire": "2026-11-26 20:00:00",
    }
    assert_signed_by(params, merchant_key)
    assert checkout.provider_ref == "ord_123456"
    assert checkout.qr_payload is None
    assert checkout.expires_at == NOW + timedelta(hours=2)


async def test_wap_pay_uses_the_mobile_product_and_a_quit_url(
    provider: AlipayProvider, merchant_key: rsa.RSAPrivateKey
) -> None:
    checkout = await provider.create_checkout(checkout_request(flow=PaymentFlow.wap))
    assert checkout.redirect_url is not None
    params = {k: v[0] for k, v in parse_qs(urlsplit(checkout.redirect_url).query).items()}
    biz = json.loads(params["biz_content"])
    assert params["method"] == "alipay.trade.wap.pay"
    assert biz["product_code"] == "QUICK_WAP_WAY"
    assert biz["quit_url"] == "https://shop.test/orders/ord_123456/cancel"
    assert_signed_by(params, merchant_key)


async def test_a_reference_with_a_dash_is_refused(provider: AlipayProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request(reference="ord-123456"))
    assert (caught.value.code, caught.value.transient) == ("invalid_reference", False)


async def test_only_yuan_and_only_web_flows_are_offered(provider: AlipayProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request(currency="USD"))
    assert (caught.value.code, caught.value.transient) == ("unsupported_currency", False)
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request(flow=PaymentFlow.qr))
    assert caught.value.code == "unsupported_flow"


# --- query -------------------------------------------------------------------------------------


async def test_query_is_a_signed_post_and_its_signed_answer_is_read(
    provider: AlipayProvider,
    merchant_key: rsa.RSAPrivateKey,
    provider_key: rsa.RSAPrivateKey,
    mock: respx.MockRouter,
) -> None:
    route = mock.post(GATEWAY).respond(
        200, content=gateway_response("alipay.trade.query", trade(), provider_key)
    )
    status = await provider.query("ord_123456", "ord_123456")

    params = sent_params(route.calls.last.request)
    assert params["method"] == "alipay.trade.query"
    assert json.loads(params["biz_content"]) == {"out_trade_no": "ord_123456"}
    assert_signed_by(params, merchant_key)
    assert status.state is PaymentState.succeeded
    assert (status.reference, status.provider_ref, status.payment_id) == (
        "ord_123456", TRADE_NO, TRADE_NO,
    )
    assert (status.amount, status.currency) == (1999, "CNY")
    assert status.paid_at == NOW - timedelta(minutes=2)


async def test_the_signature_may_come_first(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    mock.post(GATEWAY).respond(
        200, content=gateway_response("alipay.trade.query", trade(), provider_key, sign_first=True)
    )
    assert (await provider.query("ord_123456", None)).state is PaymentState.succeeded


@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({"trade_status": "WAIT_BUYER_PAY", "send_pay_date": None}, PaymentState.pending),
        ({"trade_status": "TRADE_FINISHED"}, PaymentState.succeeded),
        ({"trade_status": "TRADE_CLOSED", "send_pay_date": None}, PaymentState.cancelled),
        ({"trade_status": "TRADE_CLOSED"}, PaymentState.refunded),
    ],
)
async def test_query_maps_trade_statuses(
    provider: AlipayProvider,
    provider_key: rsa.RSAPrivateKey,
    mock: respx.MockRouter,
    changes: dict[str, Any],
    state: PaymentState,
) -> None:
    body = {k: v for k, v in trade(**changes).items() if v is not None}
    mock.post(GATEWAY).respond(200, content=gateway_response("alipay.trade.query", body, provider_key))
    assert (await provider.query("ord_123456", None)).state is state


async def test_a_trade_alipay_does_not_know_yet_is_pending(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    mock.post(GATEWAY).respond(
        200, content=gateway_response("alipay.trade.query", NOT_EXIST, provider_key)
    )
    status = await provider.query("ord_123456", None)
    assert (status.state, status.provider_ref, status.amount) == (PaymentState.pending, None, None)


async def test_a_response_signed_by_someone_else_is_refused(
    provider: AlipayProvider, stranger_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    """Never believed — and never taken for a refusal either: Alipay may have done what was
    asked (a refund), only our check of its answer failed. Asked again later (transient)."""
    mock.post(GATEWAY).respond(
        200, content=gateway_response("alipay.trade.query", trade(), stranger_key)
    )
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert (caught.value.code, caught.value.transient) == ("bad_response_signature", True)
    mock.post(GATEWAY).respond(
        200, content=gateway_response("alipay.trade.refund", refunded(), stranger_key))
    with pytest.raises(ProviderError) as caught:
        await provider.refund(REFUND)
    assert (caught.value.code, caught.value.transient) == ("bad_response_signature", True)


async def test_a_tampered_response_is_refused(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    signed = gateway_response("alipay.trade.query", trade(trade_status="WAIT_BUYER_PAY"), provider_key)
    tampered = signed.replace(b"WAIT_BUYER_PAY", b"TRADE_SUCCESS")
    mock.post(GATEWAY).respond(200, content=tampered)
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert caught.value.code == "bad_response_signature"


async def test_an_unsigned_success_is_never_believed(
    provider: AlipayProvider, mock: respx.MockRouter
) -> None:
    mock.post(GATEWAY).respond(200, content=gateway_response("alipay.trade.query", trade(), None))
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert (caught.value.code, caught.value.transient) == ("unsigned_response", True)


async def test_an_unsigned_gateway_error_is_reported(
    provider: AlipayProvider, mock: respx.MockRouter
) -> None:
    error = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature",
             "sub_msg": "验签出错"}
    mock.post(GATEWAY).respond(200, content=f'{{"error_response":{json.dumps(error)}}}'.encode())
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert (caught.value.code, caught.value.transient) == ("isv.invalid-signature", False)


@pytest.mark.parametrize(
    ("body", "code", "transient"),
    [
        ({"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"},
         "isp.unknow-error", True),
        ({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.SYSTEM_ERROR"},
         "ACQ.SYSTEM_ERROR", True),
        ({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.INVALID_PARAMETER"},
         "ACQ.INVALID_PARAMETER", False),
    ],
)
async def test_business_errors_keep_their_sub_code(
    provider: AlipayProvider,
    provider_key: rsa.RSAPrivateKey,
    mock: respx.MockRouter,
    body: dict[str, Any],
    code: str,
    transient: bool,
) -> None:
    mock.post(GATEWAY).respond(200, content=gateway_response("alipay.trade.query", body, provider_key))
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert (caught.value.code, caught.value.transient) == (code, transient)


@pytest.mark.parametrize(
    ("response", "code", "transient"),
    [
        (httpx.Response(502, content=b"Bad Gateway"), "http_502", True),
        (httpx.Response(200, content=b"<html>busy</html>"), "bad_response", True),
        (httpx.Response(200, content=b'{"other_response": {}}'), "bad_response", True),
    ],
)
async def test_broken_answers_are_errors(
    provider: AlipayProvider, mock: respx.MockRouter, response: httpx.Response, code: str,
    transient: bool,
) -> None:
    mock.post(GATEWAY).mock(return_value=response)
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert (caught.value.code, caught.value.transient) == (code, transient)


async def test_a_timeout_is_transient(provider: AlipayProvider, mock: respx.MockRouter) -> None:
    mock.post(GATEWAY).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert (caught.value.code, caught.value.transient) == ("timeout", True)


# --- close -------------------------------------------------------------------------------------


async def test_close_closes_the_trade(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    closed = {"code": "10000", "msg": "Success", "trade_no": TRADE_NO, "out_trade_no": "ord_123456"}
    route = mock.post(GATEWAY).respond(
        200, content=gateway_response("alipay.trade.close", closed, provider_key)
    )
    await provider.close("ord_123456", "ord_123456")
    params = sent_params(route.calls.last.request)
    assert params["method"] == "alipay.trade.close"
    assert json.loads(params["biz_content"]) == {"out_trade_no": "ord_123456"}


async def test_closing_a_trade_alipay_never_created_is_fine(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    mock.post(GATEWAY).respond(200, content=gateway_response("alipay.trade.close", NOT_EXIST, provider_key))
    await provider.close("ord_123456", "ord_123456")


STATUS_ERROR = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_STATUS_ERROR",
                "sub_msg": "交易状态不合法"}


async def test_closing_a_paid_trade_says_already_paid(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    mock.post(GATEWAY).mock(
        side_effect=[
            httpx.Response(200, content=gateway_response("alipay.trade.close", STATUS_ERROR, provider_key)),
            httpx.Response(200, content=gateway_response("alipay.trade.query", trade(), provider_key)),
        ]
    )
    with pytest.raises(ProviderError) as caught:
        await provider.close("ord_123456", "ord_123456")
    assert (caught.value.code, caught.value.transient) == ("already_paid", False)


async def test_closing_a_closed_trade_is_fine(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    closed = {k: v for k, v in trade(trade_status="TRADE_CLOSED").items() if k != "send_pay_date"}
    mock.post(GATEWAY).mock(
        side_effect=[
            httpx.Response(200, content=gateway_response("alipay.trade.close", STATUS_ERROR, provider_key)),
            httpx.Response(200, content=gateway_response("alipay.trade.query", closed, provider_key)),
        ]
    )
    await provider.close("ord_123456", "ord_123456")


# --- refunds -----------------------------------------------------------------------------------


def refunded(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": "10000", "msg": "Success", "buyer_logon_id": "150****8675", "fund_change": "Y",
        "gmt_refund_pay": "2026-11-26 18:00:01", "out_trade_no": "ord_123456", "refund_fee": "5.00",
        "send_back_fee": "0.00", "trade_no": TRADE_NO,
    }
    body.update(changes)
    return body


REFUND = RefundRequest("ord_123456", TRADE_NO, "rf_ord_123456_1", 500, 1999, "CNY", "未激活")


async def test_refund_sends_yuan_and_our_request_number(
    provider: AlipayProvider,
    merchant_key: rsa.RSAPrivateKey,
    provider_key: rsa.RSAPrivateKey,
    mock: respx.MockRouter,
) -> None:
    route = mock.post(GATEWAY).respond(
        200, content=gateway_response("alipay.trade.refund", refunded(), provider_key)
    )
    result = await provider.refund(REFUND)
    params = sent_params(route.calls.last.request)
    assert params["method"] == "alipay.trade.refund"
    assert json.loads(params["biz_content"]) == {
        "out_trade_no": "ord_123456",
        "trade_no": TRADE_NO,
        "refund_amount": "5.00",
        "out_request_no": "rf_ord_123456_1",
        "refund_reason": "未激活",
    }
    assert_signed_by(params, merchant_key)
    assert result.state is RefundState.succeeded
    assert (result.refund_id, result.amount, result.currency) == ("rf_ord_123456_1", 500, "CNY")


@pytest.mark.parametrize(
    ("confirmation", "state"),
    [
        ({"code": "10000", "msg": "Success", "out_request_no": "rf_ord_123456_1",
          "refund_amount": "5.00", "refund_status": "REFUND_SUCCESS"}, RefundState.succeeded),
        ({"code": "10000", "msg": "Success"}, RefundState.pending),
    ],
)
async def test_a_refund_without_fund_change_is_confirmed_by_a_refund_query(
    provider: AlipayProvider,
    provider_key: rsa.RSAPrivateKey,
    mock: respx.MockRouter,
    confirmation: dict[str, Any],
    state: RefundState,
) -> None:
    route = mock.post(GATEWAY).mock(
        side_effect=[
            httpx.Response(200, content=gateway_response(
                "alipay.trade.refund", refunded(fund_change="N"), provider_key)),
            httpx.Response(200, content=gateway_response(
                "alipay.trade.fastpay.refund.query", confirmation, provider_key)),
        ]
    )
    result = await provider.refund(REFUND)
    query = sent_params(route.calls.last.request)
    assert query["method"] == "alipay.trade.fastpay.refund.query"
    assert json.loads(query["biz_content"]) == {
        "out_trade_no": "ord_123456", "out_request_no": "rf_ord_123456_1",
    }
    assert result.state is state


async def test_a_refused_refund_is_a_permanent_error(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey, mock: respx.MockRouter
) -> None:
    refused = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_HAS_FINISHED",
               "sub_msg": "交易已完结"}
    mock.post(GATEWAY).respond(200, content=gateway_response("alipay.trade.refund", refused, provider_key))
    with pytest.raises(ProviderError) as caught:
        await provider.refund(REFUND)
    assert (caught.value.code, caught.value.transient) == ("ACQ.TRADE_HAS_FINISHED", False)


# --- notifications -----------------------------------------------------------------------------


def notify_params(**changes: str) -> dict[str, str]:
    params = {
        "gmt_create": "2026-11-26 17:57:44", "charset": "utf-8", "seller_email": "shop@example.com",
        "subject": "eSIM 5 GB 30 天", "sign_type": "RSA2", "buyer_id": "2088102116773037",
        "invoice_amount": "19.99", "notify_id": "2026112600222175802003031438547866",
        "fund_bill_list": '[{"amount":"19.99","fundChannel":"ALIPAYACCOUNT"}]',
        "notify_type": "trade_status_sync", "trade_status": "TRADE_SUCCESS",
        "receipt_amount": "19.99", "app_id": APP_ID, "buyer_pay_amount": "19.99",
        "seller_id": "2088102119685838", "gmt_payment": "2026-11-26 17:58:00",
        "notify_time": "2026-11-26 17:58:01", "version": "1.0", "out_trade_no": "ord_123456",
        "total_amount": "19.99", "trade_no": TRADE_NO, "auth_app_id": APP_ID,
        "buyer_logon_id": "403***@qq.com", "point_amount": "0.00", "body": "",
    }
    params.update(changes)
    return params


def notify_body(
    params: dict[str, str], key: rsa.RSAPrivateKey, *, with_sign_type: bool = False,
    encoding: str = "utf-8",
) -> bytes:
    """Alipay's notify: signed over the sorted fields minus sign and sign_type, form-encoded."""
    drop = ("sign",) if with_sign_type else ("sign", "sign_type")
    content = sign_content(params, drop=drop, keep_empty=True, encoding=encoding)
    signed = {**params, "sign": rsa2(key, content)}
    return urlencode(signed, encoding=encoding).encode("ascii")


FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


async def test_a_signed_payment_notification_is_a_success(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    body = notify_body(notify_params(), provider_key)
    notification = await provider.parse_notification(FORM, body, now=NOW)
    assert notification.provider == "alipay"
    assert notification.event_id == "2026112600222175802003031438547866"
    assert notification.event_type == "trade_status_sync.TRADE_SUCCESS"
    status = notification.status
    assert status is not None and status.state is PaymentState.succeeded
    assert (status.reference, status.provider_ref, status.payment_id) == ("ord_123456", TRADE_NO, TRADE_NO)
    assert (status.amount, status.currency, status.merchant) == (1999, "CNY", APP_ID)
    assert status.paid_at == NOW - timedelta(minutes=2)
    assert notification.raw["subject"] == "eSIM 5 GB 30 天"


async def test_a_gbk_notification_is_decoded_with_its_charset(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    """Decoded, and its signature checked, in its own charset, as Alipay signs it."""
    params = notify_params(charset="gbk", subject="流量包 5GB 30天")
    body = notify_body(params, provider_key, encoding="gbk")
    notification = await provider.parse_notification({}, body, now=NOW)
    assert notification.raw["subject"] == "流量包 5GB 30天"


@pytest.mark.parametrize(
    ("changes", "state", "refunded"),
    [
        ({"refund_fee": "5.00", "gmt_refund": "2026-11-26 18:00:00"}, PaymentState.partially_refunded, 500),
        ({"trade_status": "TRADE_CLOSED", "refund_fee": "19.99"}, PaymentState.refunded, 1999),
        ({"trade_status": "TRADE_CLOSED", "gmt_payment": ""}, PaymentState.cancelled, None),
        ({"trade_status": "TRADE_CLOSED"}, PaymentState.refunded, None),  # it had been paid
        ({"trade_status": "TRADE_FINISHED"}, PaymentState.succeeded, None),
        ({"trade_status": "WAIT_BUYER_PAY"}, PaymentState.pending, None),
    ],
)
async def test_notifications_map_trade_statuses_and_refunds(
    provider: AlipayProvider,
    provider_key: rsa.RSAPrivateKey,
    changes: dict[str, str],
    state: PaymentState,
    refunded: int | None,
) -> None:
    body = notify_body(notify_params(**changes), provider_key)
    status = (await provider.parse_notification(FORM, body, now=NOW)).status
    assert status is not None
    assert (status.state, status.refunded_amount) == (state, refunded)


@pytest.mark.parametrize(
    ("notify_time", "reason"),
    [
        ("2026-11-25 15:58:00", "stale"),  # 26 hours and 2 minutes old: past every retry
        ("2026-11-26 18:06:00", "stale"),  # 6 minutes ahead of our clock
        ("", "malformed"),
        ("yesterday", "malformed"),
    ],
)
async def test_a_notification_outside_the_freshness_window_is_rejected(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey, notify_time: str, reason: str
) -> None:
    body = notify_body(notify_params(notify_time=notify_time), provider_key)
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(FORM, body, now=NOW)
    assert caught.value.reason == reason


async def test_a_retry_a_day_later_is_still_accepted(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    """Alipay's last retry comes about 25 hours after the first notification."""
    body = notify_body(notify_params(notify_time="2026-11-25 17:00:00"), provider_key)
    notification = await provider.parse_notification(FORM, body, now=NOW)
    assert notification.status is not None
    assert notification.body == body.decode()  # kept as delivered


async def test_a_tampered_notification_is_rejected(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    body = notify_body(notify_params(), provider_key)
    tampered = body.replace(b"total_amount=19.99", b"total_amount=0.01")
    assert tampered != body
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(FORM, tampered, now=NOW)
    assert caught.value.reason == "bad-signature"


async def test_a_notification_signed_by_someone_else_is_rejected(
    provider: AlipayProvider, stranger_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(FORM, notify_body(notify_params(), stranger_key), now=NOW)
    assert caught.value.reason == "bad-signature"


async def test_sign_type_is_not_part_of_what_a_notification_signs(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    body = notify_body(notify_params(), provider_key, with_sign_type=True)
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(FORM, body, now=NOW)
    assert caught.value.reason == "bad-signature"


async def test_the_old_rsa_sha1_signature_type_is_refused(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    body = notify_body(notify_params(sign_type="RSA"), provider_key)
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(FORM, body, now=NOW)
    assert caught.value.reason == "bad-signature"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"a=1&a=2&sign=x&sign_type=RSA2",
        urlencode({k: v for k, v in notify_params().items() if k != "sign_type"}).encode(),
        b"charset=latin-9&sign=x&sign_type=RSA2",
    ],
)
async def test_unreadable_notifications_are_malformed(provider: AlipayProvider, body: bytes) -> None:
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(FORM, body, now=NOW)
    assert caught.value.reason == "malformed"


async def test_a_signed_notification_without_a_trade_is_malformed(
    provider: AlipayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    params = {k: v for k, v in notify_params().items() if k != "out_trade_no"}
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(FORM, notify_body(params, provider_key), now=NOW)
    assert caught.value.reason == "malformed"


def test_the_reply_is_exactly_success(provider: AlipayProvider) -> None:
    assert provider.reply(True).body == b"success"
    assert provider.reply(False).body == b"failure"


async def test_keys_load_from_pkcs8_with_escaped_newlines_and_from_pem_public_keys(
    http: httpx.AsyncClient, merchant_key: rsa.RSAPrivateKey, provider_key: rsa.RSAPrivateKey
) -> None:
    from .conftest import public_pem

    escaped = private_pem(merchant_key).replace("\n", "\\n")
    provider = AlipayProvider(
        AlipayConfig(APP_ID, SecretStr(escaped), public_pem(provider_key), gateway=GATEWAY), http
    )
    checkout = await provider.create_checkout(checkout_request())
    assert checkout.redirect_url is not None
    params = {k: v[0] for k, v in parse_qs(urlsplit(checkout.redirect_url).query).items()}
    assert_signed_by(params, merchant_key)
    with pytest.raises(ValueError, match="base64"):
        AlipayProvider(AlipayConfig(APP_ID, SecretStr("not a key!"), public_pem(provider_key)), http)
