"""A top-up brings a frozen line back by the lifecycle policy of the application that credits
it — the settings it was built with, never the process's own (`get_settings()`): a paid order
(webhook, "check now", a stored event applied later) and a TMF654 `topupBalance` alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Line, LineState
from tests.orders.helpers import (
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    sandbox_object,
    signed_event,
)
from tests.tmf654.helpers import BASE, api_key, new_holder


@asynccontextmanager
async def _client(settings: Settings, db: Database, rule: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"lifecycle_frozen_reactivation": rule}),
                     db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        yield client


async def _state(db: Database, line: Line) -> str:
    async with db.read() as s:
        found = await s.get(Line, line.id)
        assert found is not None
        return found.state


async def _paid_by_webhook(client: httpx.AsyncClient, db: Database, settings: Settings) -> Line:
    payer = await new_payer(db, settings, line_state=LineState.frozen)
    order = await place(client, payer, plan="traveller-20")
    await pay_at_sandbox(client, settings, order)
    row = await order_row(db, order["id"])
    body, headers = signed_event(settings, "payment.succeeded",
                                 await sandbox_object(db, row.reference))
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert (await order_row(db, order["id"])).state == "fulfilled"
    return payer.line


async def _paid_by_check(client: httpx.AsyncClient, db: Database, settings: Settings) -> Line:
    payer = await new_payer(db, settings, line_state=LineState.frozen)
    order = await place(client, payer, plan="traveller-20")
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return payer.line


async def _tmf654_topup(client: httpx.AsyncClient, db: Database, settings: Settings) -> Line:
    holder = await new_holder(db, state=LineState.frozen)
    key = await api_key(db, "balance:write")
    r = await client.post(f"{BASE}/topupBalance", headers=key, json={
        "amount": {"amount": 5, "units": "USD"}, "usageType": "monetary",
        "bucket": {"id": str(holder.line.wallet_account_id)},
        "partyAccount": {"id": str(holder.account_id)}})
    assert r.status_code == 201, r.text
    return holder.line


Path = Callable[[httpx.AsyncClient, Database, Settings], Awaitable[Line]]


@pytest.mark.parametrize("credit", [_paid_by_webhook, _paid_by_check, _tmf654_topup],
                         ids=["webhook", "check", "tmf654"])
@pytest.mark.parametrize(("rule", "after"), [("support", "frozen"), ("topup", "active")])
async def test_a_frozen_line_comes_back_by_the_applications_own_policy(
    db: Database, settings: Settings, credit: Path, rule: str, after: str, monkeypatch: Any
) -> None:
    # The process's own settings (`get_settings()`, from the environment) say the opposite of
    # the application's: whichever is read shows.
    from simcharge.config import get_settings

    monkeypatch.setenv("SIMCHARGE_LIFECYCLE_FROZEN_REACTIVATION",
                       "topup" if rule == "support" else "support")
    get_settings.cache_clear()
    try:
        async with _client(settings, db, rule) as client:
            line = await credit(client, db, settings)
    finally:
        get_settings.cache_clear()
    assert await _state(db, line) == after
