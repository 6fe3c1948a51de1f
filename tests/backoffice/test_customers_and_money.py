"""Finding customers, their full view, and the money and access actions — each role refused
what it may not do, every money action in the ledger and the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from simcharge.accounts.models import Account
from simcharge.auth.apikeys import create_api_key
from simcharge.auth.client import ClientInfo
from simcharge.auth.service import lock_account
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.models import Adjustment, AuditEntry
from simcharge.backoffice.money import FourEyes, decide_adjustment
from simcharge.backoffice.roles import Permission
from simcharge.charging.batch import import_usage_records, read_usage_text
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger.models import LedgerAccount
from simcharge.lines.models import Bucket, Line, LineState
from simcharge.orders.fulfilment import issue_receipt_number
from simcharge.orders.models import Order, Payment
from simcharge.worker.models import OutboxJob
from tests.backoffice.helpers import adjust_key_of, new_staff, web_sign_in
from tests.factories import create_line
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    idem,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
    sandbox_object,
    signed_event,
)


async def _paid(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    payer: Payer,
    plan: str = "traveller-20",
) -> dict[str, Any]:
    order = await place(client, payer, plan=plan)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled"
    await db.run(lambda s: issue_receipt_number(s, uuid.UUID(order["id"])))
    return dict(r.json())


async def _wallet(db: Database, line_id: uuid.UUID) -> int:
    async with db.read() as s:
        line = await s.get(Line, line_id)
        assert line is not None
        acc = await s.get(LedgerAccount, line.wallet_account_id)
        assert acc is not None
        return acc.credits_posted - acc.debits_posted


async def _actions(db: Database, target: str | uuid.UUID) -> list[str]:
    async with db.read() as s:
        return list(
            (
                await s.execute(
                    select(AuditEntry.action)
                    .where(AuditEntry.target_id == str(target))
                    .order_by(AuditEntry.at, AuditEntry.id)
                )
            ).scalars()
        )


async def test_search_finds_a_customer_by_everything_they_are_known_by(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    await new_payer(db, settings)  # someone else, never found
    phone = f"+4420794{uuid.uuid4().int % 10**5:05d}"  # the account's own phone, not a line

    async def contacts(s: Any) -> None:
        await s.execute(
            update(Account)
            .where(Account.id == payer.account_id)
            .values(display_name="Zhang Wěi Smithson", phone=phone)
        )

    await db.run(contacts)
    order = await _paid(client, db, settings, payer)
    row = await order_row(db, order["id"])
    async with db.read() as s:
        payment = (await s.execute(select(Payment).where(Payment.order_id == row.id))).scalar_one()
        account = await s.get(Account, payer.account_id)
        assert account is not None
    ticket = (
        await client.post(
            "/api/v1/me/tickets", headers=payer.auth, json={"subject": "help", "body": "please"}
        )
    ).json()
    agent = await new_staff(db, settings, "agent")
    queries = [
        account.username,
        account.username.upper()[:8],
        payer.email,
        payer.line.msisdn,
        payer.line.msisdn[-7:],
        payer.line.iccid,
        str(row.id),
        row.reference,
        row.receipt_number,
        payment.provider_ref,
        ticket["number"],
        str(payer.account_id),
        "zhang wěi",  # the display name, any case
        "SMITHSON",
        phone,  # the account's phone, whole or in part, as typed
        phone[-7:],
        f"{phone[:3]} {phone[3:7]} {phone[7:]}",
    ]
    for q in queries:
        assert q
        r = await client.get("/api/v1/admin/customers", params={"q": q}, headers=agent.auth)
        assert r.status_code == 200, r.text
        assert [c["id"] for c in r.json()] == [str(payer.account_id)], q
    for q in ("zz-nobody-zz", "R2099-999999", "%", "__"):
        r = await client.get("/api/v1/admin/customers", params={"q": q}, headers=agent.auth)
        assert r.status_code in (200, 422) and (r.status_code == 422 or r.json() == []), q
    async with db.read() as s:
        searches = (
            (await s.execute(select(AuditEntry).where(AuditEntry.action == "customer.search")))
            .scalars()
            .all()
        )
    assert len(searches) >= len(queries)
    # the same on the page
    await web_sign_in(client, agent)
    page = await client.get("/backoffice/customers", params={"q": payer.line.msisdn})
    assert account.username in page.text


async def _import_usage(db: Database, settings: Settings, *rows: str) -> None:
    text = "id,subscriber,service,quantity,started_at,country\n" + "\n".join(rows)
    report = await import_usage_records(db, settings, read_usage_text(text, "usage.csv"))
    assert report.accepted == len(rows) and not report.errors, report


def _at(start: datetime, seconds: int) -> str:
    """A usage record's start, `seconds` after the test's start (after the plan's buckets)."""
    return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_the_full_view_shows_everything(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    start = utcnow()
    clock.freeze(start)
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer, plan="starter-10")
    # the provider's webhook arrives too (after the check credited it): an event on the order
    row = await order_row(db, order["id"])
    body, headers = signed_event(
        settings, "payment.succeeded", await sandbox_object(db, row.reference)
    )
    assert (await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)).is_success
    await run_worker(app, db, settings)  # receipt e-mail, in-portal notice

    ticket = (
        await client.post(
            "/api/v1/me/tickets", headers=payer.auth, json={"subject": "Data?", "body": "Slow."}
        )
    ).json()

    async def lock(s: Any) -> None:
        account = await s.get(Account, payer.account_id)
        await lock_account(
            s, account, reason="customer", client=ClientInfo("203.0.113.9", "phone/1"),
            now=utcnow(),
        )

    await db.run(lock)
    agent = await new_staff(db, settings, "agent")
    r = await client.post(
        f"/api/v1/admin/lines/{payer.line.id}/adjustments",
        headers={**agent.auth, **idem()},
        json={"amount": 300, "reason": "goodwill for the slow data"},
    )
    assert r.json()["state"] == "applied"
    # usage: 90 s of voice from the minutes bucket; 21 SMS: 20 from the bucket, 1 from the
    # wallet at the home tariff (0.05); then the tariff changes (0.05 → 0.07, version 2) and one
    # more SMS is paid at the new price
    clock.advance(minutes=1)
    msisdn = payer.line.msisdn
    await _import_usage(
        db, settings,
        f"u1,{msisdn},voice,90,{_at(start, 20)},",
        f"u2,{msisdn},sms,21,{_at(start, 40)},",
    )
    clock.advance(minutes=1)
    admin = await new_staff(db, settings, "admin")
    tariff = {"service": "sms", "zone": "home", "currency": "USD", "price": "0.07",
              "per": "message"}
    r = await client.put(
        "/api/v1/admin/catalog/tariffs/sms.home.USD", headers=admin.auth, json=tariff
    )
    assert r.status_code == 200, r.text
    clock.advance(minutes=1)
    await _import_usage(db, settings, f"u3,{msisdn},sms,1,{_at(start, 170)},")

    finance = await new_staff(db, settings, "finance")
    r = await client.get(f"/api/v1/admin/customers/{payer.account_id}", headers=finance.auth)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["account"]["status"] == "locked"
    [line] = view["lines"]
    assert line["msisdn"] == msisdn and line["balances"]["units"]
    assert any(t["code"] == "grant" for t in line["transfers"])
    assert any(t["code"] == "adjustment" for t in line["transfers"])
    [placed] = view["orders"]
    assert placed["reference"] == order["reference"] and placed["account_id"] == str(
        payer.account_id
    )
    assert placed["payment"]["state"] == "succeeded"
    assert "payment.succeeded" in [e["event_type"] for e in placed["events"]]
    assert view["sessions"] and view["sessions"][0]["ip"] == "198.51.100.7"
    assert any(
        e["kind"] == "account_locked" and e["ip"] == "203.0.113.9" for e in view["security_events"]
    ), view["security_events"]
    assert view["notices"] and any(m["channel"] == "email" for m in view["messages"])
    assert [(t["id"], t["subject"]) for t in view["tickets"]] == [(ticket["id"], "Data?")]
    [adj] = view["adjustments"]
    assert (adj["amount"], adj["reason"]) == (300, "goodwill for the slow data")
    # usage, latest first: what each took from where, at the tariff version in force
    usage = line["usage"]
    assert [u["external_id"] for u in usage] == ["u3", "u2", "u1"]
    u3, u2, u1 = usage
    assert [(t["source"], t["unit"], t["amount"]) for t in u1["taken"]] == [
        ("bucket", "VOICE_S", 90)
    ]
    assert (u1["from_buckets"], u1["charge"]) == (90, 0)
    assert [(t["source"], t["amount"]) for t in u2["taken"]] == [("bucket", 20), ("wallet", 5)]
    assert (u2["charge"], u2["currency"], u2["tariff"]["version"]) == (5, "USD", 1)
    assert u2["tariff"]["price"] == 5
    assert [(t["source"], t["amount"]) for t in u3["taken"]] == [("wallet", 7)]
    assert (u3["charge"], u3["tariff"]["version"], u3["tariff"]["price"]) == (7, 2, 7)
    # the page shows the same, with the link to the line's usage and its filters
    await web_sign_in(client, finance)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert page.status_code == 200
    for text in (msisdn, order["reference"], "Refund amount", "Ledger transfers",
                 "payment.succeeded", "account_locked", "203.0.113.9", "Data?",
                 "goodwill for the slow data", "Recent usage", "v2: $0.07 / message",
                 "v1: $0.05 / message", f"/backoffice/lines/{payer.line.id}/usage"):
        assert text in page.text, text
    assert "Unfreeze line" not in page.text
    usage_page = await client.get(
        f"/backoffice/lines/{payer.line.id}/usage", params={"service": "voice"}
    )
    assert usage_page.status_code == 200
    assert "1 min 30 s" in usage_page.text and "v2:" not in usage_page.text
    r = await client.get(
        f"/api/v1/admin/lines/{payer.line.id}/usage",
        params={"service": "sms", "to": (start + timedelta(seconds=170)).date().isoformat()},
        headers=finance.auth,
    )
    assert [u["external_id"] for u in r.json()] == ["u3", "u2"]
    r = await client.get(
        f"/api/v1/admin/lines/{payer.line.id}/usage",
        params={"limit": 1, "before": u3["started_at"], "before_id": u3["id"]},
        headers=finance.auth,
    )
    assert [u["external_id"] for u in r.json()] == ["u2"]
    for params in ({"from": "yesterday"}, {"from": "2026-11-26", "to": "2026-11-25"},
                   {"service": "fax"}):
        r = await client.get(
            f"/api/v1/admin/lines/{payer.line.id}/usage", params=params, headers=finance.auth
        )
        assert r.status_code == 422, params
    assert (
        await client.get(f"/api/v1/admin/lines/{uuid.uuid4()}/usage", headers=finance.auth)
    ).status_code == 404
    assert await _actions(db, payer.account_id) == ["customer.view", "customer.view"]
    assert await _actions(db, payer.line.id) == [
        "adjustment.apply", "usage.list", "usage.list", "usage.list"
    ]
    r = await client.get(f"/api/v1/admin/customers/{uuid.uuid4()}", headers=finance.auth)
    assert r.status_code == 404


async def test_adjustments_small_at_once_large_need_a_second_person(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    await _paid(client, db, settings, payer)
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    other_finance = await new_staff(db, settings, "finance")
    start = await _wallet(db, payer.line.id)
    url = f"/api/v1/admin/lines/{payer.line.id}/adjustments"
    # small: posted now
    r = await client.post(
        url, headers={**agent.auth, **idem()}, json={"amount": 500, "reason": "goodwill"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "applied" and r.json()["transfer_id"]
    assert await _wallet(db, payer.line.id) == start + 500
    # large: waits, moves nothing
    r = await client.post(
        url, headers={**agent.auth, **idem()}, json={"amount": 2500, "reason": "paid twice"}
    )
    big = r.json()
    assert big["state"] == "awaiting_approval" and big["transfer_id"] is None
    assert await _wallet(db, payer.line.id) == start + 500
    decision = f"/api/v1/admin/adjustments/{big['id']}/decision"
    # the agent may not approve; nor may the one who asked (four-eyes)
    r = await client.post(decision, headers=agent.auth, json={"approve": True})
    assert r.status_code == 403
    # a debit beyond the wallet is refused at once, never put up for approval (fifteenth round)
    r = await client.post(
        url, headers={**finance.auth, **idem()}, json={"amount": -1_000_000, "reason": "oops"}
    )
    assert r.status_code == 409 and r.json()["type"] == "/problems/insufficient-balance"
    r = await client.post(
        url, headers={**finance.auth, **idem()}, json={"amount": 2100, "reason": "oops"}
    )
    own = r.json()
    assert own["state"] == "awaiting_approval", r.text
    r = await client.post(
        f"/api/v1/admin/adjustments/{own['id']}/decision",
        headers=finance.auth,
        json={"approve": True},
    )
    assert r.status_code == 403 and r.json()["type"] == "/problems/four-eyes"
    # someone else approves: posted
    r = await client.post(decision, headers=finance.auth, json={"approve": True})
    assert r.status_code == 200 and r.json()["state"] == "applied", r.text
    assert await _wallet(db, payer.line.id) == start + 3000
    r = await client.post(decision, headers=other_finance.auth, json={"approve": False})
    assert r.status_code == 409 and r.json()["type"] == "/problems/adjustment-decided"
    r = await client.post(
        f"/api/v1/admin/adjustments/{own['id']}/decision",
        headers=other_finance.auth,
        json={"approve": False},
    )
    assert r.json()["state"] == "rejected"
    # a bucket: units in the ledger's measure
    async with db.read() as s:
        bucket = (
            (
                await s.execute(
                    select(Bucket).where(Bucket.line_id == payer.line.id, Bucket.unit == "SMS")
                )
            )
            .scalars()
            .first()
        )
        assert bucket is not None
    r = await client.post(
        url,
        headers={**agent.auth, **idem()},
        json={"target": str(bucket.id), "amount": 5, "reason": "sorry"},
    )
    assert r.json()["state"] == "applied" and r.json()["unit"] == "SMS"
    # bad input changes nothing
    for body in (
        {"amount": 0, "reason": "x"},
        {"amount": 10, "reason": " "},
        {"target": str(uuid.uuid4()), "amount": 10, "reason": "x"},
        {"target": "nonsense", "amount": 10, "reason": "x"},
    ):
        r = await client.post(url, headers={**agent.auth, **idem()}, json=body)
        assert r.status_code == 422, (body, r.text)
    r = await client.post(
        f"/api/v1/admin/lines/{uuid.uuid4()}/adjustments",
        headers={**agent.auth, **idem()},
        json={"amount": 10, "reason": "x"},
    )
    assert r.status_code == 404
    async with db.read() as s:
        assert len((await s.execute(select(Adjustment))).scalars().all()) == 4
    await assert_ledger_balanced(db)
    assert await _actions(db, payer.line.id) == [
        "adjustment.apply",
        "adjustment.request",
        "adjustment.request",
        "adjustment.approve",
        "adjustment.reject",
        "adjustment.apply",
    ]
    # an API key may not approve (no scope grants it)
    key = await db.run(lambda s: create_api_key(s, "crm", ["adjustments:write"]))
    auth = {"Authorization": f"Bearer {key.token}"}
    r = await client.post(
        f"/api/v1/admin/adjustments/{own['id']}/decision", headers=auth, json={"approve": True}
    )
    assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"


async def test_adjustment_and_approval_on_the_pages(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, agent)
    start = await _wallet(db, payer.line.id)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    key = adjust_key_of(page.text, payer.line.id)
    r = await client.post(
        f"/backoffice/lines/{payer.line.id}/adjust",
        data={"csrf": csrf, "target": "wallet", "amount": "25.00", "reason": "charged twice",
              "idem": key},
    )
    assert r.status_code == 303 and "awaiting_approval" in r.headers["location"]
    page = await client.get(r.headers["location"])
    r = await client.post(
        f"/backoffice/lines/{payer.line.id}/adjust",
        data={"csrf": csrf, "target": "wallet", "amount": "2.001", "reason": "x",
              "idem": adjust_key_of(page.text, payer.line.id)},
    )
    assert r.status_code == 422 and "not a valid amount" in r.text
    client.cookies.clear()
    csrf = await web_sign_in(client, finance)
    page = await client.get("/backoffice/adjustments")
    assert "charged twice" in page.text and "Approve" in page.text
    async with db.read() as s:
        adj = (await s.execute(select(Adjustment))).scalar_one()
    r = await client.post(f"/backoffice/adjustments/{adj.id}/approve", data={"csrf": csrf})
    assert r.status_code == 303
    assert await _wallet(db, payer.line.id) == start + 2500


async def test_unlock_unfreeze_and_resend_receipt(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    pending = await place(client, payer)

    async def lock(s: Any) -> None:
        account = await s.get(Account, payer.account_id)
        await lock_account(s, account, reason="customer", client=None, now=utcnow())
        await s.execute(update(Line).where(Line.id == payer.line.id).values(state="frozen"))

    await db.run(lock)
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    r = await client.post(
        f"/api/v1/admin/customers/{payer.account_id}/unlock", headers=finance.auth
    )
    assert r.status_code == 403
    r = await client.post(f"/api/v1/admin/lines/{payer.line.id}/unfreeze", headers=finance.auth)
    assert r.status_code == 403
    csrf = await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert "Unlock account" in page.text and "Unfreeze line" in page.text
    r = await client.post(f"/backoffice/customers/{payer.account_id}/unlock", data={"csrf": csrf})
    assert r.status_code == 303
    r = await client.post(f"/api/v1/admin/customers/{payer.account_id}/unlock", headers=agent.auth)
    assert r.status_code == 409 and r.json()["type"] == "/problems/account-not-locked"
    r = await client.post(f"/api/v1/admin/lines/{payer.line.id}/unfreeze", headers=agent.auth)
    assert r.status_code == 200 and r.json()["state"] == "active"
    r = await client.post(f"/api/v1/admin/lines/{payer.line.id}/unfreeze", headers=agent.auth)
    assert r.status_code == 409 and r.json()["type"] == "/problems/line-not-frozen"
    async with db.read() as s:
        assert (await s.get(Account, payer.account_id)).status == "active"  # type: ignore[union-attr]
        line = await s.get(Line, payer.line.id)
        assert line is not None and line.state == LineState.active
    assert await _actions(db, payer.account_id) == ["customer.view", "account.unlock"]
    assert await _actions(db, payer.line.id) == ["line.unfreeze"]
    # resend the receipt (the API, then the page): a receipt job each; none for an order never
    # credited; each resend audited with where it came from
    r = await client.post(
        f"/api/v1/admin/orders/{order['id']}/resend-receipt",
        headers={**agent.auth, "user-agent": "crm-tool/3.1"},
    )
    assert r.status_code == 202
    r = await client.post(
        f"/backoffice/orders/{order['id']}/resend-receipt",
        data={"csrf": csrf, "then": f"/backoffice/customers/{payer.account_id}",
              "idem": "resend-once-1"},
        headers={"user-agent": "agent-browser/1.0"},
    )
    assert r.status_code == 303
    assert r.headers["location"] == (
        f"/backoffice/customers/{payer.account_id}?done=receipt_resent#order-{order['id']}"
    )
    async with db.read() as s:
        resent = list(
            (
                await s.execute(
                    select(AuditEntry)
                    .where(
                        AuditEntry.action == "order.resend_receipt",
                        AuditEntry.target_id == order["id"],
                    )
                    .order_by(AuditEntry.at, AuditEntry.id)
                )
            ).scalars()
        )
    assert [(e.actor, e.user_agent, e.ip) for e in resent] == [
        (f"staff:{agent.username}", "crm-tool/3.1", "127.0.0.1"),
        (f"staff:{agent.username}", "agent-browser/1.0", "127.0.0.1"),
    ]
    assert resent[0].details["receipt"]
    r = await client.post(
        f"/api/v1/admin/orders/{pending['id']}/resend-receipt", headers=agent.auth
    )
    assert r.status_code == 409 and r.json()["type"] == "/problems/no-receipt"
    async with db.read() as s:
        jobs = (
            (await s.execute(select(OutboxJob).where(OutboxJob.kind == "orders.receipt")))
            .scalars()
            .all()
        )
    assert len([j for j in jobs if j.payload["order_id"] == order["id"]]) == 3


async def test_payments_needing_attention_and_their_resolution(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    mismatch = await place(client, payer)
    ref = (await order_row(db, mismatch["id"])).reference
    body, headers = signed_event(
        settings, "payment.succeeded", await sandbox_object(db, ref, amount=1999)
    )
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200
    stuck = await place(client, payer)
    await db.run(
        lambda s: s.execute(
            update(Order)
            .where(Order.id == uuid.UUID(stuck["id"]))
            .values(created_at=utcnow() - timedelta(hours=3))
        )
    )
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    r = await client.get("/api/v1/admin/attention", headers=agent.auth)
    listed = {o["id"]: o["attention"] for o in r.json()}
    assert listed == {mismatch["id"]: "amount_mismatch", stuck["id"]: None}
    url = f"/api/v1/admin/orders/{mismatch['id']}/resolve"
    r = await client.post(url, headers=agent.auth, json={"note": "refunded"})
    assert r.status_code == 403
    r = await client.post(url, headers=finance.auth, json={"note": " "})
    assert r.status_code == 422
    # finance refunds what was taken, then marks it resolved
    r = await client.post(
        f"/api/v1/admin/orders/{mismatch['id']}/refunds",
        headers={**finance.auth, "Idempotency-Key": "k1"},
        json={"reason": "test"},
    )
    assert r.status_code == 202, r.text
    r = await client.post(url, headers=finance.auth, json={"note": "refunded the 19.99 taken"})
    assert r.status_code == 200
    r = await client.post(url, headers=finance.auth, json={"note": "again"})
    assert r.status_code == 409
    r = await client.get("/api/v1/admin/attention", headers=agent.auth)
    assert [o["id"] for o in r.json()] == [stuck["id"]]
    assert await _actions(db, mismatch["id"]) == ["order.refund", "order.resolve_attention"]
    await web_sign_in(client, finance)
    page = await client.get("/backoffice/attention")
    assert stuck["reference"] in page.text and "Check with provider" in page.text


DENIED: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "agent": [
        ("POST", "/api/v1/admin/orders/{order}/refunds", {}),
        ("POST", "/api/v1/admin/adjustments/{adj}/decision", {"approve": True}),
        ("POST", "/api/v1/admin/orders/{order}/resolve", {"note": "x"}),
        ("GET", "/api/v1/admin/audit", {}),
    ],
    "finance": [
        ("POST", "/api/v1/admin/customers/{account}/unlock", {}),
        ("POST", "/api/v1/admin/lines/{line}/unfreeze", {}),
        ("GET", "/api/v1/admin/audit", {}),
    ],
}


@pytest.mark.parametrize("role", ["agent", "finance"])
async def test_each_role_is_refused_what_it_may_not_do(
    client: httpx.AsyncClient, db: Database, settings: Settings, role: str
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    asker = await new_staff(db, settings, "admin")
    adj = (
        await client.post(
            f"/api/v1/admin/lines/{payer.line.id}/adjustments",
            headers={**asker.auth, **idem()},
            json={"amount": 9999, "reason": "x"},
        )
    ).json()
    staff = await new_staff(db, settings, role)
    ids = {
        "order": order["id"],
        "adj": adj["id"],
        "account": payer.account_id,
        "line": payer.line.id,
    }
    for method, path, body in DENIED[role]:
        r = await client.request(
            method,
            path.format(**ids),
            headers={**staff.auth, "Idempotency-Key": "k"},
            json=body or None,
        )
        assert r.status_code == 403, (method, path, r.text)
    async with db.read() as s:
        denied = (
            (await s.execute(select(AuditEntry).where(AuditEntry.action == "access.denied")))
            .scalars()
            .all()
        )
    assert len(denied) == len(DENIED[role])
    # an admin may do all of it
    admin = await new_staff(db, settings, "admin")
    r = await client.post(
        f"/api/v1/admin/adjustments/{adj['id']}/decision",
        headers=admin.auth,
        json={"approve": True},
    )
    assert r.status_code == 200


async def test_four_eyes_counts_what_a_customer_was_adjusted_in_the_last_day(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The threshold (20.00 by default) bounds what moves without a second person per customer
    and unit over a rolling 24 hours: splitting, across lines or colleagues, does not avoid it."""
    payer = await new_payer(db, settings)
    await _paid(client, db, settings, payer)  # some buckets
    second = await db.run(lambda s: create_line(s, account_id=payer.account_id))
    other = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    colleague = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")

    async def adjust(who: Any, line: uuid.UUID, amount: int, target: str = "wallet") -> Any:
        r = await client.post(
            f"/api/v1/admin/lines/{line}/adjustments",
            headers={**(who.auth if hasattr(who, "auth") else who), **idem()},
            json={"amount": amount, "target": target, "reason": "goodwill"},
        )
        return r

    clock.freeze(utcnow())
    assert (await adjust(agent, payer.line.id, 1500)).json()["state"] == "applied"
    assert (await adjust(colleague, second.id, 500)).json()["state"] == "applied"  # 20.00: at
    # one cent more, by anyone, on any of the customer's lines: a second person must approve
    waiting = (await adjust(agent, payer.line.id, 1)).json()
    assert waiting["state"] == "awaiting_approval" and waiting["transfer_id"] is None
    assert (await adjust(colleague, second.id, -50)).json()["state"] == "awaiting_approval"
    # another unit counts apart, another customer too
    async with db.read() as s:
        sms = (
            await s.execute(
                select(Bucket).where(Bucket.line_id == payer.line.id, Bucket.unit == "SMS")
            )
        ).scalars().first()
    assert sms is not None
    assert (await adjust(agent, payer.line.id, 5, str(sms.id))).json()["state"] == "applied"
    assert (await adjust(agent, other.line.id, 1500)).json()["state"] == "applied"
    # an approved adjustment was seen by two people: it does not fill the window
    r = await client.post(
        f"/api/v1/admin/adjustments/{waiting['id']}/decision",
        headers=finance.auth,
        json={"approve": True},
    )
    assert r.json()["state"] == "applied"
    assert (await adjust(agent, payer.line.id, 1)).json()["state"] == "awaiting_approval"
    async with db.read() as s:
        last = (
            await s.execute(
                select(AuditEntry)
                .where(AuditEntry.action == "adjustment.request")
                .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
            )
        ).scalars().first()
    assert last is not None and last.details["applied_alone_24h"] == 2000
    assert last.details["limit"] == 2000
    # a day later the window is empty again
    clock.advance(hours=24, seconds=1)
    agent = await new_staff(db, settings, "agent")  # (the first one's session timed out)
    assert (await adjust(agent, payer.line.id, 2000)).json()["state"] == "applied"
    # an API key adjusts within the threshold, but may not ask for what needs an approval
    # (nobody could tell its holder from the approver): refused, nothing stored
    key = await db.run(lambda s: create_api_key(s, "crm", ["adjustments:write"]))
    auth = {"Authorization": f"Bearer {key.token}"}
    assert (await adjust(auth, other.line.id, 500)).json()["state"] == "applied"
    async with db.read() as s:
        count = len((await s.execute(select(Adjustment))).scalars().all())
    r = await adjust(auth, other.line.id, 1501)  # 5.00 + 15.01 > 20.00
    assert r.status_code == 403 and r.json()["type"] == "/problems/adjustment-needs-a-person"
    async with db.read() as s:
        assert len((await s.execute(select(Adjustment))).scalars().all()) == count
    await assert_ledger_balanced(db)


async def test_each_wallet_currency_has_its_own_threshold(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """20.00 is about 20 dollars but under 3 in yuan: a yuan wallet's threshold is its own
    (140.00 CNY by default); a currency not listed falls back to the general one."""
    assert settings.approval_currencies["CNY"] == 14000
    yuan = await new_payer(db, settings, currency="CNY")
    euro = await new_payer(db, settings, currency="EUR")
    agent = await new_staff(db, settings, "agent")

    async def adjust(line: uuid.UUID, amount: int) -> str:
        r = await client.post(
            f"/api/v1/admin/lines/{line}/adjustments",
            headers={**agent.auth, **idem()},
            json={"amount": amount, "target": "wallet", "reason": "goodwill"},
        )
        assert r.status_code in (200, 201), r.text
        return str(r.json()["state"])

    assert await adjust(yuan.line.id, 5000) == "applied"  # 50.00 CNY: above 20.00, within 140.00
    assert await adjust(yuan.line.id, 9000) == "applied"  # 140.00 in all: at the threshold
    assert await adjust(yuan.line.id, 1) == "awaiting_approval"
    assert await adjust(euro.line.id, 2000) == "applied"
    assert await adjust(euro.line.id, 1) == "awaiting_approval"
    await assert_ledger_balanced(db)


def test_the_currency_thresholds_setting_is_checked() -> None:
    assert Settings(_env_file=None, adjustment_approval_currencies="").approval_currencies == {}
    with pytest.raises(ValidationError):
        Settings(_env_file=None, adjustment_approval_currencies="yuan:100")


async def test_whoever_asked_never_approves_by_any_credential(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    finance = await new_staff(db, settings, "finance")
    r = await client.post(
        f"/api/v1/admin/lines/{payer.line.id}/adjustments",
        headers={**finance.auth, **idem()},
        json={"amount": 5000, "reason": "paid twice"},
    )
    adj = r.json()
    assert adj["state"] == "awaiting_approval"
    # asked with a token, approving on the page: the same person, refused
    csrf = await web_sign_in(client, finance)
    page = await client.get("/backoffice/adjustments")
    assert "paid twice" in page.text and f"/adjustments/{adj['id']}/approve" not in page.text
    r = await client.post(f"/backoffice/adjustments/{adj['id']}/approve", data={"csrf": csrf})
    assert r.status_code == 403 and "someone other than who asked" in r.text
    # no credential without a person behind it approves, even one holding the permission
    tool = Actor(name="apikey:sck_test", permissions=frozenset(Permission))
    with pytest.raises(FourEyes):
        async with db.transaction() as s:
            await decide_adjustment(s, tool, uuid.UUID(adj["id"]), approve=True, now=utcnow())
    async with db.read() as s:
        row = await s.get(Adjustment, uuid.UUID(adj["id"]))
        assert row is not None and row.state == "awaiting_approval"
