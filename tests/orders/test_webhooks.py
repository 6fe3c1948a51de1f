"""Notifications that must change nothing, and the ones that must be handled with care."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount
from simcharge.lines.models import Line, LineState
from simcharge.orders.models import Payment, ProviderEvent
from simcharge.payments.service import reconcile
from tests.orders.helpers import (
    assert_ledger_balanced,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    sandbox_object,
    signed_event,
    transfers_of,
)


async def _events(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(ProviderEvent))).scalar_one())


async def _balance(db: Database, key: str) -> int:
    """An operator account's balance, credits minus debits, over its shards."""
    async with db.read() as s:
        rows = (await s.execute(select(LedgerAccount).where(
            LedgerAccount.key.in_(chart.keys(key))))).scalars().all()
    return sum(a.credits_posted - a.debits_posted for a in rows)


async def _post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)


async def test_rejected_notifications_change_nothing(client: httpx.AsyncClient, db: Database,
                                                     settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    obj = await sandbox_object(db, row.reference)
    body, headers = signed_event(settings, "payment.succeeded", obj)

    unsigned = {"content-type": "application/json"}
    wrong_key = signed_event(settings, "payment.succeeded", obj, secret="not-the-secret")[1]
    tampered = body.replace(b'"amount": 2000', b'"amount": 1')
    assert tampered != body
    stale = signed_event(settings, "payment.succeeded", obj, at=int(time.time()) - 3600)
    future = signed_event(settings, "payment.succeeded", obj, at=int(time.time()) + 3600)
    garbage = {"content-type": "application/json", "sandbox-signature": "nonsense"}
    cases: list[tuple[bytes, dict[str, str]]] = [
        (body, unsigned), (body, wrong_key), (tampered, headers), stale, future, (body, garbage),
    ]
    for case_body, case_headers in cases:
        r = await _post(client, case_body, case_headers)
        assert r.status_code == 400, r.text
        assert r.json() == {"received": False}
        assert "simcharge-outcome" not in r.headers  # nothing said to whoever sent it
    assert await _events(db) == 0
    assert (await order_row(db, order["id"])).state == "pending"

    # A malformed body, correctly signed, is rejected too.
    from simcharge.payments.sandbox import sign

    junk = b'{"not": "an event"}'
    r = await _post(client, junk, {"sandbox-signature": sign(
        settings.sandbox_secret.get_secret_value(), junk)})
    assert r.status_code == 400
    assert await _events(db) == 0


async def test_a_notification_for_another_merchant_is_rejected(client: httpx.AsyncClient,
                                                               db: Database, settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    body, headers = signed_event(settings, "payment.succeeded",
                                 await sandbox_object(db, row.reference, merchant="someone-else"))
    r = await _post(client, body, headers)
    assert r.status_code == 400
    assert await _events(db) == 0
    assert (await order_row(db, order["id"])).state == "pending"


async def test_a_replayed_notification_is_acknowledged_and_ignored(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    body, headers = signed_event(settings, "payment.succeeded", await sandbox_object(db, row.reference))
    first = await _post(client, body, headers)
    replay = await _post(client, body, headers)
    assert first.status_code == replay.status_code == 200
    # The answer says what became of each: the bench counts only what was credited.
    assert first.headers["simcharge-outcome"] == "fulfilled"
    assert replay.headers["simcharge-outcome"] == "duplicate"
    assert await _events(db) == 1
    assert len(await transfers_of(db, f"order:{row.id}")) == 4


async def test_an_unknown_provider_is_not_found(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/webhooks/bitpay", content=b"{}")
    assert r.status_code == 404
    assert r.json()["type"].endswith("/unknown-provider")


async def test_a_wrong_amount_credits_nothing_and_is_flagged(client: httpx.AsyncClient,
                                                             db: Database, settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    for override, paid in (({"amount": 1999}, (1999, "USD")), ({"currency": "CNY"}, (2000, "CNY"))):
        other = await place(client, payer)
        other_row = await order_row(db, other["id"])
        body, headers = signed_event(settings, "payment.succeeded",
                                     await sandbox_object(db, other_row.reference, **override))
        r = await _post(client, body, headers)
        assert r.status_code == 200 and r.headers["simcharge-outcome"] == "flagged"
        flagged = await order_row(db, other["id"])
        assert flagged.state == "paid"
        assert flagged.attention == "amount_mismatch"
        assert flagged.receipt_number is None
        # Nothing credited; the money taken is in the ledger, held for the payer (unapplied).
        [held] = await transfers_of(db, f"order:{flagged.id}")
        assert (held.code, held.amount, held.unit) == ("unapplied", *paid)
        assert await _balance(db, f"unapplied:{paid[1]}") == paid[0]
    assert (await order_row(db, row.id)).state == "pending"
    await assert_ledger_balanced(db)


async def test_a_payment_after_cancellation_is_credited_and_flagged(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    row = await order_row(db, order["id"])
    # The provider took the money anyway (a race at the provider): never dropped.
    body, headers = signed_event(settings, "payment.succeeded", await sandbox_object(db, row.reference))
    assert (await _post(client, body, headers)).status_code == 200
    late = await order_row(db, order["id"])
    assert late.state == "fulfilled"
    assert late.attention == "late_success"
    assert len(await transfers_of(db, f"order:{late.id}")) == 4
    await assert_ledger_balanced(db)


async def test_a_payment_after_expiry_is_credited_and_flagged(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    clock.freeze(row.expires_at + timedelta(seconds=1))
    await reconcile(db, app.state.providers)
    assert (await order_row(db, order["id"])).state == "expired"
    # The provider took the money at the last moment; its webhook comes after the expiry.
    body, headers = signed_event(settings, "payment.succeeded",
                                 await sandbox_object(db, row.reference),
                                 at=int(utcnow().timestamp()))
    r = await _post(client, body, headers)
    assert r.status_code == 200 and r.headers["simcharge-outcome"] == "fulfilled"
    late = await order_row(db, order["id"])
    assert (late.state, late.attention) == ("fulfilled", "late_success")
    assert len(await transfers_of(db, f"order:{late.id}")) == 4
    await assert_ledger_balanced(db)


async def test_a_payment_for_a_terminated_line_is_flagged(client: httpx.AsyncClient,
                                                          db: Database, settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    await db.run(lambda s: s.execute(update(Line).where(Line.id == payer.line.id)
                                     .values(state=LineState.terminated.value)))
    row = await order_row(db, order["id"])
    body, headers = signed_event(settings, "payment.succeeded", await sandbox_object(db, row.reference))
    assert (await _post(client, body, headers)).status_code == 200
    flagged = await order_row(db, order["id"])
    assert (flagged.state, flagged.attention) == ("paid", "line_unavailable")
    assert [t.code for t in await transfers_of(db, f"order:{flagged.id}")] == ["unapplied"]


async def test_events_whose_processing_failed_are_applied_by_reconciliation(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    await pay_at_sandbox(client, settings, order)
    obj = await sandbox_object(db, row.reference)
    from simcharge.kit.ids import uuid7
    from simcharge.payments.codec import status_to_json
    from simcharge.payments.providers import PaymentState, PaymentStatus

    status = PaymentStatus(state=PaymentState.succeeded, reference=row.reference,
                           provider_ref=obj["id"], payment_id=obj["id"], amount=row.total,
                           currency=row.currency, merchant=obj["merchant"], paid_at=utcnow(), raw={})

    async def stored_but_unprocessed(s: Any) -> None:
        s.add(ProviderEvent(id=uuid7(), provider="sandbox", event_id="evt_crashed",
                            event_type="payment.succeeded", order_id=row.id, payload={},
                            status=status_to_json(status), received_at=utcnow()))

    await db.run(stored_but_unprocessed)
    # Not due for a check: only the stored event can settle it.
    await db.run(lambda s: s.execute(update(Payment).where(Payment.order_id == row.id)
                                     .values(next_check_at=utcnow() + timedelta(days=1))))
    clock.freeze(utcnow() + timedelta(minutes=2))
    await reconcile(db, app.state.providers)
    assert (await order_row(db, order["id"])).state == "fulfilled"
    async with db.read() as s:
        event = (await s.execute(select(ProviderEvent).where(
            ProviderEvent.event_id == "evt_crashed"))).scalar_one()
    assert event.processed_at is not None and event.outcome == "fulfilled"


async def test_a_currency_named_in_lower_case_is_the_same_currency(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A provider's "usd" is USD: the order is credited, not flagged as paid in another currency,
    and what was paid is recorded in upper case (reports group by it)."""
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    obj = await sandbox_object(db, row.reference, currency=row.currency.lower())
    r = await _post(client, *signed_event(settings, "payment.succeeded", obj))
    assert r.status_code == 200, r.text
    credited = await order_row(db, order["id"])
    assert (credited.state, credited.paid_currency) == ("fulfilled", row.currency)
