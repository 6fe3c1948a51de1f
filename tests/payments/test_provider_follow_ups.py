"""Payment providers' notifications, follow-ups of review round 7 (wave 2).

- A signed notification holding a NUL (or a lone surrogate) in a string field: the API's
  middleware refuses a JSON-typed body holding one before any route runs — but not a
  provider's notification (round 8: Stripe's and PayPal's come to the route, as every
  provider's does, `tests/payments/test_round8.py`). Alipay's are form-encoded (`%00`) and
  WeChat Pay's encrypted resource is only read once decrypted, so neither passed that check: storing the
  event (`provider_events.payload`, `body`) failed on PostgreSQL ("unsupported Unicode escape
  sequence"), the second attempt to store it alone failed the same way, and the provider got a
  500 — on every retry, for ever. Now a notification no database can store is refused with the
  provider's failure answer (400), logged and counted (`rejected:unstorable`); nothing is stored
  or credited. It is not cleaned and stored: the body is kept as delivered so that it can be
  verified again, and a cleaned copy would not verify. A genuine one holds a NUL only where we
  put the text (Alipay's `subject`, WeChat Pay's `attach`) — we never do — and the order is
  still credited by asking the provider (check, return, reconciliation).
- WeChat Pay: the decrypted resource's `appid` was never compared with ours (only `mchid`, and
  only when present): a payment to another app of the same merchant naming one of our
  references credited our order. Now a transaction resource must name our `mchid` and our
  `appid`, a refund resource our `mchid`; otherwise it is rejected as `foreign`.
- Alipay: the notification's `seller_id` was never compared (Alipay's guide asks to check
  `app_id`, `out_trade_no`, `total_amount` and `seller_id`). With `SIMCHARGE_ALIPAY_SELLER_ID`
  set, a notification naming another seller (or none) is rejected as `foreign` and credits
  nothing; unset, it is not compared, as before.

Real database (both, when the PostgreSQL URL is set), real signatures and encryption (the
providers' harnesses of `tests/orders/test_providers.py`); respx only at the providers' HTTP
boundary.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote_from_bytes, urlencode

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.metrics import WEBHOOKS
from simcharge.orders.models import ProviderEvent
from simcharge.payments import webhooks
from tests.factories import load_demo_catalog
from tests.orders import test_providers as harness
from tests.orders.helpers import assert_ledger_balanced, order_row
from tests.orders.test_providers import (
    Alipay,
    Harness,
    Keys,
    Stripe,
    WeChatPay,
    _deliver,
    _ok,
    _placed,
    _refused,
    _rsa_sign,
    _unchanged,
)

# The providers' harness's fixtures, by name: every provider configured with test-time keys.
keys = harness.keys
mock = harness.mock
provider = harness.provider
settings = harness.settings
shop = harness.shop


@pytest.fixture(autouse=True)
async def _catalog(db: Database) -> None:
    await db.run(load_demo_catalog)


SELLER_ID = "2088621959000001"
"""The seller the Alipay harness's notifications name."""


class _Recorder:
    """Stands in for a module's structlog logger: keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def _keep(self, level: str) -> Any:
        def keep(name: str, /, **fields: Any) -> None:
            self.events.append((level, name, fields))

        return keep

    def __getattr__(self, level: str) -> Any:
        return self._keep(level)


async def _stored(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(ProviderEvent))).scalar_one())


def _wechat_callback(
    keys: Keys, kind: str, original_type: str, plaintext: bytes
) -> tuple[bytes, dict[str, str]]:
    """A WeChat Pay callback whose resource decrypts to exactly `plaintext` (so that it may hold
    JSON escapes the harness's `ensure_ascii=False` cannot write: a lone surrogate)."""
    nonce = secrets.token_hex(6)
    sealed = AESGCM(keys.wechat_apiv3.encode()).encrypt(
        nonce.encode(), plaintext, original_type.encode()
    )
    envelope = {
        "id": str(uuid.uuid4()),
        "create_time": datetime.now(UTC).isoformat(),
        "resource_type": "encrypt-resource",
        "event_type": kind,
        "summary": "支付成功",
        "resource": {
            "original_type": original_type,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(sealed).decode(),
            "associated_data": original_type,
            "nonce": nonce,
        },
    }
    body = json.dumps(envelope, ensure_ascii=False).encode()
    return body, WeChatPay(keys, None).headers(body)  # type: ignore[arg-type]


async def _post_wechat(
    client: httpx.AsyncClient, wechat: WeChatPay, kind: str, resource: dict[str, Any]
) -> httpx.Response:
    """Post WeChat Pay's callback `kind` (`TRANSACTION.SUCCESS`, `REFUND.SUCCESS`…) whose
    resource, sealed and signed by the harness, is `resource`."""
    original_type = "refund" if kind.startswith("REFUND.") else "transaction"
    return await _deliver(client, wechat, wechat._callback(kind, original_type, resource))


async def _post_alipay(
    client: httpx.AsyncClient, alipay: Alipay, order: Any, **fields: str
) -> httpx.Response:
    """Post Alipay's signed payment notification for `order`, with these fields changed."""
    return await _deliver(client, alipay, alipay._notify(order, **fields))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _alipay_holding_bytes(
    p: Alipay, keys: Keys, order: Any, raw: bytes
) -> tuple[bytes, dict[str, str]]:
    """Alipay's notification with `subject` as these bytes (a lone surrogate encoded as if it
    were UTF-8, which no UTF-8 decoder accepts), signed over those very bytes."""
    body, headers = p._notify(order, subject="MARK")
    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    del params["sign"]
    signed = sorted((k, v) for k, v in params.items() if k not in ("sign", "sign_type"))
    content = "&".join(f"{k}={v}" for k, v in signed).encode().replace(b"MARK", raw)
    params["sign"] = _rsa_sign(keys.alipay_platform, content)
    return urlencode(params).encode().replace(b"MARK", quote_from_bytes(raw).encode()), headers


def _paid_holding(p: Harness, keys: Keys, order: Any, text: str) -> tuple[bytes, dict[str, str]]:
    """`p`'s genuine, signed payment notification for `order` with `text` in a free-text
    field: one the provider fills from what the payer or we typed."""
    if isinstance(p, Stripe):
        return p.paid_webhook(order, customer_details={"name": text, "email": "a@example.com"})
    if isinstance(p, Alipay):
        if _utf8(text):
            return p._notify(order, subject=text)
        return _alipay_holding_bytes(p, keys, order, text.encode("utf-8", "surrogatepass"))
    if isinstance(p, WeChatPay):
        resource = p.transaction(order, "SUCCESS") | {"attach": text}
        plaintext = json.dumps(resource).encode()  # ASCII: `\u0000`, `\ud800` escaped
        return _wechat_callback(keys, "TRANSACTION.SUCCESS", "transaction", plaintext)
    capture = p.capture(order) | {"note_to_payer": text}
    return p._webhook("PAYMENT.CAPTURE.COMPLETED", capture)


@pytest.mark.parametrize("text", ["eSIM\x00top-up", "eSIM\ud800"], ids=["nul", "surrogate"])
async def test_a_signed_notification_holding_a_nul_is_refused_never_a_500(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    provider: Harness,
    keys: Keys,
    text: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A correctly signed payment notification with a NUL or a lone surrogate in a string
    field: a 4xx the provider sees as a failure (never a 500 on each retry), nothing stored,
    nothing credited; the same genuine notification without it still credits the order.
    (Alipay's form fields are decoded strictly in their charset: a lone surrogate's bytes are
    malformed there, before anything is stored.)"""
    recorder = _Recorder()
    monkeypatch.setattr(webhooks, "log", recorder)
    _, _, order = await _placed(client, db, settings, provider)
    unstorable = WEBHOOKS.labels(provider.name, "rejected:unstorable")
    before, stored = unstorable._value.get(), await _stored(db)
    r = await _deliver(client, provider, _paid_holding(provider, keys, order, text))
    if isinstance(provider, Alipay) and not _utf8(text):
        _refused(provider, r)  # decoded strictly as UTF-8 (its `charset`): malformed
        assert unstorable._value.get() == before
        rejected = [f for _, e, f in recorder.events if e == "payments.webhook_rejected"]
        assert [f["reason"] for f in rejected] == ["malformed"]
    else:  # refused by the webhook route (Stripe's and PayPal's JSON too, since round 8)
        _refused(provider, r)  # 400, the provider's own failure answer
        assert unstorable._value.get() == before + 1
        field = {
            "alipay": "payload.subject",
            "wechatpay": "payload.resource.attach",
            "stripe": "payload.data.object.customer_details.name",
            "paypal": "payload.resource.note_to_payer",
        }[provider.name]
        logged = [f for lv, e, f in recorder.events if e == "payments.webhook_unstorable"]
        assert [f["field"] for f in logged] == [field]
    await _unchanged(db, order)
    assert await _stored(db) == stored
    # The same payment, reported without it, is credited once.
    _ok(provider, await _deliver(client, provider, provider.paid_webhook(order)))
    assert (await order_row(db, order.id)).state == "fulfilled"
    await assert_ledger_balanced(db)


async def test_a_wechat_pay_payment_to_another_app_of_our_merchant_credits_nothing(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: Any,
) -> None:
    """Our `mchid`, another `appid` (an app of the same merchant), one of our references: it
    is another app's payment — rejected as `foreign`, nothing stored or credited; ours still
    counts afterwards."""
    wechat = WeChatPay(keys, mock)
    _, _, order = await _placed(client, db, settings, wechat)
    foreign = WEBHOOKS.labels("wechatpay", "rejected:foreign")
    before, stored = foreign._value.get(), await _stored(db)
    other_app = wechat.transaction(order, "SUCCESS") | {"appid": "wx9999999999999999"}
    r = await _post_wechat(client, wechat, "TRANSACTION.SUCCESS", other_app)
    _refused(wechat, r)
    assert foreign._value.get() == before + 1
    await _unchanged(db, order)
    assert await _stored(db) == stored
    _ok(wechat, await _deliver(client, wechat, wechat.paid_webhook(order)))
    assert (await order_row(db, order.id)).state == "fulfilled"


@pytest.mark.parametrize("missing", ["appid", "mchid"])
async def test_a_wechat_pay_transaction_naming_no_app_or_merchant_credits_nothing(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: Any,
    missing: str,
) -> None:
    """WeChat Pay's transaction resource always names `appid` and `mchid`: one naming neither
    ours nor another cannot be shown to be ours, and credits nothing (`foreign`)."""
    wechat = WeChatPay(keys, mock)
    _, _, order = await _placed(client, db, settings, wechat)
    resource = wechat.transaction(order, "SUCCESS")
    del resource[missing]
    r = await _post_wechat(client, wechat, "TRANSACTION.SUCCESS", resource)
    _refused(wechat, r)
    await _unchanged(db, order)


async def test_a_wechat_pay_refund_of_another_merchant_is_rejected(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: Any,
) -> None:
    """A `REFUND.*` resource names `mchid` (and no `appid`): another merchant's refund naming
    our payment is rejected as `foreign` and stores nothing; ours is recorded."""
    wechat = WeChatPay(keys, mock)
    _, _, order = await _placed(client, db, settings, wechat)
    _ok(wechat, await _deliver(client, wechat, wechat.paid_webhook(order)))
    stored = await _stored(db)
    body, headers = wechat.external_refund(order, 100)
    resource = wechat._refund(order, "MP" + uuid.uuid4().hex[:20].upper(), 100, "SUCCESS")
    resource["refund_status"] = resource.pop("status")
    resource["mchid"] = "1900009999"
    r = await _post_wechat(client, wechat, "REFUND.SUCCESS", resource)
    _refused(wechat, r)
    assert await _stored(db) == stored
    _ok(wechat, await _deliver(client, wechat, (body, headers)))
    assert await _stored(db) == stored + 1


async def test_an_alipay_notification_for_another_seller_credits_nothing(
    settings: Settings, db: Database, keys: Keys, mock: Any
) -> None:
    """With `SIMCHARGE_ALIPAY_SELLER_ID` set, a notification of our app naming another
    `seller_id` (or none) is rejected as `foreign` (Alipay's failure answer), stores and credits
    nothing; one naming ours credits the order."""
    configured = settings.model_copy(update={"alipay_seller_id": SELLER_ID})
    app = create_app(configured, db=db, run_worker=False)
    alipay = Alipay(keys, mock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        _, _, order = await _placed(client, db, configured, alipay)
        foreign = WEBHOOKS.labels("alipay", "rejected:foreign")
        before, stored = foreign._value.get(), await _stored(db)
        for other in ({"seller_id": "2088000000009999"}, {"seller_id": ""}):
            r = await _post_alipay(client, alipay, order, **other)
            _refused(alipay, r)
        assert foreign._value.get() == before + 2
        await _unchanged(db, order)
        assert await _stored(db) == stored
        _ok(alipay, await _deliver(client, alipay, alipay.paid_webhook(order)))
        assert (await order_row(db, order.id)).state == "fulfilled"


async def test_without_a_seller_id_setting_alipays_seller_is_not_compared(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: Any,
) -> None:
    """`SIMCHARGE_ALIPAY_SELLER_ID` unset (the default): the seller is not compared, as before
    the setting existed."""
    assert settings.alipay_seller_id is None
    alipay = Alipay(keys, mock)
    _, _, order = await _placed(client, db, settings, alipay)
    r = await _post_alipay(client, alipay, order, seller_id="2088000000009999")
    _ok(alipay, r)
    assert (await order_row(db, order.id)).state == "fulfilled"
