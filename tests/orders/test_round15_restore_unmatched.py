"""A payment taken for a reference we do not know is `unmatched`, never `ignored` (round 15).

What was wrong: after restoring a backup, an order placed after it is not in the database. Its
provider's paid/succeeded notification found no order and was stored as `ignored`, with no log
line: the provider was answered 200 and stopped delivering it, the payer's money was taken and
nothing was credited, and no one saw it. Only refund and dispute news counted as `unmatched`.
Now a success naming a reference no order has is stored processed with the outcome
`unmatched`, logged `payments.unmatched_event` (provider, event id, the reference and the
provider's payment id — no personal data) and counted as
`simcharge_webhooks_total{outcome="unmatched"}`; the answer's `Simcharge-Outcome` says so.
A success naming another provider's order, or naming no reference at all, stays `ignored`.

Real signatures: the sandbox's (its secret) and Stripe's (`Stripe-Signature`, a secret made at
test time); nothing at Stripe is called.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.metrics import WEBHOOKS
from simcharge.orders.models import ProviderEvent
from simcharge.payments import webhooks
from tests.orders.helpers import assert_ledger_balanced, signed_event
from tests.payments.test_provider_doc_edges import (
    STRIPE_WEBHOOK_SECRET,
    _stripe_event,
    _stripe_session,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Stripe configured beside the sandbox (its webhook secret made at test time)."""
    return settings.model_copy(
        update={
            "sandbox_stands_in": False,
            "stripe_secret_key": SecretStr("sk_test_" + uuid.uuid4().hex[:24]),
            "stripe_webhook_secret": SecretStr(STRIPE_WEBHOOK_SECRET),
        }
    )


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    """Stripe's API: nothing may be called (an unmatched notification asks no one)."""
    with respx.mock(assert_all_called=False) as router:
        yield router


class Recorder:
    """Stands in for the module's structlog logger (structlog caches a module's bound logger on
    first use, so `capture_logs` would not see it)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **kw: Any) -> None:
            self.events.append((level, event, kw))

        return record


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(webhooks, "log", recorder)
    return recorder


async def _stored(db: Database, provider: str, event_id: str) -> ProviderEvent:
    async with db.read() as s:
        return (
            await s.execute(
                select(ProviderEvent).where(
                    ProviderEvent.provider == provider, ProviderEvent.event_id == event_id
                )
            )
        ).scalar_one()


def _sandbox_payment(reference: str, **change: Any) -> dict[str, Any]:
    """A sandbox payment object as the sandbox signs it (`tests.orders.helpers.sandbox_object`)
    for an order this database never had."""
    return {
        "id": f"sbx_{uuid.uuid4().hex[:16]}", "reference": reference, "amount": 2000,
        "currency": "USD", "state": "paid", "refunded": 0, "merchant": "sandbox-merchant",
        "paid_at": utcnow().isoformat(), **change,
    }  # fmt: skip


async def test_a_sandbox_success_for_an_unknown_reference_is_unmatched_logged_and_counted(
    client: httpx.AsyncClient, db: Database, settings: Settings, logs: Recorder
) -> None:
    reference = f"T{uuid.uuid4().hex[:12].upper()}"
    obj = _sandbox_payment(reference)
    counted = WEBHOOKS.labels("sandbox", "unmatched")
    before = counted._value.get()
    body, headers = signed_event(settings, "payment.succeeded", obj)
    event_id = json.loads(body)["id"]

    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["simcharge-outcome"] == "unmatched"
    assert counted._value.get() == before + 1

    event = await _stored(db, "sandbox", event_id)
    assert (event.outcome, event.order_id) == ("unmatched", None)
    assert event.processed_at is not None  # settled by finance, not tried again for nothing
    assert event.status is not None and event.status["reference"] == reference

    warned = [(lvl, kw) for lvl, name, kw in logs.events if name == "payments.unmatched_event"]
    assert warned == [("warning", {
        "provider": "sandbox", "event_id": event_id, "reference": reference,
        "provider_ref": obj["id"],
    })]  # fmt: skip

    # Delivered again: a duplicate, answered, nothing more logged or stored.
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["simcharge-outcome"] == "duplicate"
    assert len([e for e in logs.events if e[1] == "payments.unmatched_event"]) == 1
    assert counted._value.get() == before + 1
    await assert_ledger_balanced(db)


async def test_a_stripe_completed_checkout_for_an_unknown_reference_is_unmatched(
    client: httpx.AsyncClient, db: Database, settings: Settings, logs: Recorder,
    mock: respx.MockRouter,
) -> None:
    reference = f"T{uuid.uuid4().hex[:12].upper()}"
    intent = f"pi_3{uuid.uuid4().hex[:20]}"
    paid = _stripe_session(
        reference, 2000, "USD", status="complete", payment_status="paid", payment_intent=intent
    )
    body, headers = _stripe_event("checkout.session.completed", paid)
    event_id = json.loads(body)["id"]
    counted = WEBHOOKS.labels("stripe", "unmatched")
    before = counted._value.get()

    r = await client.post("/api/v1/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["simcharge-outcome"] == "unmatched"
    assert counted._value.get() == before + 1
    event = await _stored(db, "stripe", event_id)
    assert (event.outcome, event.order_id) == ("unmatched", None)
    [(level, kw)] = [(lvl, kw) for lvl, n, kw in logs.events if n == "payments.unmatched_event"]
    assert level == "warning"
    assert kw["provider"] == "stripe" and kw["event_id"] == event_id
    assert kw["reference"] == reference and kw["provider_ref"] in (paid["id"], intent)
    assert set(kw) == {"provider", "event_id", "reference", "provider_ref"}  # no personal data
    assert not mock.calls


async def test_a_stripe_checkout_not_paid_for_an_unknown_reference_stays_ignored(
    client: httpx.AsyncClient, db: Database, settings: Settings, logs: Recorder,
    mock: respx.MockRouter,
) -> None:
    """No money taken (an unpaid completion: a delayed payment method): nothing to settle."""
    reference = f"T{uuid.uuid4().hex[:12].upper()}"
    unpaid = _stripe_session(reference, 2000, "USD", status="complete", payment_status="unpaid")
    body, headers = _stripe_event("checkout.session.completed", unpaid)
    r = await client.post("/api/v1/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["simcharge-outcome"] == "ignored"
    assert not [e for e in logs.events if e[1] == "payments.unmatched_event"]


async def test_a_failed_payment_or_a_success_naming_no_reference_stays_ignored(
    client: httpx.AsyncClient, db: Database, settings: Settings, logs: Recorder
) -> None:
    """A failure took no money; a success that names no reference at all is no payment of
    ours (another shop's on a shared account): both `ignored`, not put before finance."""
    failed = _sandbox_payment(f"T{uuid.uuid4().hex[:12].upper()}", state="failed")
    nameless = _sandbox_payment("", state="paid")
    for kind, obj in (("payment.failed", failed), ("payment.succeeded", nameless)):
        body, headers = signed_event(settings, kind, obj)
        r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["simcharge-outcome"] == "ignored", kind
    assert not [e for e in logs.events if e[1] == "payments.unmatched_event"]


async def test_a_badly_signed_success_for_an_unknown_reference_is_refused_not_stored(
    client: httpx.AsyncClient, db: Database, settings: Settings, logs: Recorder
) -> None:
    obj = _sandbox_payment(f"T{uuid.uuid4().hex[:12].upper()}")
    body, headers = signed_event(settings, "payment.succeeded", obj, secret="not-the-secret")
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code >= 400
    async with db.read() as s:
        assert (await s.execute(select(ProviderEvent))).scalars().all() == []
    assert not [e for e in logs.events if e[1] == "payments.unmatched_event"]


async def test_refund_news_given_up_after_a_day_is_logged_not_failed(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, logs: Recorder
) -> None:
    """A refund whose payment never became known is given up as `unmatched` after
    `UNMATCHED_PATIENCE`. Its log line passed `event=` to structlog, whose first argument is
    the event's name: a `TypeError`, so processing failed at every reconciliation and the event
    was never settled. Now it is logged (`event_id`) and marked processed."""
    clock.freeze(utcnow())
    obj = _sandbox_payment(f"T{uuid.uuid4().hex[:12].upper()}", refund_id="rf-gone",
                           refund_amount=500)
    body, headers = signed_event(settings, "refund.succeeded", obj)
    event_id = json.loads(body)["id"]
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["simcharge-outcome"] == "unmatched"
    event = await _stored(db, "sandbox", event_id)
    assert event.processed_at is None  # waits for its payment, a day
    assert not [e for e in logs.events if e[1] == "payments.unmatched_event"]

    clock.advance(seconds=int(webhooks.UNMATCHED_PATIENCE.total_seconds()) + 60)
    assert await webhooks.process_event(db, app.state.providers.lifecycle, event.id) == "unmatched"
    event = await _stored(db, "sandbox", event_id)
    assert (event.outcome, event.order_id) == ("unmatched", None)
    assert event.processed_at is not None
    assert [(lvl, kw) for lvl, n, kw in logs.events if n == "payments.unmatched_event"] == [
        ("warning", {"provider": "sandbox", "event_id": event_id})]
