"""A day's worth of back-office data for the browser tests, made the way it happens: through
the API, the sandbox provider and the worker, with a few states (a dispute, a stuck payment, a
dead job, a locked account) set directly where waiting for them would take hours."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.apikeys import create_api_key
from simcharge.kit.clock import utcnow
from simcharge.lines.models import LineState
from simcharge.orders.models import Order
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob
from tests.backoffice.browser.conftest import Site
from tests.backoffice.helpers import Staff
from tests.orders.helpers import Payer, idem, new_payer, pay_at_sandbox, place


@dataclass
class Day:
    payer: Payer
    """A customer with a partly refunded order (its credit note), a ticket about it and
    adjustments, one applied and one awaiting approval."""
    locked: Payer
    """A customer whose account is locked and whose line is frozen."""
    ticket_id: str
    order_id: str
    """The refunded order's."""


async def _paid(api: httpx.AsyncClient, site: Site, payer: Payer) -> dict[str, Any]:
    order = await place(api, payer, plan="starter-10")
    await pay_at_sandbox(api, site.settings, order)
    r = await api.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return order


async def _dead_job(site: Site) -> None:
    async def write(s: AsyncSession) -> None:
        key = f"email.send:{uuid.uuid4()}"
        await service.enqueue(s, "email.send", {"n": 1}, dedupe_key=key)
        await s.execute(
            update(OutboxJob)
            .where(OutboxJob.dedupe_key == key)
            .values(status=JobStatus.dead.value, attempts=10, last_error="SMTP 451 try later")
        )

    await site.db.run(write)


async def a_day(site: Site, finance: Staff, agent: Staff) -> Day:
    """A day's worth: a customer with a refunded order (its credit note), a ticket about it,
    adjustments applied and awaiting approval, payments needing attention (one stuck, one
    disputed), a locked customer with a frozen line, a dead job and an API key."""
    payer = await new_payer(site.db, site.settings)
    locked = await new_payer(site.db, site.settings, line_state=LineState.frozen)
    await site.db.run(
        lambda s: s.execute(
            update(Account)
            .where(Account.id == locked.account_id)
            .values(status="locked", lock_reason="password", locked_at=utcnow())
        )
    )
    async with httpx.AsyncClient(base_url=site.base) as api:
        order = await _paid(api, site, payer)
        r = await api.post(
            f"/api/v1/admin/orders/{order['id']}/refunds",
            headers={**finance.auth, **idem()},
            json={"amount": 100, "reason": "customer asked"},
        )
        assert r.status_code == 202, r.text
        for _ in range(200):  # the worker asks the sandbox, then numbers the credit note
            refunds = (await api.get(f"/api/v1/orders/{order['id']}", headers=payer.auth)).json()[
                "refunds"
            ]
            if refunds and refunds[0]["credit_note_number"]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the refund was not done: {refunds}")
        r = await api.post(
            "/api/v1/me/tickets",
            headers={**payer.auth, **idem()},
            json={"subject": "Charged twice?", "body": "I see two charges.", "order_id": order["id"]},
        )
        assert r.status_code == 201, r.text
        ticket_id = r.json()["id"]
        adjust = f"/api/v1/admin/lines/{payer.line.id}/adjustments"
        for amount in (500, 2500):  # the second waits for a second person
            r = await api.post(
                adjust, headers={**agent.auth, **idem()}, json={"amount": amount, "reason": "goodwill"}
            )
            assert r.status_code == 201, r.text
        disputed = await _paid(api, site, payer)
        stuck = await place(api, payer, plan="starter-10")
    await site.db.run(
        lambda s: s.execute(
            update(Order)
            .where(Order.id == uuid.UUID(disputed["id"]))
            .values(attention="chargeback", attention_note="dispute opened at the provider")
        )
    )
    await site.db.run(
        lambda s: s.execute(
            update(Order)
            .where(Order.id == uuid.UUID(stuck["id"]))
            .values(created_at=utcnow() - timedelta(hours=3))
        )
    )
    await _dead_job(site)
    await site.db.run(lambda s: create_api_key(s, "reporting", ["reports:read", "orders:read"]))
    return Day(payer, locked, ticket_id, order["id"])
