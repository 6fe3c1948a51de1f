"""Quotes and placing orders: prices, fees, limits, lines, gifts, idempotency — and every refusal."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import func, select, update

from simcharge.catalog.models import PaymentMethod
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.lines.models import LineState
from simcharge.orders.models import IdempotencyKey, Order, Payment
from tests.auth.helpers import problem
from tests.orders.helpers import change_plan, idem, new_payer


async def _quote(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post("/api/v1/quotes", json=body, headers=headers)


async def _count(db: Database, model: Any) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_quote_shows_price_fee_and_total(client: httpx.AsyncClient, db: Database,
                                                 settings: Settings) -> None:
    payer = await new_payer(db, settings)
    before = utcnow().replace(microsecond=0)
    r = await _quote(client, payer.auth, plan="traveller-20", method="paypal",
                     line_id=str(payer.line.id))
    assert r.status_code == 200, r.text
    q = r.json()
    # It holds for `SIMCHARGE_QUOTE_TTL_MINUTES` (15).
    ttl = timedelta(minutes=settings.quote_ttl_minutes)
    assert before + ttl <= datetime.fromisoformat(q["expires_at"]) <= utcnow() + ttl
    # 3.49 % of 20.00 = 0.698 → 0.70, plus 0.49 fixed.
    assert q["price"] == {"currency": "USD", "minor": 2000, "value": "20.00"}
    assert q["fee"]["minor"] == 119
    assert q["total"]["minor"] == 2119
    assert q["msisdn"] == payer.line.msisdn and q["gift"] is False
    assert q["plan"]["code"] == "traveller-20"

    r = await _quote(client, payer.auth, plan="traveller-20", method="alipay",
                     line_id=str(payer.line.id))
    assert r.json()["total"] == {"currency": "CNY", "minor": 13500, "value": "135.00"}


async def test_a_quote_in_the_customers_language(client: httpx.AsyncClient, db: Database,
                                                 settings: Settings) -> None:
    payer = await new_payer(db, settings, language="zh-Hans")
    r = await _quote(client, {**payer.auth, "Accept-Language": "zh-CN"}, plan="starter-10",
                     method="card", line_id=str(payer.line.id))
    assert r.json()["plan"]["name"] == "入门套餐"


async def test_anyone_may_top_up_any_line_by_number(client: httpx.AsyncClient, db: Database,
                                                    settings: Settings) -> None:
    payer = await new_payer(db, settings)
    friend = await new_payer(db, settings)
    r = await _quote(client, payer.auth, plan="starter-10", method="card",
                     msisdn=friend.line.msisdn)
    assert r.status_code == 200
    assert r.json()["gift"] is True


async def test_quote_refusals(client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    payer = await new_payer(db, settings)
    other = await new_payer(db, settings)
    line = str(payer.line.id)
    cases = [
        ({"plan": "no-such-plan", "method": "card", "line_id": line}, 404, "plan-unavailable", "plan"),
        ({"plan": "starter-10", "method": "bitcoin", "line_id": line}, 422,
         "payment-method-unavailable", "method"),
        ({"plan": "starter-10", "method": "card", "line_id": str(other.line.id)}, 404, "not-found",
         "line_id"),
        ({"plan": "starter-10", "method": "card", "msisdn": "not a number"}, 422,
         "validation-error", "msisdn"),
        ({"plan": "starter-10", "method": "card", "msisdn": "+14155550000"}, 404, "not-found",
         "msisdn"),
        ({"plan": "starter-10", "method": "card"}, 422, "validation-error", "msisdn"),
        ({"plan": "", "method": "card", "line_id": line}, 422, "validation-error", "plan"),
    ]
    for body, status, slug, field in cases:
        r = await _quote(client, payer.auth, **body)
        assert r.status_code == status, (body, r.text)
        p = problem(r)
        assert p["type"].endswith(f"/{slug}"), (body, p)
        assert field in {e["field"] for e in p.get("errors", [])} | {p.get("field")}, (body, p)


async def test_limits_and_disabled_methods_are_refused(client: httpx.AsyncClient, db: Database,
                                                       settings: Settings) -> None:
    payer = await new_payer(db, settings)
    await db.run(lambda s: s.execute(update(PaymentMethod).where(PaymentMethod.code == "card")
                                     .values(max_amount={"USD": 1500})))
    r = await _quote(client, payer.auth, plan="traveller-20", method="card",
                     line_id=str(payer.line.id))
    assert r.status_code == 422 and problem(r)["type"].endswith("/amount-out-of-limits")
    await db.run(lambda s: s.execute(update(PaymentMethod).where(PaymentMethod.code == "card")
                                     .values(enabled=False)))
    r = await _quote(client, payer.auth, plan="starter-10", method="card",
                     line_id=str(payer.line.id))
    assert r.status_code == 422 and problem(r)["type"].endswith("/payment-method-unavailable")


async def test_a_terminated_line_cannot_be_topped_up(client: httpx.AsyncClient, db: Database,
                                                     settings: Settings) -> None:
    payer = await new_payer(db, settings, line_state=LineState.terminated)
    r = await _quote(client, payer.auth, plan="starter-10", method="card",
                     line_id=str(payer.line.id))
    assert r.status_code == 409 and problem(r)["type"].endswith("/line-not-top-upable")


async def test_a_flow_the_provider_cannot_do_is_refused(db: Database, settings: Settings) -> None:
    from simcharge.app import create_app

    configured = settings.model_copy(update={
        "stripe_secret_key": SecretStr("sk_test_x"), "stripe_webhook_secret": SecretStr("whsec_x")})
    app = create_app(configured, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        payer = await new_payer(db, configured)
        r = await _quote(client, payer.auth, plan="starter-10", method="card",
                         line_id=str(payer.line.id), flow="qr")
        assert r.status_code == 422
        assert problem(r)["field"] == "flow"


async def test_quotes_and_orders_need_a_signed_in_customer(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/quotes", json={"plan": "starter-10", "method": "card",
                                                  "msisdn": "+14155550101"})
    assert r.status_code == 401
    r = await client.post("/api/v1/orders", json={"plan": "starter-10", "method": "card",
                                                  "msisdn": "+14155550101"}, headers=idem())
    assert r.status_code == 401
    assert (await client.get("/api/v1/orders")).status_code == 401


async def test_an_order_opens_the_sandbox_checkout(client: httpx.AsyncClient, db: Database,
                                                   settings: Settings) -> None:
    payer = await new_payer(db, settings)
    r = await client.post("/api/v1/orders", headers={**payer.auth, **idem()}, json={
        "plan": "traveller-20", "method": "sandbox", "line_id": str(payer.line.id)})
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["state"] == "pending"
    assert order["total"]["minor"] == 2000
    assert order["reference"].startswith("SC") and "-" not in order["reference"]
    assert order["next_action"]["type"] == "redirect"
    assert order["next_action"]["url"].startswith("http://testserver/sandbox/pay/sbx_")
    page = await client.get(order["next_action"]["url"])
    assert page.status_code == 200
    assert "$20.00" in page.text and order["reference"] in page.text


async def test_wechat_pay_gives_a_qr_code(client: httpx.AsyncClient, db: Database,
                                          settings: Settings) -> None:
    payer = await new_payer(db, settings)
    r = await client.post("/api/v1/orders", headers={**payer.auth, **idem()}, json={
        "plan": "starter-10", "method": "wechatpay", "line_id": str(payer.line.id)})
    assert r.status_code == 201, r.text
    action = r.json()["next_action"]
    assert action["type"] == "qr"
    assert action["qr_payload"]
    assert action["qr_svg"].startswith("<svg")
    assert r.json()["total"]["currency"] == "CNY"


async def test_the_same_idempotency_key_gives_the_same_order(client: httpx.AsyncClient,
                                                             db: Database, settings: Settings) -> None:
    payer = await new_payer(db, settings)
    body = {"plan": "starter-10", "method": "sandbox", "line_id": str(payer.line.id)}
    key = idem()
    first = await client.post("/api/v1/orders", json=body, headers={**payer.auth, **key})
    again = await client.post("/api/v1/orders", json=body, headers={**payer.auth, **key})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await _count(db, Order) == 1

    other = await client.post("/api/v1/orders", json={**body, "plan": "traveller-20"},
                              headers={**payer.auth, **key})
    assert other.status_code == 422
    assert problem(other)["type"].endswith("/idempotency-key-reused")
    assert await _count(db, Order) == 1

    # Keys are per account: someone else's identical key is their own.
    stranger = await new_payer(db, settings)
    theirs = await client.post("/api/v1/orders", headers={**stranger.auth, **key},
                               json={**body, "line_id": str(stranger.line.id)})
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]


async def test_orders_need_an_idempotency_key_and_bad_ones_change_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    body = {"plan": "starter-10", "method": "sandbox", "line_id": str(payer.line.id)}
    r = await client.post("/api/v1/orders", json=body, headers=payer.auth)
    assert r.status_code == 400 and problem(r)["field"] == "Idempotency-Key"
    r = await client.post("/api/v1/orders", json={**body, "plan": "nope"},
                          headers={**payer.auth, **idem()})
    assert r.status_code == 404
    assert await _count(db, Order) == 0
    assert await _count(db, Payment) == 0
    assert await _count(db, IdempotencyKey) == 0


async def test_methods_without_a_provider_are_not_offered(db: Database, settings: Settings) -> None:
    from simcharge.app import create_app

    production_like = settings.model_copy(update={"sandbox_stands_in": False})
    app = create_app(production_like, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        methods = [m["code"] for m in (await client.get("/api/v1/payment-methods")).json()]
        assert methods == ["sandbox"]
        plans = (await client.get("/api/v1/plans")).json()
        assert all(p["methods"] == ["sandbox"] for p in plans)
        payer = await new_payer(db, production_like)
        r = await _quote(client, payer.auth, plan="starter-10", method="card",
                         line_id=str(payer.line.id))
        assert r.status_code == 422 and problem(r)["field"] == "method"

    everything = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=everything),
                                 base_url="http://testserver") as client:
        methods = [m["code"] for m in (await client.get("/api/v1/payment-methods")).json()]
        assert set(methods) == {"card", "paypal", "alipay", "wechatpay", "sandbox"}


# --- the quote is what is paid -------------------------------------------------------------


def _order_body(payer: Any, quote: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"plan": "traveller-20", "method": "paypal", "line_id": str(payer.line.id), **extra}
    if quote is not None:
        body["quote"] = quote["quote"]
    return body


async def _nothing_ordered(db: Database) -> None:
    assert await _count(db, Order) == 0
    assert await _count(db, Payment) == 0
    assert await _count(db, IdempotencyKey) == 0


async def test_a_price_raised_after_the_quote_is_not_charged_and_the_new_quote_is_given(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    shown = (await _quote(client, payer.auth, **_order_body(payer))).json()
    assert shown["total"]["minor"] == 2119 and shown["quote"].startswith("q1.")
    await change_plan(db, "traveller-20", prices={"USD": "45.00"})

    r = await client.post("/api/v1/orders", json=_order_body(payer, shown),
                          headers={**payer.auth, **idem()})
    assert r.status_code == 409, r.text
    p = problem(r)
    assert p["type"].endswith("/quote-changed") and p["field"] == "quote"
    # The new quote, as `POST /quotes` gives it, for the client to show: 45.00 + 3.49 % + 0.49.
    fresh = p["quote"]
    assert fresh["price"]["minor"] == 4500 and fresh["fee"]["minor"] == 206
    assert fresh["total"] == {"currency": "USD", "minor": 4706, "value": "47.06"}
    assert fresh["plan"]["version"] == shown["plan"]["version"] + 1
    assert fresh["quote"] != shown["quote"]
    await _nothing_ordered(db)

    # Accepted: the order is at the new price.
    r = await client.post("/api/v1/orders", json=_order_body(payer, fresh),
                          headers={**payer.auth, **idem()})
    assert r.status_code == 201, r.text
    assert r.json()["total"]["minor"] == 4706


async def test_a_new_version_of_the_package_at_the_same_price_is_a_changed_quote(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    shown = (await _quote(client, payer.auth, **_order_body(payer))).json()
    await change_plan(db, "traveller-20", validity_days=20)  # it grants less now
    r = await client.post("/api/v1/orders", json=_order_body(payer, shown),
                          headers={**payer.auth, **idem()})
    assert r.status_code == 409 and problem(r)["type"].endswith("/quote-changed")
    assert problem(r)["quote"]["total"] == shown["total"]
    await _nothing_ordered(db)


async def test_an_order_at_its_quote_is_placed_and_a_retry_replays_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    shown = (await _quote(client, payer.auth, **_order_body(payer))).json()
    key = idem()
    first = await client.post("/api/v1/orders", json=_order_body(payer, shown),
                              headers={**payer.auth, **key})
    assert first.status_code == 201, first.text
    assert first.json()["total"]["minor"] == 2119
    # The same key and quote: the same order, even once the price changed and the quote expired.
    await change_plan(db, "traveller-20", prices={"USD": "45.00"})
    clock.freeze(datetime.fromisoformat(shown["expires_at"]) + timedelta(minutes=1))
    again = await client.post("/api/v1/orders", json=_order_body(payer, shown),
                              headers={**payer.auth, **key})
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    # The same key without the quote (or with another) is another request.
    other = await client.post("/api/v1/orders", json=_order_body(payer),
                              headers={**payer.auth, **key})
    assert other.status_code == 422 and problem(other)["type"].endswith("/idempotency-key-reused")
    assert await _count(db, Order) == 1


async def test_an_expired_quote_is_refused_with_a_new_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    shown = (await _quote(client, payer.auth, **_order_body(payer))).json()
    expires = datetime.fromisoformat(shown["expires_at"])
    clock.freeze(expires - timedelta(seconds=1))
    last_moment = await client.post("/api/v1/orders", json=_order_body(payer, shown),
                                    headers={**payer.auth, **idem()})
    assert last_moment.status_code == 201, last_moment.text
    clock.freeze(expires)
    r = await client.post("/api/v1/orders", json=_order_body(payer, shown),
                          headers={**payer.auth, **idem()})
    assert r.status_code == 409, r.text
    p = problem(r)
    assert p["type"].endswith("/quote-expired") and p["field"] == "quote"
    assert p["quote"]["total"] == shown["total"]
    assert datetime.fromisoformat(p["quote"]["expires_at"]) > expires
    assert await _count(db, Order) == 1


async def test_a_quote_not_ours_for_this_order_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    import base64
    import json

    payer = await new_payer(db, settings)
    stranger = await new_payer(db, settings)
    shown = (await _quote(client, payer.auth, **_order_body(payer))).json()
    version, body, signature = shown["quote"].split(".")
    facts = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    cheaper = base64.urlsafe_b64encode(json.dumps({**facts, "t": 1}).encode()).decode().rstrip("=")
    theirs = (await _quote(client, stranger.auth, **_order_body(stranger))).json()["quote"]
    starter = (await _quote(client, payer.auth, **_order_body(payer, plan="starter-10"))).json()
    cases = [
        (f"{version}.{cheaper}.{signature}", {}),  # tampered with
        (shown["quote"][:-2] + ("00" if not shown["quote"].endswith("00") else "11"), {}),
        ("q1.e30.0000", {}),
        ("not a quote", {}),
        ("", {}),
        (theirs, {}),  # another payer's
        (starter["quote"], {}),  # another package than the order's
        (shown["quote"], {"method": "card"}),  # another method
    ]
    for token, extra in cases:
        r = await client.post("/api/v1/orders", headers={**payer.auth, **idem()},
                              json={**_order_body(payer, **extra), "quote": token})
        assert r.status_code == 422, (token, r.text)
        p = problem(r)
        assert p["type"].endswith("/quote-invalid") and p["field"] == "quote", (token, p)
    await _nothing_ordered(db)


# --- totals a provider can take --------------------------------------------------------------


def test_the_fee_is_rounded_up_to_what_the_provider_takes() -> None:
    """PayPal takes whole HUF and TWD (two decimals in ISO 4217), Stripe KWD ending in 0: the fee
    goes up to the next such amount, so that the total is one checkout accepts."""
    from simcharge.catalog.service import fee_for
    from simcharge.payments.providers.paypal import to_paypal_value
    from simcharge.payments.providers.stripe import to_stripe_amount

    def method(provider: str, fixed: dict[str, int], bp: int = 349) -> PaymentMethod:
        return PaymentMethod(provider=provider, fee_percent_bp=bp, fee_fixed=fixed)

    # 3.49 % of 600.00 TWD = 20.94, + 15.00 = 35.94 → 36.00; of 5000.00 HUF: 274.50 → 275.00.
    assert fee_for(method("paypal", {"TWD": 1500}), 60000, "TWD") == 3600
    assert to_paypal_value(60000 + 3600, "TWD") == "636"
    assert fee_for(method("paypal", {"HUF": 10000}), 500000, "HUF") == 27500
    # 2.9 % of 5.000 KWD = 0.145 → 0.150.
    assert fee_for(method("stripe", {}, 290), 5000, "KWD") == 150
    assert to_stripe_amount(5000 + 150, "KWD") == 5150
    # Elsewhere the minor unit is the step: nothing changes.
    assert fee_for(method("paypal", {"USD": 49}), 2000, "USD") == 119
    assert fee_for(method("paypal", {"JPY": 40}), 3000, "JPY") == 145
    assert fee_for(method("paypal", {}, 0), 60000, "TWD") == 0


def test_the_catalog_refuses_prices_and_fixed_fees_a_provider_cannot_take() -> None:
    import tomllib

    import pytest

    from simcharge.catalog.service import DEMO_CATALOG, CatalogInvalid, validate_catalog

    def catalog(fee_fixed: str, price: str) -> dict[str, Any]:
        data = tomllib.loads(DEMO_CATALOG.read_text(encoding="utf-8"))
        [paypal] = [m for m in data["payment_methods"] if m["code"] == "paypal"]
        paypal["currencies"] = ["USD", "HUF"]
        paypal["fee_fixed"]["HUF"] = fee_fixed
        data["plans"][0]["prices"]["HUF"] = price
        return data

    validate_catalog(catalog("100", "5000"), source="test")  # whole forints: taken
    with pytest.raises(CatalogInvalid) as refused:
        validate_catalog(catalog("99.50", "5000"), source="test")
    assert refused.value.problems == [
        "payment_methods[1] (paypal): fee_fixed.HUF: paypal takes HUF in steps of 1.00 only"]
    with pytest.raises(CatalogInvalid) as refused:
        validate_catalog(catalog("100", "4999.50"), source="test")
    [problem_] = refused.value.problems
    assert problem_.endswith(": prices.HUF: paypal takes HUF in steps of 1.00 only "
                             "(payment method paypal)"), problem_
