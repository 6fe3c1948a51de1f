"""The sandbox's refunds, review round 15.

A `refund.succeeded` naming another merchant was accepted: only a payment's merchant was
compared (`webhooks`: a status's `merchant`), and a refund notification carries no status. The
sandbox now refuses any event naming another merchant as `foreign`, a refund's as a payment's.

A refund still pending in a restored backup is looked for at the sandbox before it is sent
(`payments.jobs._looked_for`): made there already, it is adopted; the sandbox reporting more
refunded than the books know of, it is not sent.

Real databases (both), real HMAC signatures (`Sandbox-Signature`), the app's own endpoints.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.metrics import WEBHOOKS
from simcharge.orders.models import ProviderEvent, Refund, SandboxPayment
from simcharge.payments.jobs import HELD
from tests.factories import load_demo_catalog
from tests.orders.helpers import (
    assert_ledger_balanced,
    fulfilled,
    idem,
    new_payer,
    order_row,
    run_worker,
    sandbox_object,
    signed_event,
)


@pytest.fixture(autouse=True)
async def _catalog(db: Database) -> None:
    await db.run(load_demo_catalog)


async def _stored(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(ProviderEvent))).scalar_one())


async def _refunds(db: Database) -> list[Refund]:
    async with db.read() as s:
        return list((await s.execute(select(Refund).order_by(Refund.created_at))).scalars())


@pytest.mark.parametrize("kind", ["refund.succeeded", "payment.succeeded"])
async def test_a_notification_naming_another_merchant_is_refused_as_foreign(
    client: httpx.AsyncClient, db: Database, settings: Settings, kind: str
) -> None:
    """Signed with our secret, about our paid order, naming another merchant: refused (400,
    `rejected:foreign`), nothing stored or recorded — a refund as a payment."""
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    row = await order_row(db, order["id"])
    stored = await _stored(db)
    rejected = WEBHOOKS.labels("sandbox", "rejected:foreign")._value.get()
    obj = await sandbox_object(
        db, row.reference, merchant="other-merchant", refunded=500, refund_id="rf-1",
        refund_amount=500,
    )  # fmt: skip
    body, headers = signed_event(settings, kind, obj)
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json() == {"received": False}
    assert WEBHOOKS.labels("sandbox", "rejected:foreign")._value.get() == rejected + 1
    assert await _stored(db) == stored
    assert await _refunds(db) == []
    after = await order_row(db, order["id"])
    assert (after.state, after.refunded_amount, after.attention) == ("fulfilled", 0, None)
    await assert_ledger_balanced(db)


async def test_the_same_refund_naming_our_merchant_is_recorded(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The control: the very same notification, naming our merchant, is a refund made at the
    provider (recorded, flagged `provider_refund`)."""
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    row = await order_row(db, order["id"])
    obj = await sandbox_object(db, row.reference, refunded=500, refund_id="rf-1", refund_amount=500)
    body, headers = signed_event(settings, "refund.succeeded", obj)
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text
    [refund] = await _refunds(db)
    assert (refund.state, refund.amount, refund.requested_by) == (
        "succeeded", 500, "provider:sandbox"
    )  # fmt: skip
    assert (await order_row(db, order["id"])).attention == "provider_refund"


async def _pending_in_backup(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, **sandbox: Any
) -> tuple[Any, Refund]:
    """A credited order and a refund of 500 asked for two days ago, still pending: the books as
    a backup then has them. `sandbox`: what the sandbox (the provider) has since."""
    from simcharge.auth.apikeys import create_api_key

    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    await run_worker(app, db, settings)  # the receipt, the payment's webhooks
    issued = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    r = await client.post(
        f"/api/v1/admin/orders/{order['id']}/refunds",
        headers={"Authorization": f"Bearer {issued.token}", **idem()},
        json={"amount": 500, "reason": "unused"},
    )
    assert r.status_code == 202, r.text
    [refund] = await _refunds(db)
    row = await order_row(db, order["id"])

    async def restore(s: Any) -> None:
        asked = utcnow() - timedelta(days=2)
        await s.execute(update(Refund).where(Refund.id == refund.id).values(created_at=asked))
        if sandbox:
            await s.execute(
                update(SandboxPayment)
                .where(SandboxPayment.reference == row.reference)
                .values(**sandbox)
            )

    await db.run(restore)
    return row, refund


async def _sandbox_refunded(db: Database, reference: str) -> int:
    async with db.read() as s:
        found = await s.execute(
            select(SandboxPayment.refunded).where(SandboxPayment.reference == reference)
        )
        return int(found.scalar_one())


async def test_a_refund_the_sandbox_already_made_is_adopted_not_made_twice(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The sandbox made it before the crash, under our refund's reference: adopted, the
    sandbox not asked to refund again."""
    payer_row, refund = await _pending_in_backup(app, client, db, settings)

    async def made(s: Any) -> None:
        await s.execute(
            update(SandboxPayment)
            .where(SandboxPayment.reference == payer_row.reference)
            .values(refunded=500, refunds={refund.reference: 500})
        )

    await db.run(made)
    await run_worker(app, db, settings)
    [row] = await _refunds(db)
    assert (row.state, row.provider_refund_id) == ("succeeded", f"rf_{refund.reference}")
    assert await _sandbox_refunded(db, payer_row.reference) == 500  # not 1000
    order = await order_row(db, payer_row.id)
    assert (order.state, order.refunded_amount, order.attention) == (
        "partially_refunded", 500, None
    )  # fmt: skip
    await assert_ledger_balanced(db)


async def test_a_refund_made_after_the_backup_holds_ours(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The sandbox refunded 700 by a refund the restored books do not know: ours is not sent,
    failed, and the order flagged for finance."""
    order_row_, refund = await _pending_in_backup(
        app, client, db, settings, refunded=700, refunds={"rf-after-backup": 700}
    )
    await run_worker(app, db, settings)
    [row] = await _refunds(db)
    assert row.state == "failed" and HELD in (row.error or "")
    assert "7.00" in (row.error or "")
    assert await _sandbox_refunded(db, order_row_.reference) == 700  # ours never made
    order = await order_row(db, order_row_.id)
    assert (order.state, order.refunded_amount) == ("fulfilled", 0)
    assert order.attention == "refund_failed"
    assert f"refund {refund.reference} not sent" in (order.attention_note or "")
    await assert_ledger_balanced(db)
