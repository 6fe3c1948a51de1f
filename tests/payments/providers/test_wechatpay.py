"""WeChat Pay v3: signed requests, verified answers, encrypted and signed callbacks."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from simcharge.payments.providers.base import (
    CheckoutRequest,
    NotificationRejected,
    PaymentFlow,
    PaymentState,
    ProviderError,
    RefundRequest,
    RefundState,
)
from simcharge.payments.providers.wechatpay import WeChatPayConfig, WeChatPayProvider

from .certs import root_ca
from .conftest import NOW, private_pem, public_pem

API = "https://api.mch.weixin.qq.com"
MCHID = "1230000109"
APPID = "wxd678efh567hg6787"
MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
PUB_KEY_ID = "PUB_KEY_ID_0000000000000024101100397200000006"
CERT_SERIAL = "7132D72A03E93CDDF8C03BBD1F37EEDF9A98EA5D"
APIV3_KEY = "0123456789abcdefghijABCDEFGHIJ01"
TRANSACTION_ID = "4200000000202611261234567890"


@pytest.fixture(scope="module")
def cert_mode_key() -> rsa.RSAPrivateKey:
    from .conftest import new_rsa_key

    return new_rsa_key()


@pytest.fixture(scope="module")
def platform_certificate(cert_mode_key: rsa.RSAPrivateKey) -> str:
    """An older-style platform certificate (signed by some CA; only its key matters here)."""
    authority = root_ca("Tenpay.com Root CA")
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Tenpay.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(authority.cert.subject)
        .public_key(cert_mode_key.public_key())
        .serial_number(int(CERT_SERIAL, 16))
        .not_valid_before(NOW - timedelta(days=10))
        .not_valid_after(NOW + timedelta(days=1800))
        .sign(authority.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def provider(
    http: httpx.AsyncClient,
    frozen_now: datetime,
    merchant_key: rsa.RSAPrivateKey,
    provider_key: rsa.RSAPrivateKey,
    platform_certificate: str,
) -> WeChatPayProvider:
    config = WeChatPayConfig(
        MCHID,
        APPID,
        MERCHANT_SERIAL,
        SecretStr(private_pem(merchant_key)),
        SecretStr(APIV3_KEY),
        {PUB_KEY_ID: public_pem(provider_key), CERT_SERIAL: platform_certificate},
        api_base=API,
    )
    return WeChatPayProvider(config, http)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


def wechat_headers(
    body: bytes,
    key: rsa.RSAPrivateKey,
    *,
    serial: str = PUB_KEY_ID,
    at: datetime = NOW,
    nonce: str = "c5ac7061fccab6bf3e254dcf98995b8c",
) -> dict[str, str]:
    """WeChat Pay's signature headers, computed here independently of the code under test."""
    timestamp = str(int(at.timestamp()))
    message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
    signature = base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()
    return {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        "Request-ID": "08F78BB5AF0610D302100018901AA20D",
    }


def signed(status: int, payload: dict[str, Any] | None, key: rsa.RSAPrivateKey, **kw: Any) -> httpx.Response:
    body = json.dumps(payload, ensure_ascii=False).encode() if payload is not None else b""
    return httpx.Response(status, content=body, headers=wechat_headers(body, key, **kw))


def assert_signed_request(request: httpx.Request, key: rsa.RSAPrivateKey) -> None:
    """Check our Authorization header as WeChat Pay would."""
    scheme, _, rest = request.headers["Authorization"].partition(" ")
    assert scheme == "WECHATPAY2-SHA256-RSA2048"
    fields = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    assert fields["mchid"] == MCHID
    assert fields["serial_no"] == MERCHANT_SERIAL
    assert fields["timestamp"] == str(int(NOW.timestamp()))
    assert re.fullmatch(r"[0-9A-F]{32}", fields["nonce_str"])
    url = request.url.raw_path.decode()
    message = f"{request.method}\n{url}\n{fields['timestamp']}\n{fields['nonce_str']}\n".encode()
    message += request.content + b"\n"
    key.public_key().verify(
        base64.b64decode(fields["signature"]), message, padding.PKCS1v15(), hashes.SHA256()
    )


def checkout_request(**changes: Any) -> CheckoutRequest:
    fields: dict[str, Any] = {
        "reference": "ord_123456",
        "amount": 1999,
        "currency": "CNY",
        "description": "eSIM 5GB 30天",
        "return_url": "https://shop.test/orders/ord_123456/return",
        "cancel_url": "https://shop.test/orders/ord_123456/cancel",
        "notify_url": "https://shop.test/webhooks/wechatpay",
        "expires_at": NOW + timedelta(minutes=30),
        "language": "zh-Hans",
        "flow": PaymentFlow.qr,
        "idempotency_key": "checkout-ord_123456-1",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


def transaction(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "appid": APPID, "mchid": MCHID, "out_trade_no": "ord_123456",
        "transaction_id": TRANSACTION_ID, "trade_type": "NATIVE", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": "",
        "success_time": "2026-11-26T17:58:00+08:00", "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 1999, "payer_total": 1999, "currency": "CNY", "payer_currency": "CNY"},
    }
    body.update(changes)
    return body


# --- checkout ----------------------------------------------------------------------------------


async def test_native_creates_a_signed_order_and_returns_the_code_url(
    provider: WeChatPayProvider,
    mock: respx.MockRouter,
    merchant_key: rsa.RSAPrivateKey,
    provider_key: rsa.RSAPrivateKey,
) -> None:
    route = mock.post("/v3/pay/transactions/native").mock(
        return_value=signed(200, {"code_url": "weixin://wxpay/bizpayurl?pr=JyC91EIz1"}, provider_key)
    )
    checkout = await provider.create_checkout(checkout_request(expires_at=NOW + timedelta(hours=3)))

    request = route.calls.last.request
    assert_signed_request(request, merchant_key)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert json.loads(request.content) == {
        "appid": APPID,
        "mchid": MCHID,
        "description": "eSIM 5GB 30天",
        "out_trade_no": "ord_123456",
        "time_expire": "2026-11-26T21:00:00+08:00",
        "notify_url": "https://shop.test/webhooks/wechatpay",
        "amount": {"total": 1999, "currency": "CNY"},
    }
    assert checkout.provider_ref == "ord_123456"
    assert checkout.qr_payload == "weixin://wxpay/bizpayurl?pr=JyC91EIz1"
    assert checkout.redirect_url is None
    assert checkout.expires_at == NOW + timedelta(hours=2)


async def test_h5_sends_the_payer_ip_and_returns_a_page_that_comes_back(
    provider: WeChatPayProvider,
    mock: respx.MockRouter,
    merchant_key: rsa.RSAPrivateKey,
    provider_key: rsa.RSAPrivateKey,
) -> None:
    h5_url = "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx2611&package=2150917749"
    route = mock.post("/v3/pay/transactions/h5").mock(
        return_value=signed(200, {"h5_url": h5_url}, provider_key)
    )
    checkout = await provider.create_checkout(
        checkout_request(flow=PaymentFlow.wap, client_ip="14.23.150.211")
    )
    request = route.calls.last.request
    assert_signed_request(request, merchant_key)
    assert json.loads(request.content)["scene_info"] == {
        "payer_client_ip": "14.23.150.211",
        "h5_info": {"type": "Wap"},
    }
    assert checkout.redirect_url == (
        f"{h5_url}&redirect_url=https%3A%2F%2Fshop.test%2Forders%2Ford_123456%2Freturn"
    )
    assert checkout.qr_payload is None


async def test_h5_without_the_payer_ip_is_refused_before_any_call(
    provider: WeChatPayProvider, mock: respx.MockRouter
) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request(flow=PaymentFlow.wap))
    assert (caught.value.code, caught.value.transient) == ("client_ip_required", False)
    assert not mock.calls


@pytest.mark.parametrize(
    ("changes", "code"),
    [({"flow": PaymentFlow.redirect}, "unsupported_flow"), ({"currency": "USD"}, "unsupported_currency")],
)
async def test_other_flows_and_currencies_are_refused(
    provider: WeChatPayProvider, changes: dict[str, Any], code: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request(**changes))
    assert caught.value.code == code


# --- answers are verified ----------------------------------------------------------------------


async def test_an_unsigned_answer_is_refused(
    provider: WeChatPayProvider, mock: respx.MockRouter
) -> None:
    mock.post("/v3/pay/transactions/native").respond(200, json={"code_url": "weixin://wxpay/x"})
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request())
    # Never believed, nor taken for a refusal (WeChat Pay may have done it): asked again later.
    assert (caught.value.code, caught.value.transient) == ("unsigned_response", True)


@pytest.mark.parametrize(
    ("key_name", "headers", "code"),
    [
        ("stranger_key", {}, "bad_response_signature"),
        ("provider_key", {"serial": "UNKNOWN_SERIAL"}, "unknown_platform_key"),
        ("provider_key", {"at": NOW - timedelta(seconds=301)}, "stale_response"),
    ],
)
async def test_answers_not_signed_by_wechat_pay_now_are_refused(
    provider: WeChatPayProvider,
    mock: respx.MockRouter,
    request: pytest.FixtureRequest,
    key_name: str,
    headers: dict[str, Any],
    code: str,
) -> None:
    key = request.getfixturevalue(key_name)
    mock.get(f"/v3/pay/transactions/out-trade-no/ord_123456?mchid={MCHID}").mock(
        return_value=signed(200, transaction(), key, **headers)
    )
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert (caught.value.code, caught.value.transient) == (code, True)
    # A refund WeChat Pay took, whose answer we cannot verify (a platform key not configured
    # yet, our clock off): not a refusal — the refund is asked about again, never voided.
    mock.post("/v3/refund/domestic/refunds").mock(
        return_value=signed(200, refund_answer("PROCESSING"), key, **headers)
    )
    with pytest.raises(ProviderError) as caught:
        await provider.refund(RefundRequest(
            "ord_123456", TRANSACTION_ID, "rf_ord_123456_1", 500, 1999, "CNY", None))
    assert (caught.value.code, caught.value.transient) == (code, True)


async def test_a_tampered_answer_is_refused(
    provider: WeChatPayProvider, mock: respx.MockRouter, provider_key: rsa.RSAPrivateKey
) -> None:
    genuine = signed(200, transaction(trade_state="NOTPAY"), provider_key)
    forged = genuine.content.replace(b"NOTPAY", b"SUCCESS")
    mock.get(f"/v3/pay/transactions/out-trade-no/ord_123456?mchid={MCHID}").respond(
        200, content=forged, headers=dict(genuine.headers)
    )
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert caught.value.code == "bad_response_signature"


# --- query -------------------------------------------------------------------------------------


async def test_query_asks_by_our_reference_and_reads_the_transaction(
    provider: WeChatPayProvider,
    mock: respx.MockRouter,
    merchant_key: rsa.RSAPrivateKey,
    provider_key: rsa.RSAPrivateKey,
) -> None:
    route = mock.get(f"/v3/pay/transactions/out-trade-no/ord_123456?mchid={MCHID}").mock(
        return_value=signed(200, transaction(), provider_key)
    )
    status = await provider.query("ord_123456", "ord_123456")
    request = route.calls.last.request
    assert request.content == b""
    assert "Content-Type" not in request.headers
    assert_signed_request(request, merchant_key)
    assert status.state is PaymentState.succeeded
    assert (status.reference, status.provider_ref, status.payment_id) == (
        "ord_123456", TRANSACTION_ID, TRANSACTION_ID,
    )
    assert (status.amount, status.currency, status.merchant) == (1999, "CNY", MCHID)
    assert status.paid_at == NOW - timedelta(minutes=2)


async def test_a_platform_certificate_key_verifies_too(
    provider: WeChatPayProvider, mock: respx.MockRouter, cert_mode_key: rsa.RSAPrivateKey
) -> None:
    mock.get(f"/v3/pay/transactions/out-trade-no/ord_123456?mchid={MCHID}").mock(
        return_value=signed(200, transaction(), cert_mode_key, serial=CERT_SERIAL)
    )
    assert (await provider.query("ord_123456", None)).state is PaymentState.succeeded


@pytest.mark.parametrize(
    ("trade_state", "state"),
    [
        ("NOTPAY", PaymentState.pending),
        ("USERPAYING", PaymentState.pending),
        ("CLOSED", PaymentState.cancelled),
        ("REVOKED", PaymentState.cancelled),
        ("PAYERROR", PaymentState.failed),
        ("REFUND", PaymentState.partially_refunded),
    ],
)
async def test_query_maps_trade_states(
    provider: WeChatPayProvider,
    mock: respx.MockRouter,
    provider_key: rsa.RSAPrivateKey,
    trade_state: str,
    state: PaymentState,
) -> None:
    mock.get(f"/v3/pay/transactions/out-trade-no/ord_123456?mchid={MCHID}").mock(
        return_value=signed(200, transaction(trade_state=trade_state), provider_key)
    )
    assert (await provider.query("ord_123456", None)).state is state


async def test_refund_trade_state_is_a_refund_of_an_amount_not_reported(
    provider: WeChatPayProvider, mock: respx.MockRouter, provider_key: rsa.RSAPrivateKey
) -> None:
    """`REFUND` ("转入退款") is what the order query answers once any refund was made of the
    payment, a partial one too; it names no refunded amount. So it is no full refund: paid,
    partly refunded, by how much is not reported (`refunded_amount` None)."""
    mock.get(f"/v3/pay/transactions/out-trade-no/ord_123456?mchid={MCHID}").mock(
        return_value=signed(
            200, transaction(trade_state="REFUND", trade_state_desc="转入退款"), provider_key
        )
    )
    status = await provider.query("ord_123456", None)
    assert (status.state, status.refunded_amount, status.provider_state) == (
        PaymentState.partially_refunded, None, "REFUND")
    assert (status.amount, status.payment_id) == (1999, TRANSACTION_ID)  # the payment it was


async def test_an_order_wechat_pay_does_not_know_is_pending(
    provider: WeChatPayProvider, mock: respx.MockRouter
) -> None:
    mock.get(f"/v3/pay/transactions/out-trade-no/ord_123456?mchid={MCHID}").respond(
        404, json={"code": "ORDER_NOT_EXIST", "message": "订单不存在"}
    )
    status = await provider.query("ord_123456", None)
    assert (status.state, status.provider_ref, status.provider_state) == (
        PaymentState.pending, None, "ORDER_NOT_EXIST",
    )


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [
        (500, "SYSTEM_ERROR", True),
        (429, "RATE_LIMITED", True),
        (400, "PARAM_ERROR", False),
        (401, "SIGN_ERROR", False),
        (403, "NO_AUTH", False),
    ],
)
async def test_errors_keep_wechat_pay_codes(
    provider: WeChatPayProvider, mock: respx.MockRouter, status: int, code: str, transient: bool
) -> None:
    mock.get(f"/v3/pay/transactions/out-trade-no/ord_123456?mchid={MCHID}").respond(
        status, json={"code": code, "message": "出错了"}
    )
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", None)
    assert (caught.value.code, caught.value.transient, caught.value.status) == (code, transient, status)


async def test_a_timeout_is_transient(provider: WeChatPayProvider, mock: respx.MockRouter) -> None:
    mock.post("/v3/pay/transactions/native").mock(side_effect=httpx.ConnectTimeout("slow"))
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request())
    assert (caught.value.code, caught.value.transient) == ("timeout", True)


# --- close -------------------------------------------------------------------------------------


QUERY = f"/v3/pay/transactions/out-trade-no/ord_123456?mchid={MCHID}"
CLOSE = "/v3/pay/transactions/out-trade-no/ord_123456/close"


async def test_close_queries_first_then_closes_an_unpaid_order(
    provider: WeChatPayProvider,
    mock: respx.MockRouter,
    merchant_key: rsa.RSAPrivateKey,
    provider_key: rsa.RSAPrivateKey,
) -> None:
    mock.get(QUERY).mock(return_value=signed(200, transaction(trade_state="NOTPAY"), provider_key))
    route = mock.post(CLOSE).mock(return_value=signed(204, None, provider_key))
    await provider.close("ord_123456", "ord_123456")
    request = route.calls.last.request
    assert json.loads(request.content) == {"mchid": MCHID}
    assert_signed_request(request, merchant_key)


async def test_a_close_answer_must_be_signed_too(
    provider: WeChatPayProvider, mock: respx.MockRouter, provider_key: rsa.RSAPrivateKey,
    stranger_key: rsa.RSAPrivateKey,
) -> None:
    mock.get(QUERY).mock(return_value=signed(200, transaction(trade_state="NOTPAY"), provider_key))
    mock.post(CLOSE).mock(return_value=signed(204, None, stranger_key))
    with pytest.raises(ProviderError) as caught:
        await provider.close("ord_123456", None)
    assert caught.value.code == "bad_response_signature"


async def test_closing_a_paid_order_says_already_paid(
    provider: WeChatPayProvider, mock: respx.MockRouter, provider_key: rsa.RSAPrivateKey
) -> None:
    mock.get(QUERY).mock(return_value=signed(200, transaction(), provider_key))
    route = mock.post(CLOSE)
    with pytest.raises(ProviderError) as caught:
        await provider.close("ord_123456", None)
    assert (caught.value.code, caught.value.transient) == ("already_paid", False)
    assert not route.called


async def test_closing_an_unknown_or_closed_order_does_nothing(
    provider: WeChatPayProvider, mock: respx.MockRouter, provider_key: rsa.RSAPrivateKey
) -> None:
    route = mock.post(CLOSE)
    mock.get(QUERY).mock(
        side_effect=[
            httpx.Response(404, json={"code": "ORDER_NOT_EXIST", "message": "订单不存在"}),
            signed(200, transaction(trade_state="CLOSED"), provider_key),
        ]
    )
    await provider.close("ord_123456", None)
    await provider.close("ord_123456", None)
    assert not route.called


@pytest.mark.parametrize("paid", ["SUCCESS", "REFUND"])  # REFUND: paid, then refunded
async def test_an_order_paid_while_closing_says_already_paid(
    provider: WeChatPayProvider, mock: respx.MockRouter, provider_key: rsa.RSAPrivateKey, paid: str
) -> None:
    mock.get(QUERY).mock(
        side_effect=[
            signed(200, transaction(trade_state="NOTPAY"), provider_key),
            signed(200, transaction(trade_state=paid), provider_key),
        ]
    )
    mock.post(CLOSE).respond(400, json={"code": "ORDERPAID", "message": "订单已支付"})
    with pytest.raises(ProviderError) as caught:
        await provider.close("ord_123456", None)
    assert caught.value.code == "already_paid"


# --- refunds -----------------------------------------------------------------------------------


def refund_answer(status: str) -> dict[str, Any]:
    return {
        "refund_id": "50001307732026112607480019805", "out_refund_no": "rf_ord_123456_1",
        "transaction_id": TRANSACTION_ID, "out_trade_no": "ord_123456", "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱", "create_time": "2026-11-26T18:00:00+08:00",
        "status": status, "funds_account": "AVAILABLE",
        "amount": {"total": 1999, "refund": 500, "payer_total": 1999, "payer_refund": 500,
                   "settlement_refund": 500, "settlement_total": 1999, "discount_refund": 0,
                   "currency": "CNY"},
    }


@pytest.mark.parametrize(("status", "state"), [("PROCESSING", RefundState.pending),
                                               ("SUCCESS", RefundState.succeeded),
                                               ("ABNORMAL", RefundState.pending)])
async def test_refund_sends_fen_and_our_refund_number(
    provider: WeChatPayProvider,
    mock: respx.MockRouter,
    merchant_key: rsa.RSAPrivateKey,
    provider_key: rsa.RSAPrivateKey,
    status: str,
    state: RefundState,
) -> None:
    route = mock.post("/v3/refund/domestic/refunds").mock(
        return_value=signed(200, refund_answer(status), provider_key)
    )
    result = await provider.refund(
        RefundRequest("ord_123456", TRANSACTION_ID, "rf_ord_123456_1", 500, 1999, "CNY", "未激活",
                      notify_url="https://shop.test/webhooks/wechatpay")
    )
    request = route.calls.last.request
    assert_signed_request(request, merchant_key)
    assert json.loads(request.content) == {
        "transaction_id": TRANSACTION_ID,
        "out_refund_no": "rf_ord_123456_1",
        "reason": "未激活",
        "notify_url": "https://shop.test/webhooks/wechatpay",
        "amount": {"refund": 500, "total": 1999, "currency": "CNY"},
    }
    assert result.state is state
    assert (result.refund_id, result.provider_refund_id) == (
        "rf_ord_123456_1", "50001307732026112607480019805",
    )
    assert (result.amount, result.currency, result.payment_id) == (500, "CNY", TRANSACTION_ID)


# --- callbacks ---------------------------------------------------------------------------------


def encrypt(plain: dict[str, Any], *, key: str = APIV3_KEY, aad: str = "transaction") -> dict[str, str]:
    nonce = "fdasflkja484"
    data = AESGCM(key.encode()).encrypt(nonce.encode(), json.dumps(plain).encode(), aad.encode())
    return {
        "original_type": aad, "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(data).decode(), "associated_data": aad, "nonce": nonce,
    }


def callback(event_type: str, resource: dict[str, str]) -> bytes:
    return json.dumps(
        {
            "id": "EV-2018022511223320873",
            "create_time": "2026-11-26T17:58:01+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": resource,
        },
        ensure_ascii=False,
    ).encode()


async def test_a_signed_payment_callback_is_decrypted(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    body = callback("TRANSACTION.SUCCESS", encrypt(transaction()))
    notification = await provider.parse_notification(wechat_headers(body, provider_key), body, now=NOW)
    assert (notification.provider, notification.event_id) == ("wechatpay", "EV-2018022511223320873")
    assert notification.event_type == "TRANSACTION.SUCCESS"
    status = notification.status
    assert status is not None and status.state is PaymentState.succeeded
    assert (status.reference, status.payment_id, status.amount) == ("ord_123456", TRANSACTION_ID, 1999)
    assert status.merchant == MCHID
    assert notification.raw["resource"]["transaction_id"] == TRANSACTION_ID


async def test_a_refund_callback_reports_the_refund(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    refund = {
        "mchid": MCHID, "out_trade_no": "ord_123456", "transaction_id": TRANSACTION_ID,
        "out_refund_no": "rf_ord_123456_1", "refund_id": "50001307732026112607480019805",
        "refund_status": "SUCCESS", "success_time": "2026-11-26T18:00:05+08:00",
        "user_received_account": "支付用户零钱",
        "amount": {"total": 1999, "refund": 500, "payer_total": 1999, "payer_refund": 500},
    }
    body = callback("REFUND.SUCCESS", encrypt(refund, aad="refund"))
    notification = await provider.parse_notification(wechat_headers(body, provider_key), body, now=NOW)
    assert notification.status is None and notification.refund is not None
    assert (notification.refund.refund_id, notification.refund.state) == (
        "rf_ord_123456_1", RefundState.succeeded,
    )
    assert (notification.refund.amount, notification.refund.reference) == (500, "ord_123456")


async def test_signature_probes_are_rejected(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    body = callback("TRANSACTION.SUCCESS", encrypt(transaction()))
    headers = wechat_headers(body, provider_key)
    headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" + headers["Wechatpay-Signature"]
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(headers, body, now=NOW)
    assert caught.value.reason == "probe"


async def test_an_unknown_serial_is_rejected(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    body = callback("TRANSACTION.SUCCESS", encrypt(transaction()))
    headers = wechat_headers(body, provider_key, serial="PUB_KEY_ID_0000000000000000000000000000000000")
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(headers, body, now=NOW)
    assert caught.value.reason == "unknown-key"


@pytest.mark.parametrize("skew", [timedelta(seconds=301), timedelta(seconds=-301)])
async def test_stale_callbacks_are_rejected(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey, skew: timedelta
) -> None:
    body = callback("TRANSACTION.SUCCESS", encrypt(transaction()))
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(wechat_headers(body, provider_key, at=NOW - skew), body, now=NOW)
    assert caught.value.reason == "stale"


async def test_a_tampered_callback_is_rejected(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    body = callback("TRANSACTION.SUCCESS", encrypt(transaction()))
    headers = wechat_headers(body, provider_key)
    tampered = body.replace(b"EV-2018022511223320873", b"EV-2018022511223320874")
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(headers, tampered, now=NOW)
    assert caught.value.reason == "bad-signature"


async def test_a_callback_signed_by_someone_else_is_rejected(
    provider: WeChatPayProvider, stranger_key: rsa.RSAPrivateKey
) -> None:
    body = callback("TRANSACTION.SUCCESS", encrypt(transaction()))
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(wechat_headers(body, stranger_key), body, now=NOW)
    assert caught.value.reason == "bad-signature"


async def test_a_resource_sealed_with_another_key_is_malformed(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    body = callback("TRANSACTION.SUCCESS", encrypt(transaction(), key="X" * 32))
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(wechat_headers(body, provider_key), body, now=NOW)
    assert caught.value.reason == "malformed"


async def test_a_resource_with_other_associated_data_is_malformed(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey
) -> None:
    resource = {**encrypt(transaction()), "associated_data": "refund"}
    body = callback("TRANSACTION.SUCCESS", resource)
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(wechat_headers(body, provider_key), body, now=NOW)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize(
    "missing", ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"]
)
async def test_missing_headers_are_malformed(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey, missing: str
) -> None:
    body = callback("TRANSACTION.SUCCESS", encrypt(transaction()))
    headers = wechat_headers(body, provider_key)
    del headers[missing]
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(headers, body, now=NOW)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("body", [b"not json", b'{"id": "EV-1", "event_type": "TRANSACTION.SUCCESS"}'])
async def test_signed_bodies_that_are_not_callbacks_are_malformed(
    provider: WeChatPayProvider, provider_key: rsa.RSAPrivateKey, body: bytes
) -> None:
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(wechat_headers(body, provider_key), body, now=NOW)
    assert caught.value.reason == "malformed"


def test_replies_are_204_or_a_fail_document(provider: WeChatPayProvider) -> None:
    ok = provider.reply(True)
    assert (ok.status_code, ok.body) == (204, b"")
    refused = provider.reply(False)
    assert refused.status_code == 400
    assert json.loads(refused.body)["code"] == "FAIL"


def test_the_apiv3_key_must_be_32_characters(
    http: httpx.AsyncClient, merchant_key: rsa.RSAPrivateKey
) -> None:
    config = WeChatPayConfig(
        MCHID, APPID, MERCHANT_SERIAL, SecretStr(private_pem(merchant_key)), SecretStr("short"), {}
    )
    with pytest.raises(ValueError, match="32"):
        WeChatPayProvider(config, http)
