"""Refunds through the provider, the ledger's policy, and the staff API that asks for them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.ids import uuid7
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from simcharge.lines.models import Line
from simcharge.lines.service import bucket_id, line_balances
from simcharge.notifications.models import Notice
from simcharge.orders.models import Refund, SandboxPayment
from tests.auth.helpers import problem
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    idem,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
    transfers_of,
)


async def _staff(db: Database, *scopes: str) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "finance", list(scopes)))
    return {"Authorization": f"Bearer {issued.token}"}


async def _paid_order(client: httpx.AsyncClient, db: Database, settings: Settings, payer: Payer,
                      **kw: Any) -> dict[str, Any]:
    order = await place(client, payer, **kw)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled"
    return r.json()


async def _units(db: Database, line_id: uuid.UUID) -> dict[str, tuple[int, int]]:
    async with db.read() as s:
        line = await s.get(Line, line_id)
        assert line is not None
        b = await line_balances(s, line)
    return {u.unit: (u.remaining, u.reserved) for u in b.units} | {
        "wallet": (b.wallet.available, b.wallet.reserved)}


async def _use(db: Database, order_id: str, index: int, amount: int, unit: str) -> None:
    """Consume from one of the order's buckets, as charging does."""
    async def run(s: Any) -> None:
        consumption = chart.consumption(unit)
        await ensure_accounts(s, [consumption])
        await post_transfers(s, [NewTransfer(uuid7(), amount, unit,
                                             bucket_id(f"order:{order_id}", index), consumption.id,
                                             code="usage")])
    await db.run(run)


async def test_a_full_refund_gives_back_the_money_and_takes_back_what_is_unused(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await _staff(db, "refunds:write", "orders:read")
    payer = await new_payer(db, settings)
    order = await _paid_order(client, db, settings, payer, plan="explorer-50")
    await _use(db, order["id"], 2, 30, "SMS")  # 30 of the 100 SMS are used

    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds", headers={**staff, **idem()},
                          json={"reason": "customer asked"})
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "pending"
    assert r.json()["amount"]["minor"] == 5000
    # Held until the provider confirms: nothing of it can be spent meanwhile.
    held = await _units(db, payer.line.id)
    assert held["SMS"] == (0, 70)
    assert held["wallet"] == (0, 500)

    await run_worker(app, db, settings)
    row = await order_row(db, order["id"])
    assert row.state == "refunded" and row.refunded_amount == 5000
    after = await _units(db, payer.line.id)
    assert "SMS" not in after and after["wallet"] == (0, 0)
    async with db.read() as s:
        sandbox_row = (await s.execute(select(SandboxPayment).where(
            SandboxPayment.reference == row.reference))).scalar_one()
        used = await s.get(LedgerAccount, bucket_id(f"order:{order['id']}", 2))
        notices = (await s.execute(select(Notice.template).where(
            Notice.account_id == payer.account_id))).scalars().all()
    assert sandbox_row.refunded == 5000
    assert used is not None and used.debits_posted == 100  # 30 used, 70 taken back
    assert "order.refunded" in notices
    await assert_ledger_balanced(db)

    detail = (await client.get(f"/api/v1/admin/orders/{order['id']}", headers=staff)).json()
    assert [x["state"] for x in detail["refunds"]] == ["succeeded"]
    assert "refund.succeeded" in [e["type"] for e in detail["events"]]
    mine = (await client.get(f"/api/v1/orders/{order['id']}", headers=payer.auth)).json()
    assert mine["refunded"]["minor"] == 5000 and mine["state"] == "refunded"


async def test_partial_refunds_split_sale_and_fee_and_take_a_share(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    order = await _paid_order(client, db, settings, payer, plan="traveller-20", method="paypal")
    assert (order["total"]["minor"], order["fee"]["minor"]) == (2119, 119)
    async def fee_revenue() -> int:
        """The fee revenue account's balance: the sum of its shards."""
        async with db.read() as s:
            rows = (await s.execute(select(LedgerAccount).where(
                LedgerAccount.key.in_(chart.keys("revenue:fees:USD"))))).scalars().all()
            return sum(a.credits_posted - a.debits_posted for a in rows)

    before = await fee_revenue()
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**staff, **idem()}, json={"amount": 1000, "reason": "test"})
    assert r.status_code == 202
    await run_worker(app, db, settings)
    row = await order_row(db, order["id"])
    assert (row.state, row.refunded_amount) == ("partially_refunded", 1000)
    assert before - await fee_revenue() == 56  # 119 × 1000 / 2119 = 56.2
    sms = (await _units(db, payer.line.id))["SMS"]
    assert sms == (50 - 24, 0)  # ⌈50 × 1000 / 2119⌉ = 24 taken back

    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**staff, **idem()}, json={"reason": "test"})
    assert r.json()["amount"]["minor"] == 1119
    await run_worker(app, db, settings)
    row = await order_row(db, order["id"])
    assert (row.state, row.refunded_amount) == ("refunded", 2119)
    assert before - await fee_revenue() == 119
    assert "SMS" not in await _units(db, payer.line.id)
    await assert_ledger_balanced(db)


async def test_refund_refusals_change_nothing(client: httpx.AsyncClient, db: Database,
                                              settings: Settings) -> None:
    staff = await _staff(db, "refunds:write")
    reader = await _staff(db, "orders:read")
    payer = await new_payer(db, settings)
    order = await _paid_order(client, db, settings, payer, plan="starter-10")
    pending = await place(client, payer)
    url = f"/api/v1/admin/orders/{order['id']}/refunds"
    cases = [
        (url, {}, {"amount": 100}, 401, "not-authenticated"),
        (url, {**reader, **idem()}, {"amount": 100}, 403, "forbidden"),
        (url, staff, {"amount": 100}, 400, "idempotency-key-missing"),
        (url, {**staff, **idem()}, {"amount": 1001}, 422, "refund-too-large"),
        (url, {**staff, **idem()}, {"amount": 0}, 422, "validation-error"),
        (f"/api/v1/admin/orders/{pending['id']}/refunds", {**staff, **idem()}, {}, 409,
         "order-not-refundable"),
        (f"/api/v1/admin/orders/{uuid.uuid4()}/refunds", {**staff, **idem()}, {}, 404,
         "order-not-found"),
    ]
    for path, headers, body, status, slug in cases:
        r = await client.post(path, headers=headers, json={"reason": "test", **body})
        assert r.status_code == status, (slug, r.text)
        assert problem(r)["type"].endswith(f"/{slug}"), (slug, r.text)
    async with db.read() as s:
        assert (await s.execute(select(func.count()).select_from(Refund))).scalar_one() == 0
    assert (await _units(db, payer.line.id))["SMS"] == (20, 0)
    # Customers cannot reach the staff API.
    r = await client.get(f"/api/v1/admin/orders/{order['id']}", headers=payer.auth)
    assert r.status_code == 401


async def test_asking_twice_refunds_once(app: Any, client: httpx.AsyncClient, db: Database,
                                         settings: Settings) -> None:
    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    order = await _paid_order(client, db, settings, payer, plan="starter-10")
    key = idem()
    url = f"/api/v1/admin/orders/{order['id']}/refunds"
    first = await client.post(url, headers={**staff, **key}, json={"amount": 500, "reason": "test"})
    again = await client.post(url, headers={**staff, **key}, json={"amount": 500, "reason": "test"})
    assert first.json()["reference"] == again.json()["reference"]
    other = await client.post(url, headers={**staff, **key}, json={"amount": 300, "reason": "test"})
    assert other.status_code == 422
    await run_worker(app, db, settings)
    assert (await order_row(db, order["id"])).refunded_amount == 500


async def test_a_refund_the_provider_refuses_gives_everything_back(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await _staff(db, "refunds:write", "orders:read")
    payer = await new_payer(db, settings)
    order = await _paid_order(client, db, settings, payer, plan="starter-10")
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**staff, **idem()}, json={"reason": "test"})
    assert r.status_code == 202
    # Meanwhile the money went back another way (the provider's dashboard): it refuses.
    await db.run(lambda s: s.execute(update(SandboxPayment).where(
        SandboxPayment.reference == order["reference"]).values(refunded=1000)))
    await run_worker(app, db, settings)
    row = await order_row(db, order["id"])
    assert row.state == "fulfilled" and row.refunded_amount == 0
    assert row.attention == "refund_failed"
    assert (await _units(db, payer.line.id))["SMS"] == (20, 0)
    flagged = (await client.get("/api/v1/admin/orders?attention=true", headers=staff)).json()
    assert [o["id"] for o in flagged] == [order["id"]]
    assert flagged[0]["refunds"][0]["state"] == "failed"
    await assert_ledger_balanced(db)


async def _unapplied(db: Database, currency: str) -> tuple[int, int]:
    """The `unapplied` account's balance (credits − debits), posted and with what is held."""
    async with db.read() as s:
        rows = (await s.execute(select(LedgerAccount).where(
            LedgerAccount.key.in_(chart.keys(f"unapplied:{currency}"))))).scalars().all()
    posted = sum(a.credits_posted - a.debits_posted for a in rows)
    return posted, posted - sum(a.debits_pending for a in rows)


@pytest.mark.parametrize(("override", "paid"), [({"amount": 1999}, (1999, "USD")),
                                                 ({"currency": "EUR"}, (2000, "EUR"))])
async def test_a_payment_that_was_not_credited_is_refunded_through_the_ledger(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings,
    override: dict[str, Any], paid: tuple[int, str],
) -> None:
    """Money taken but not credited is held in `unapplied` (in the currency paid); its refund
    gives it back through the provider's clearing account: the ledger tells the whole story."""
    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await db.run(lambda s: s.execute(update(SandboxPayment).where(
        SandboxPayment.reference == row.reference).values(
            amount=paid[0], currency=paid[1], state="paid")))
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "paid"
    assert (await order_row(db, order["id"])).attention == "amount_mismatch"
    before = await _unapplied(db, paid[1])

    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**staff, **idem()}, json={"reason": "test"})
    assert r.status_code == 202, r.text
    assert (r.json()["amount"]["minor"], r.json()["amount"]["currency"]) == paid
    assert await _unapplied(db, paid[1]) == (before[0], before[1] - paid[0])  # held
    await run_worker(app, db, settings)
    refunded = await order_row(db, order["id"])
    assert (refunded.state, refunded.refunded_amount) == ("refunded", paid[0])
    assert await _unapplied(db, paid[1]) == (before[0] - paid[0], before[1] - paid[0])
    async with db.read() as s:
        refund = (await s.execute(select(Refund).where(
            Refund.order_id == refunded.id))).scalar_one()
        sandbox_row = (await s.execute(select(SandboxPayment).where(
            SandboxPayment.reference == refunded.reference))).scalar_one()
    assert sandbox_row.refunded == paid[0]
    [held] = await transfers_of(db, f"order:{refunded.id}")
    moves = {t.kind: t for t in await transfers_of(db, f"refund:{refund.id}")}
    assert set(moves) == {"pending", "post_pending"}
    back = moves["pending"]
    assert (back.amount, back.unit) == paid
    assert (back.debit_account_id, back.credit_account_id) == (
        held.credit_account_id, held.debit_account_id)
    await assert_ledger_balanced(db)


async def test_an_uncredited_payment_refunded_whole_ends_refunded_and_awaits_no_credit(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A payment taken and never credited (another amount), refunded by finance in two parts.
    While part of it is held the order is `paid`: it awaits credit (or the rest's refund).
    Once all that was paid is refunded it is `refunded`, as a credited order refunded in full:
    the API and the receipt no longer say it awaits credit, and nothing is taken back from the
    line (nothing was credited)."""
    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await db.run(lambda s: s.execute(update(SandboxPayment).where(
        SandboxPayment.reference == row.reference).values(amount=1999, state="paid")))
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert (r.json()["state"], (await order_row(db, order["id"])).attention) == (
        "paid", "amount_mismatch")
    units = await _units(db, payer.line.id)

    for amount, state, refunded, answer in ((999, "paid", 999, (409, "receipt-awaits-credit")),
                                            (1000, "refunded", 1999,
                                             (404, "receipt-refunded-uncredited"))):
        r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                              headers={**staff, **idem()}, json={"amount": amount, "reason": "test"})
        assert r.status_code == 202, r.text
        await run_worker(app, db, settings)
        mine = (await client.get(f"/api/v1/orders/{order['id']}", headers=payer.auth)).json()
        assert (mine["state"], mine["refunded"]["minor"]) == (state, refunded)
        r = await client.get(f"/api/v1/orders/{order['id']}/receipt", headers=payer.auth)
        # Never credited: no receipt, and why.
        assert (r.status_code, problem(r)["type"].rsplit("/", 1)[1]) == answer, r.text
    row = await order_row(db, order["id"])
    assert (row.state, row.refunded_amount, row.fulfilled_at, row.receipt_number) == (
        "refunded", 1999, None, None)
    assert await _units(db, payer.line.id) == units  # nothing taken back
    async with db.read() as s:
        refunds = (await s.execute(select(Refund).where(Refund.order_id == row.id))).scalars()
        ids = [x.id for x in refunds]
    codes = {t.code for rid in ids for t in await transfers_of(db, f"refund:{rid}")}
    assert codes == {"refund"}  # money back out of `unapplied`; no clawback
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**staff, **idem()}, json={"reason": "test"})
    assert r.status_code == 409 and problem(r)["type"].endswith("/order-not-refundable")
    await assert_ledger_balanced(db)


async def _revenue(db: Database, key: str) -> int:
    """What a revenue account (all its shards) holds."""
    async with db.read() as s:
        rows = (await s.execute(select(LedgerAccount).where(
            LedgerAccount.key.in_(chart.keys(key))))).scalars().all()
        return sum(a.credits_posted - a.debits_posted for a in rows)


async def test_an_order_refunded_whole_in_parts_gives_back_the_whole_fee_and_price(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Each part takes its share of the fee, rounded; the part that refunds the last of the
    money takes what is left of the fee, so the sale and the fee are each given back exactly
    (700 + 700 + 719 of 2,119 gave back 118 of the fee and 2,001 of sales for 2,000 sold)."""
    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    order = await _paid_order(client, db, settings, payer, plan="traveller-20", method="paypal")
    fees, sales = await _revenue(db, "revenue:fees:USD"), await _revenue(db, "revenue:sales:USD")
    for amount in (700, 700, 719):
        r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                              headers={**staff, **idem()}, json={"amount": amount, "reason": "test"})
        assert r.status_code == 202, r.text
        await run_worker(app, db, settings)
    row = await order_row(db, order["id"])
    assert (row.state, row.refunded_amount, row.fee) == ("refunded", 2119, 119)
    assert fees - await _revenue(db, "revenue:fees:USD") == row.fee
    assert sales - await _revenue(db, "revenue:sales:USD") == row.price
    await assert_ledger_balanced(db)


@pytest.mark.parametrize("missing", ["amount", "currency"])
async def test_a_payment_taken_without_an_amount_is_refunded_once_the_provider_names_it(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, missing: str
) -> None:
    """A success naming no amount, or no currency, posts nothing (no money is in `unapplied`
    for it): a refund or an apply-to-wallet is refused and changes nothing (before, one without
    a currency could be refunded from nothing). Staff's check asks the provider again although
    the payment is known; its answer names both, which are recorded and posted once, and the
    refund then takes exactly that back out of `unapplied`."""
    from tests.backoffice.helpers import new_staff
    from tests.orders.helpers import sandbox_object, signed_event

    finance = await new_staff(db, settings, "finance")
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await pay_at_sandbox(client, settings, order)
    obj = await sandbox_object(db, row.reference)
    obj.pop(missing)
    body, headers = signed_event(settings, "payment.succeeded", obj)
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text
    taken = await order_row(db, order["id"])
    assert (taken.state, taken.attention) == ("paid", "amount_mismatch")
    assert getattr(taken, f"paid_{missing}") is None
    before = await _unapplied(db, "USD")
    assert await transfers_of(db, f"order:{taken.id}") == []

    url = f"/api/v1/admin/orders/{order['id']}"
    r = await client.post(f"{url}/refunds", headers={**finance.auth, **idem()}, json={"reason": "test"})
    assert (r.status_code, problem(r)["type"].rsplit("/", 1)[1], problem(r)["field"]) == (
        409, "paid-amount-unknown", "order_id")
    r = await client.post(f"{url}/apply-to-wallet", headers=finance.auth, json={"note": "n"})
    assert (r.status_code, problem(r)["type"].rsplit("/", 1)[1], problem(r)["field"]) == (
        409, "nothing-to-apply", "order_id")
    async with db.read() as s:
        assert (await s.execute(select(func.count()).select_from(Refund))).scalar_one() == 0
    assert await _unapplied(db, "USD") == before

    for _ in range(2):  # the second check learns nothing new and posts nothing more
        r = await client.post(f"{url}/check", headers=finance.auth)
        assert r.status_code == 200, r.text
    learnt = await order_row(db, order["id"])
    assert (learnt.state, learnt.paid_amount, learnt.paid_currency) == ("paid", 2000, "USD")
    assert learnt.attention_note is not None and "20.00 USD, reported later" in (
        learnt.attention_note)
    [held] = await transfers_of(db, f"order:{learnt.id}")
    assert (held.code, held.amount) == ("unapplied", 2000)
    assert await _unapplied(db, "USD") == (before[0] + 2000, before[1] + 2000)

    r = await client.post(f"{url}/refunds", headers={**finance.auth, **idem()}, json={"reason": "test"})
    assert r.status_code == 202, r.text
    assert r.json()["amount"]["minor"] == 2000
    await run_worker(app, db, settings)
    refunded = await order_row(db, order["id"])
    assert (refunded.state, refunded.refunded_amount) == ("refunded", 2000)
    assert await _unapplied(db, "USD") == before
    await assert_ledger_balanced(db)


async def test_the_refund_notice_of_a_payment_never_credited_names_no_receipt(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: Any
) -> None:
    """A payment taken and not credited has no receipt: its refund notice (e-mail and portal
    notice, in the payer's language) says what was refunded and for which line, and no
    receipt number — never "receipt None"."""
    from simcharge.kit.translations import translate

    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings, language="es")
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await db.run(lambda s: s.execute(update(SandboxPayment).where(
        SandboxPayment.reference == row.reference).values(amount=1999, state="paid")))
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "paid"
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**staff, **idem()}, json={"reason": "test"})
    assert r.status_code == 202, r.text
    await run_worker(app, db, settings)
    assert (await order_row(db, order["id"])).state == "refunded"
    said = translate("es", "We refunded %(amount)s of your payment for %(msisdn)s. It can take a "
                           "few days to appear on your statement.").split("%(")[0]
    assert said and not said.startswith("We")
    [mail] = [m for m in inbox.to(payer.email) if "19,99" in str(m["Subject"])]
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert said in text and payer.line.msisdn in text, text
    assert "None" not in text and "recibo" not in text, text
    notices = (await client.get("/api/v1/me/notices", headers=payer.auth)).json()["notices"]
    [refunded] = [n for n in notices if n["template"] == "order.refunded"]
    assert "None" not in refunded["body"] and said in refunded["body"], refunded["body"]
