"""A webhook's rows are stamped with the time of the transaction that commits them (round 17).

What was wrong: `receive_notification` read the clock once, before verifying the notification
(PayPal's may fetch a certificate over the network), and stamped every attempt `Database.run`
made with it (up to 8, after a deadlock or a serialization failure). The order's `fulfilled_at`,
the ledger's `created_at` and the event's times could then be well before the commit: a top-up
committed just after midnight was dated the day before, after that day's report had run
without it. Now each attempt reads the clock itself; so does the fallback that keeps an event
whose processing failed.

Real databases (both, each test on a database of its own: a bound one does not retry), the
sandbox provider and its signed webhooks; the failures are injected into the transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger.models import LedgerTransfer
from simcharge.metrics import DB_RETRIES
from simcharge.orders.models import Order, ProviderEvent
from simcharge.payments import webhooks
from tests.factories import load_demo_catalog
from tests.orders.helpers import new_payer, pay_at_sandbox, place, sandbox_object, signed_event

STEP = timedelta(seconds=2)
"""How long the failed attempt took: from just before midnight to just after it."""


class _SerializationFailure(Exception):
    """What the driver raises when PostgreSQL refuses a transaction (SQLSTATE 40001)."""

    sqlstate = "40001"


def _utc(at: datetime | None) -> datetime | None:
    """A stored time, aware (SQLite gives it back naive, in UTC)."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def _retries(reason: str) -> float:
    return sum(
        s.value
        for m in DB_RETRIES.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("error") == reason
    )


@pytest.fixture
async def shop(fresh_db: Database, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    await fresh_db.run(load_demo_catalog)
    app = create_app(settings, db=fresh_db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


def _before_midnight() -> datetime:
    """The last seconds of today (UTC): near the real time, so nothing else finds it odd."""
    today = utcnow().date()
    return datetime(today.year, today.month, today.day, 23, 59, 59, tzinfo=UTC)


async def _paid_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> tuple[dict[str, Any], bytes, dict[str, str]]:
    """An order paid at the sandbox, and its signed `payment.succeeded` notification."""
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    r = await pay_at_sandbox(client, settings, order)
    assert r.status_code in (200, 303), r.text
    obj = await sandbox_object(db, order["reference"])
    body, headers = signed_event(
        settings, "payment.succeeded", obj, at=int(utcnow().timestamp())
    )
    return order, body, headers


def _fail_first_attempt(monkeypatch: pytest.MonkeyPatch, failure: Exception) -> list[datetime]:
    """The first attempt applies the status, takes `STEP` and then fails with `failure`; each
    attempt's time is kept."""
    real = webhooks.apply_status
    attempts: list[datetime] = []

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        attempts.append(kwargs["now"])
        outcome = await real(*args, **kwargs)
        if len(attempts) == 1:
            clock.advance(seconds=STEP.total_seconds())
            raise failure
        return outcome

    monkeypatch.setattr(webhooks, "apply_status", failing_once)
    return attempts


async def _stamps(db: Database, order_id: str, event_id: str) -> dict[str, Any]:
    async with db.read() as s:
        order = await s.get(Order, uuid.UUID(order_id))
        assert order is not None
        event = (
            await s.execute(select(ProviderEvent).where(ProviderEvent.event_id == event_id))
        ).scalar_one()
        transfers = (
            await s.execute(
                select(LedgerTransfer.created_at).where(
                    LedgerTransfer.reference == f"order:{order_id}"
                )
            )
        ).scalars().all()
    return {
        "state": order.state,
        "fulfilled_at": _utc(order.fulfilled_at),
        "received_at": _utc(event.received_at),
        "processed_at": _utc(event.processed_at),
        "outcome": event.outcome,
        "transfers": [_utc(t) for t in transfers],
    }


async def test_a_webhook_retried_after_a_serialization_failure_is_stamped_when_it_commits(
    shop: httpx.AsyncClient,
    fresh_db: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the retried attempt stamped the top-up with the time read before verifying —
    23:59:59, committed at 00:00:01 — so the day's report, run at midnight, never saw it, and
    the next day's did not either. Now: every row is dated 00:00:01, the next day."""
    start = _before_midnight()
    clock.freeze(start)
    order, body, headers = await _paid_order(shop, fresh_db, settings)
    failure = DBAPIError("COMMIT", None, _SerializationFailure("could not serialize access"))
    attempts = _fail_first_attempt(monkeypatch, failure)
    retried = _retries("serialization_failure")

    r = await shop.post("/api/v1/webhooks/sandbox", content=body, headers=headers)

    assert r.status_code == 200, r.text
    assert r.headers["simcharge-outcome"] == "fulfilled"
    committed = start + STEP
    assert attempts == [start, committed]  # each attempt read the clock itself
    assert _retries("serialization_failure") == retried + 1
    stamps = await _stamps(fresh_db, order["id"], str(json.loads(body)["id"]))
    assert stamps["state"] == "fulfilled"
    assert stamps["fulfilled_at"] == committed
    assert (stamps["received_at"], stamps["processed_at"]) == (committed, committed)
    assert stamps["outcome"] == "fulfilled"
    assert stamps["transfers"], "the top-up was posted"
    assert set(stamps["transfers"]) == {committed}  # once, dated the next day
    assert committed.date() == start.date() + timedelta(days=1)


async def test_an_event_whose_processing_failed_is_kept_with_the_time_it_was_stored(
    shop: httpx.AsyncClient,
    fresh_db: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Applying fails for good (not a race): the event is kept unprocessed, received at the
    time of the transaction that stored it — the reconciliation job applies it 30 seconds after
    that — and nothing of the failed attempt is left."""
    start = _before_midnight()
    clock.freeze(start)
    order, body, headers = await _paid_order(shop, fresh_db, settings)
    attempts = _fail_first_attempt(monkeypatch, RuntimeError("applying failed"))
    retried = _retries("serialization_failure")

    r = await shop.post("/api/v1/webhooks/sandbox", content=body, headers=headers)

    assert r.status_code == 200, r.text
    assert r.headers["simcharge-outcome"] == "stored"
    assert attempts == [start]  # not a race: not run again
    assert _retries("serialization_failure") == retried
    stamps = await _stamps(fresh_db, order["id"], str(json.loads(body)["id"]))
    assert stamps["state"] == "pending"
    assert stamps["fulfilled_at"] is None and stamps["transfers"] == []
    assert (stamps["received_at"], stamps["processed_at"]) == (start + STEP, None)
    assert stamps["outcome"] is None
