""" "I paid but got nothing", end to end: the customer writes in; an agent finds them, sees the
payment, asks the provider again and the line is credited — or, when the provider took another
amount, finance refunds it; the customer gets the answer."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select, update

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount
from simcharge.lines.models import Line
from simcharge.lines.service import line_balances
from simcharge.orders.models import OrderState, Refund
from tests.auth.helpers import problem
from tests.backoffice.helpers import csrf_of, new_staff, web_sign_in
from tests.conftest import SmtpInbox
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
    sandbox_object,
    signed_event,
    transfers_of,
)


async def _sms_left(db: Database, payer: Payer) -> int:
    async with db.read() as s:
        line = await s.get(Line, payer.line.id)
        assert line is not None
        balances = await line_balances(s, line)
    return sum(u.remaining for u in balances.units if u.unit == "SMS")


async def _balance(db: Database, key: str) -> int:
    """Credits less debits of an operator account, over its shards."""
    async with db.read() as s:
        rows = (
            await s.execute(select(LedgerAccount).where(LedgerAccount.key.in_(chart.keys(key))))
        ).scalars()
        return sum(a.credits_posted - a.debits_posted for a in rows)


async def _unapplied(db: Database) -> int:
    """What the operator holds of payments it did not credit (USD), over the account's shards."""
    return await _balance(db, "unapplied:USD")


async def _write_in(client: httpx.AsyncClient, payer: Payer, order: dict[str, Any]) -> str:
    r = await client.post(
        "/api/v1/me/tickets",
        headers=payer.auth,
        json={
            "subject": "I paid but got nothing",
            "body": "The money left my card an hour ago and my balance did not change.",
            "order_id": order["id"],
        },
    )
    assert r.status_code == 201
    return str(r.json()["id"])


async def test_an_agent_checks_with_the_provider_and_the_line_is_credited(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20")
    await pay_at_sandbox(client, settings, order)  # paid; the webhook has not come
    assert await _sms_left(db, payer) == 0
    ticket_id = await _write_in(client, payer, order)

    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    # find the customer by their number, see the order still pending
    found = await client.get("/backoffice/customers", params={"q": payer.line.msisdn})
    assert f"/backoffice/customers/{payer.account_id}" in found.text
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert order["reference"] in page.text and "pending" in page.text
    # the ticket shows the order and its payment; ask the provider
    page = await client.get(f"/backoffice/tickets/{ticket_id}")
    assert "Check with provider" in page.text
    r = await client.post(
        f"/backoffice/orders/{order['id']}/check",
        data={"csrf": csrf_of(page.text), "then": f"/backoffice/tickets/{ticket_id}"},
    )
    assert r.headers["location"].startswith(f"/backoffice/tickets/{ticket_id}")
    assert (await order_row(db, order["id"])).state == OrderState.fulfilled
    assert await _sms_left(db, payer) > 0
    # answer and resolve
    page = await client.get(f"/backoffice/tickets/{ticket_id}")
    assert "fulfilled" in page.text
    await client.post(
        f"/backoffice/tickets/{ticket_id}/reply",
        data={
            "csrf": csrf_of(page.text),
            "status": "resolved",
            "body": "Your payment was confirmed and your line is credited.",
        },
    )
    mine = (await client.get(f"/api/v1/me/tickets/{ticket_id}", headers=payer.auth)).json()
    assert mine["status"] == "resolved"
    assert mine["messages"][-1]["body"].startswith("Your payment was confirmed")
    await run_worker(app, db, settings)
    assert any("resolved" in str(m["Subject"]) for m in inbox.to(payer.email))
    await assert_ledger_balanced(db)
    async with db.read() as s:
        actions = set((await s.execute(select(AuditEntry.action))).scalars())
    assert {"customer.search", "customer.view", "order.check", "ticket.reply"} <= actions


async def test_a_wrong_amount_is_refunded_by_finance(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await pay_at_sandbox(client, settings, order)
    # the provider took 19.99 instead of the order's total: nothing credited, flagged
    body, headers = signed_event(
        settings, "payment.succeeded", await sandbox_object(db, row.reference, amount=1999)
    )
    assert (
        await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    ).status_code == 200
    # Nothing credited, but the money taken is in the ledger: clearing → unapplied.
    [taken] = await transfers_of(db, f"order:{row.id}")
    assert (taken.code, taken.amount, taken.unit) == ("unapplied", 1999, "USD")
    held = await _unapplied(db)
    ticket_id = await _write_in(client, payer, order)

    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/tickets/{ticket_id}")
    assert "amount_mismatch" in page.text and "Refund amount" not in page.text
    page = await client.get(f"/backoffice/tickets/{ticket_id}")
    await client.post(
        f"/backoffice/tickets/{ticket_id}/reply",
        data={
            "csrf": csrf_of(page.text),
            "internal": "true",
            "body": "Provider took 19.99, order was for another amount. Finance please refund.",
        },
    )

    client.cookies.clear()
    finance = await new_staff(db, settings, "finance")
    await web_sign_in(client, finance)
    page = await client.get("/backoffice/attention")
    assert row.reference in page.text
    page = await client.get(f"/backoffice/tickets/{ticket_id}")
    form = {
        "csrf": csrf_of(page.text),
        "amount": "",
        "all": "yes",  # all that is left, as the page showed it
        "left": "1999",
        "reason": "amount mismatch",
        "idem": f"ticket-{ticket_id}",
        "then": f"/backoffice/tickets/{ticket_id}",
    }
    r = await client.post(f"/backoffice/orders/{order['id']}/refund", data=form)
    assert r.status_code == 303, r.text
    again = await client.post(f"/backoffice/orders/{order['id']}/refund", data=form)
    assert again.status_code == 303  # the same form twice refunds once
    await run_worker(app, db, settings)  # the provider is asked and confirms
    refunded = await order_row(db, order["id"])
    assert refunded.refunded_amount == 1999
    # …and goes back out the way it came: unapplied → clearing, held, then posted.
    async with db.read() as s:
        refund = (await s.execute(select(Refund).where(Refund.order_id == row.id))).scalar_one()
    back = {t.kind: t for t in await transfers_of(db, f"refund:{refund.id}")}
    assert set(back) == {"pending", "post_pending"}
    assert (back["pending"].amount, back["pending"].unit) == (1999, "USD")
    assert (back["pending"].debit_account_id, back["pending"].credit_account_id) == (
        taken.credit_account_id,
        taken.debit_account_id,
    )
    assert await _unapplied(db) == held - 1999
    r = await client.post(
        f"/backoffice/orders/{order['id']}/resolve",
        data={"csrf": csrf_of(page.text), "note": "refunded 19.99 in full"},
    )
    assert r.status_code == 303
    assert (await order_row(db, order["id"])).attention is None
    page = await client.get(f"/backoffice/tickets/{ticket_id}")
    await client.post(
        f"/backoffice/tickets/{ticket_id}/reply",
        data={
            "csrf": csrf_of(page.text),
            "status": "resolved",
            "body": "We refunded the 19.99 that was taken; please try again.",
        },
    )
    mine = (await client.get(f"/api/v1/me/tickets/{ticket_id}", headers=payer.auth)).json()
    assert [m["author"] for m in mine["messages"]] == ["customer", "staff"]
    assert "Finance please" not in str(mine)
    await assert_ledger_balanced(db)


async def _wallet(db: Database, payer: Payer) -> int:
    async with db.read() as s:
        account = await s.get(LedgerAccount, payer.line.wallet_account_id)
        assert account is not None
        return account.credits_posted - account.debits_posted


async def _wrong_amount(client: httpx.AsyncClient, db: Database, settings: Settings,
                        payer: Payer) -> dict[str, Any]:
    """An order the provider took 19.99 for instead of its total: `paid`, nothing credited."""
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await pay_at_sandbox(client, settings, order)
    body, headers = signed_event(
        settings, "payment.succeeded", await sandbox_object(db, row.reference, amount=1999)
    )
    assert (
        await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    ).status_code == 200
    assert (await order_row(db, order["id"])).state == OrderState.paid
    return order


async def test_finance_puts_a_wrong_amount_on_the_line_balance(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The other way to settle money taken and not credited: it becomes the payer's credit,
    moved from `unapplied` to the wallet once — and then it can no longer be refunded."""
    payer = await new_payer(db, settings)
    order = await _wrong_amount(client, db, settings, payer)
    held, wallet = await _unapplied(db), await _wallet(db, payer)

    agent = await new_staff(db, settings, "agent")  # may see it, not move money
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert "amount_mismatch" in page.text
    assert "Put the payment on the line's balance" not in page.text
    client.cookies.clear()
    finance = await new_staff(db, settings, "finance")
    await web_sign_in(client, finance)
    page = await client.get("/backoffice/attention")
    assert "Put the payment on the line's balance" in page.text
    r = await client.post(
        f"/backoffice/orders/{order['id']}/apply-to-wallet",
        data={"csrf": csrf_of(page.text), "note": "customer asked for credit instead"},
    )
    assert r.status_code == 303 and "done=applied_to_balance" in r.headers["location"]
    assert await _wallet(db, payer) == wallet + 1999
    assert await _unapplied(db) == held - 1999
    [taken, applied] = sorted(await transfers_of(db, f"order:{order['id']}"),
                              key=lambda t: t.code != "unapplied")
    assert (applied.code, applied.amount, applied.unit) == ("applied", 1999, "USD")
    assert (applied.debit_account_id, applied.credit_account_id) == (
        taken.credit_account_id, payer.line.wallet_account_id)
    settled = await order_row(db, order["id"])
    assert settled.state == OrderState.paid and settled.attention is None
    assert "19.99 USD applied to the line's wallet" in (settled.attention_note or "")
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert "Put the payment on the line's balance" not in page.text  # done: no button
    async with db.read() as s:
        entry = (await s.execute(
            select(AuditEntry).where(AuditEntry.action == "order.apply_to_wallet"))).scalar_one()
    assert entry.details["amount"] == 1999 and entry.staff_id == finance.id

    # Once only, by any way; and what was applied is not refunded too.
    key = await db.run(lambda s: create_api_key(s, "erp", ["refunds:write"]))
    auth = {"Authorization": f"Bearer {key.token}"}
    again = await client.post(f"/api/v1/admin/orders/{order['id']}/apply-to-wallet",
                              headers=finance.auth, json={"note": "twice"})
    assert again.status_code == 409 and problem(again)["type"] == "/problems/nothing-to-apply"
    refund = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                               headers={**auth, "Idempotency-Key": "r1"},
                               json={"reason": "and the money back"})
    assert refund.status_code == 422
    assert problem(refund)["type"] == "/problems/refund-too-large"
    assert await _wallet(db, payer) == wallet + 1999 and await _unapplied(db) == held - 1999
    # The payer then gets the money back at the provider (its dashboard) as well: recorded and
    # flagged; the money is the operator's to give now (funding), not other payers' (unapplied).
    funding = await _balance(db, "funding:USD")
    row = await order_row(db, order["id"])
    body, headers = signed_event(
        settings, "refund.succeeded",
        await sandbox_object(db, row.reference, amount=1999, refunded=1999,
                             refund_id="dashboard-1", refund_amount=1999),
    )
    news = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert news.status_code == 200, news.text
    reversed_ = await order_row(db, order["id"])
    assert reversed_.attention == "provider_refund" and reversed_.refunded_amount == 1999
    assert await _balance(db, "funding:USD") == funding - 1999
    assert await _wallet(db, payer) == wallet + 1999 and await _unapplied(db) == held - 1999
    await assert_ledger_balanced(db)


async def test_a_payment_in_another_currency_than_the_wallet_is_not_applied(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _wrong_amount(client, db, settings, payer)
    # the line's wallet became a yuan one meanwhile
    await db.run(lambda s: s.execute(
        update(Line).where(Line.id == payer.line.id).values(currency="CNY")))
    held, wallet = await _unapplied(db), await _wallet(db, payer)
    finance = await new_staff(db, settings, "finance")
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/apply-to-wallet",
                          headers=finance.auth, json={"note": "credit please"})
    assert r.status_code == 409 and problem(r)["type"] == "/problems/wallet-currency-differs"
    assert (await _unapplied(db), await _wallet(db, payer)) == (held, wallet)
    assert (await order_row(db, order["id"])).attention == "amount_mismatch"
    # An order that was credited has nothing taken-and-not-credited to apply.
    other = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, other)
    await client.post(f"/api/v1/orders/{other['id']}/check", headers=payer.auth)
    r = await client.post(f"/api/v1/admin/orders/{other['id']}/apply-to-wallet",
                          headers=finance.auth, json={"note": "credit please"})
    assert r.status_code == 409 and problem(r)["type"] == "/problems/nothing-to-apply"


async def test_an_api_key_never_puts_a_payment_on_the_line_balance(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """It settles a payment that needed attention, a person's judgement: `refunds:write`
    refunds and nothing else (README, "Roles")."""
    payer = await new_payer(db, settings)
    order = await _wrong_amount(client, db, settings, payer)
    held, wallet = await _unapplied(db), await _wallet(db, payer)
    key = await db.run(lambda s: create_api_key(s, "erp", ["refunds:write"]))
    auth = {"Authorization": f"Bearer {key.token}"}
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/apply-to-wallet",
                          headers=auth, json={"note": "settled by the ERP"})
    assert r.status_code == 403, r.text
    assert problem(r)["type"] == "/problems/apply-needs-a-person"
    row = await order_row(db, order["id"])
    assert (row.state, row.attention) == (OrderState.paid, "amount_mismatch")
    assert (await _unapplied(db), await _wallet(db, payer)) == (held, wallet)
    async with db.read() as s:
        [refusal] = (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "access.denied",
            AuditEntry.actor == f"apikey:{key.key.prefix}"))).scalars().all()  # fmt: skip
        assert not (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "order.apply_to_wallet"))).first()  # fmt: skip
    assert refusal.target_id == order["id"] and refusal.details["reason"] == "a person only"
    # the key still refunds it
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**auth, "Idempotency-Key": "r1"},
                          json={"reason": "the customer wants it back"})
    assert r.status_code == 202, r.text


async def test_the_report_shows_a_payment_put_on_the_balance_apart_from_those_still_held(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Two payments of a wrong amount: one finance put on the line's balance (the customer's
    credit now), one still held for the payer — the top-ups report tells them apart."""
    payer = await new_payer(db, settings)
    applied = await _wrong_amount(client, db, settings, payer)
    await _wrong_amount(client, db, settings, payer)
    finance = await new_staff(db, settings, "finance")
    r = await client.post(f"/api/v1/admin/orders/{applied['id']}/apply-to-wallet",
                          headers=finance.auth, json={"note": "credit instead"})
    assert r.status_code == 200, r.text
    today = utcnow().date().isoformat()
    r = await client.get("/api/v1/admin/reports/topups", headers=finance.auth,
                         params={"from": today, "to": today})
    assert r.status_code == 200, r.text
    [row] = r.json()
    assert (row["currency"], row["topups"], row["amount"]) == ("USD", 0, 0)
    # Both were taken that day (round 15: counted there for good, from the ledger's `unapplied`
    # transfers); one was put on the balance that day too (its `applied` transfer), within the
    # books: `net` is what clearing received.
    assert (row["uncredited"], row["uncredited_amount"]) == (2, 3998)
    assert (row["applied"], row["applied_amount"]) == (1, 1999)
    assert row["net"] == 3998
    await web_sign_in(client, finance)
    page = await client.get("/backoffice/reports")
    assert "Put on the balance" in page.text and "1 · $19.99" in page.text
    assert "2 · $39.98" in page.text
