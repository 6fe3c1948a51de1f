"""`/metrics` shows the business: orders by state and method, fulfilment latency, webhook
failures, charging requests, and the outbox's backlog."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from simcharge import metrics
from simcharge.config import Settings
from simcharge.db import Database
from tests.orders.helpers import new_payer, order_row, place, sandbox_object, signed_event


@pytest.fixture(autouse=True)
def _fresh_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scrape reads the database (not the 5-second cache)."""
    monkeypatch.setattr(metrics, "LEVELS_MAX_AGE", 0.0)


def sample(body: str, name: str, **labels: str) -> float:
    """The value of one sample in the exposition text."""
    for line in body.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        found = re.fullmatch(r"([a-z_]+)(\{.*\})? (\S+)", line)
        if not found or found.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if have == labels:
            return float(found.group(3))
    raise AssertionError(f"no sample {name}{labels}")


async def test_metrics_show_orders_fulfilment_webhooks_and_jobs(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    body = (await client.get("/metrics")).text
    fulfilled_before = sample(
        body, "simcharge_order_fulfilment_delay_seconds_count", provider="sandbox"
    ) if 'simcharge_order_fulfilment_delay_seconds_count{provider="sandbox"}' in body else 0.0
    failures_before = sample(
        body, "simcharge_webhook_failures_total", provider="sandbox", reason="bad-signature"
    ) if 'reason="bad-signature",provider="sandbox"' in body or (
        'provider="sandbox",reason="bad-signature"' in body) else 0.0

    paid = await place(client, payer)
    waiting = await place(client, payer, plan="starter-10")
    row = await order_row(db, paid["id"])
    event, headers = signed_event(
        settings, "payment.succeeded", await sandbox_object(db, row.reference)
    )
    r = await client.post("/api/v1/webhooks/sandbox", content=event, headers=headers)
    assert r.status_code == 200, r.text
    forged, forged_headers = signed_event(
        settings, "payment.succeeded", await sandbox_object(db, row.reference), secret="wrong"
    )
    assert (
        await client.post("/api/v1/webhooks/sandbox", content=forged, headers=forged_headers)
    ).status_code == 400

    r = await client.get("/metrics")
    assert r.status_code == 200
    body = r.text
    assert sample(body, "simcharge_orders_by_state", state="fulfilled", method="sandbox") == 1
    assert sample(body, "simcharge_orders_by_state", state="pending", method="sandbox") == 1
    assert waiting["state"] == "pending"
    assert (
        sample(body, "simcharge_order_fulfilment_delay_seconds_count", provider="sandbox")
        == fulfilled_before + 1
    )
    assert (
        sample(body, "simcharge_webhook_failures_total", provider="sandbox", reason="bad-signature")
        == failures_before + 1
    )
    # The credit enqueued the receipt and the notices: waiting for a worker.
    pending = sample(body, "simcharge_outbox_jobs", status="pending")
    assert pending >= 2
    assert sample(body, "simcharge_outbox_jobs_due") >= 2
    assert sample(body, "simcharge_outbox_jobs", status="dead") == 0
    assert sample(body, "simcharge_outbox_oldest_due_seconds") >= 0
    assert "# TYPE simcharge_charging_requests_total counter" in body


async def test_metrics_still_answer_when_the_database_does_not(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(db: Database, **_: Any) -> None:
        raise ConnectionError("database down")

    monkeypatch.setattr("simcharge.api.system.refresh_levels", broken)
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert "simcharge_http_requests_total" in r.text
