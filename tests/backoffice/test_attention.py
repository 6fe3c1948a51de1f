"""Payments needing attention, each kind: raised the way it happens, listed by its flag (the
API and the page, which links to the customer), and settled from the page with the action that
resolves it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line, LineState
from simcharge.orders.models import Order, Refund, SandboxPayment
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.backoffice.test_round13_money import left_to_refund
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
)

KINDS = [
    "amount_mismatch",
    "late_success",
    "line_unavailable",
    "refund_failed",
    "stuck_pending",
    "chargeback",
    "provider_refund",
    "merchant_mismatch",
]
"""The first five are raised here as they happen; the others stand for flags the payments code
raises from what a provider reports (a chargeback, a refund made in its dashboard, another
merchant's answer): the back office lists and settles any flag the same way."""


async def _webhook_paid(client: httpx.AsyncClient, db: Database, settings: Settings,
                        order: dict[str, Any], **override: Any) -> None:
    ref = (await order_row(db, order["id"])).reference
    body, headers = signed_event(
        settings, "payment.succeeded", await sandbox_object(db, ref, **override)
    )
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text


async def _paid(client: httpx.AsyncClient, settings: Settings, payer: Payer) -> dict[str, Any]:
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled"
    return order


async def _raise(kind: str, app: Any, client: httpx.AsyncClient, db: Database,
                 settings: Settings, payer: Payer) -> dict[str, Any]:
    """An order needing attention of `kind`, reached as it happens in production."""
    if kind == "amount_mismatch":
        order = await place(client, payer, plan="starter-10")
        await _webhook_paid(client, db, settings, order, amount=999)
    elif kind == "late_success":
        order = await place(client, payer, plan="starter-10")
        r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
        assert r.json()["state"] == "cancelled"
        await _webhook_paid(client, db, settings, order)
    elif kind == "line_unavailable":
        order = await place(client, payer, plan="starter-10")
        await db.run(lambda s: s.execute(
            update(Line).where(Line.id == payer.line.id).values(state=LineState.terminated.value)
        ))
        await _webhook_paid(client, db, settings, order)
    elif kind == "refund_failed":
        order = await _paid(client, settings, payer)
        finance = await new_staff(db, settings, "finance")
        r = await client.post(
            f"/api/v1/admin/orders/{order['id']}/refunds",
            headers={**finance.auth, "Idempotency-Key": uuid.uuid4().hex},
            json={"reason": "test"},
        )
        assert r.status_code == 202, r.text
        # meanwhile the money went back another way (the provider's dashboard): refused
        await db.run(lambda s: s.execute(
            update(SandboxPayment)
            .where(SandboxPayment.reference == order["reference"])
            .values(refunded=1000)
        ))
        await run_worker(app, db, settings)
    elif kind == "stuck_pending":
        order = await place(client, payer, plan="starter-10")
        await db.run(lambda s: s.execute(
            update(Order)
            .where(Order.id == uuid.UUID(order["id"]))
            .values(created_at=utcnow() - timedelta(hours=3))
        ))
    else:
        # A flag the payments code raises from a provider's report: listed and settled the
        # same way, whatever its name.
        order = await _paid(client, settings, payer)
        await db.run(lambda s: s.execute(
            update(Order)
            .where(Order.id == uuid.UUID(order["id"]))
            .values(attention=kind, attention_note="dispute opened at the provider")
        ))
    row = await order_row(db, order["id"])
    assert row.attention == (None if kind == "stuck_pending" else kind)
    return order


@pytest.mark.parametrize("kind", KINDS)
async def test_each_kind_is_listed_and_resolved_from_the_page(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, kind: str
) -> None:
    payer = await new_payer(db, settings)
    order = await _raise(kind, app, client, db, settings, payer)
    other = await _raise(
        "amount_mismatch" if kind != "amount_mismatch" else "late_success",
        app, client, db, settings, await new_payer(db, settings),
    )
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    # the API lists it by its flag, with the customer it belongs to
    r = await client.get("/api/v1/admin/attention", params={"flag": kind}, headers=agent.auth)
    assert r.status_code == 200, r.text
    assert [(o["id"], o["account_id"]) for o in r.json()] == [
        (order["id"], str(payer.account_id))
    ]
    everything = await client.get("/api/v1/admin/attention", headers=agent.auth)
    assert {o["id"] for o in everything.json()} == {order["id"], other["id"]}
    # the page: a tab per flag, the order with a link to its customer and what settles it
    csrf = await web_sign_in(client, finance)
    home = await client.get("/backoffice")
    assert "<strong>2</strong> payments needing attention" in home.text  # pending ones too
    page = await client.get("/backoffice/attention")
    assert f'href="/backoffice/attention?flag={kind}"' in page.text
    page = await client.get("/backoffice/attention", params={"flag": kind})
    assert page.status_code == 200
    assert order["reference"] in page.text and other["reference"] not in page.text
    assert f'href="/backoffice/customers/{payer.account_id}"' in page.text
    assert 'class="hint"' in page.text
    customer = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert customer.status_code == 200 and order["reference"] in customer.text
    url = f"/backoffice/orders/{order['id']}"
    back = {"csrf": csrf, "then": "/backoffice/attention"}
    if kind == "stuck_pending":
        # paid at the provider in the end; "check with provider" settles it
        assert f'action="{url}/check"' in page.text
        await pay_at_sandbox(client, settings, order)
        r = await client.post(f"{url}/check", data=back)
        assert r.status_code == 303 and r.headers["location"].startswith("/backoffice/attention")
        assert (await order_row(db, order["id"])).state == "fulfilled"
    else:
        assert f'action="{url}/resolve"' in page.text and f'action="{url}/refund"' in page.text
        if kind in ("amount_mismatch", "line_unavailable", "refund_failed"):
            # the money goes back first (what was taken, from the page), then the flag
            r = await client.post(
                f"{url}/refund",
                data={**back, "reason": "money taken, nothing credited",
                      "idem": uuid.uuid4().hex, "all": "yes", "left": left_to_refund(page.text, url)},
                headers={"user-agent": "finance-browser/2.0"},
            )
            assert r.status_code == 303, r.text
            async with db.read() as s:
                refunds = (
                    await s.execute(
                        select(Refund).where(Refund.order_id == uuid.UUID(order["id"]))
                    )
                ).scalars().all()
            assert any(x.state == "pending" for x in refunds)
            entry = await _entry(db, "order.refund", order["id"])
            assert entry.actor == f"staff:{finance.username}"
            assert entry.user_agent == "finance-browser/2.0" and entry.ip
            assert entry.details["reason"] == "money taken, nothing credited"
        r = await client.post(f"{url}/resolve", data={**back, "note": "settled: " + kind})
        assert r.status_code == 303 and r.headers["location"].startswith("/backoffice/attention")
        row = await order_row(db, order["id"])
        assert row.attention is None
        assert row.attention_note and "settled: " + kind in row.attention_note
        entry = await _entry(db, "order.resolve_attention", order["id"])
        assert entry.before and entry.before["attention"] == kind
    r = await client.get("/api/v1/admin/attention", params={"flag": kind}, headers=agent.auth)
    assert r.json() == []
    r = await client.get("/api/v1/admin/attention", headers=agent.auth)
    assert [o["id"] for o in r.json()] == [other["id"]]
    # the agent's reads of the list are in the audit log
    async with db.read() as s:
        reads = (
            await s.execute(
                select(AuditEntry).where(
                    AuditEntry.action == "attention.list",
                    AuditEntry.actor == f"staff:{agent.username}",
                )
            )
        ).scalars().all()
    assert [e.details["flag"] for e in reads].count(kind) == 2
    await assert_ledger_balanced(db)


async def _entry(db: Database, action: str, order_id: str) -> AuditEntry:
    async with db.read() as s:
        found = (
            await s.execute(
                select(AuditEntry)
                .where(AuditEntry.action == action, AuditEntry.target_id == order_id)
                .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
            )
        ).scalars().first()
    assert found is not None, action
    return found
