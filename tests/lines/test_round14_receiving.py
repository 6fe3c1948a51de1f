"""Which lines may receive a transfer (credit, minutes, data or SMS another line gives), on
SQLite and PostgreSQL: an active line, and a line in grace — which keeps the gift as it keeps a
top-up's credit, still in grace (a gift gives no validity: only a paid top-up does). A frozen
line is refused, as a terminated one is (`409 line-not-in-service`, field `to` in the
customer's API, `receiverLogicalResource` in TMF654, the portal's `to`): it is on its way to
termination, which would forfeit the gift. Nothing moves on a refusal, the giver pays no fee."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import credit_wallet, line_balances
from tests.orders.helpers import idem, new_payer
from tests.portal.helpers import new_customer, sign_in
from tests.portal.test_round13_pages import page_of
from tests.tmf654.helpers import BASE, api_key, new_holder, totals, written

ALL = ("balance:read", "balance:write", "balance:adjust")


async def _state(db: Database, line: Line) -> tuple[str, Any]:
    async with db.read() as s:
        row = await s.get(Line, line.id)
        assert row is not None
        return row.state, row.validity_end


async def test_a_line_in_grace_receives_and_stays_in_grace(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_payer(db, settings)
    await db.run(lambda s: credit_wallet(s, me.line, 2000, source=f"t:{me.line.id}"))
    grace = await new_payer(db, settings, line_state=LineState.grace)
    before = await _state(db, grace.line)
    r = await client.post(f"/api/v1/me/lines/{me.line.id}/transfers", headers={
        **me.auth, **idem()}, json={"to": grace.line.msisdn, "usage_type": "monetary",
                                    "amount": 500})
    assert r.status_code == 201, r.text
    async with db.read() as s:
        theirs = await line_balances(s, grace.line)
    assert theirs.wallet.available == 500
    assert await _state(db, grace.line) == before  # no validity, no change of state


@pytest.mark.parametrize("state", [LineState.frozen, LineState.terminated])
async def test_a_frozen_or_terminated_line_is_refused_and_nothing_moves(
    client: httpx.AsyncClient, db: Database, settings: Settings, state: LineState
) -> None:
    me = await new_payer(db, settings)
    await db.run(lambda s: credit_wallet(s, me.line, 2000, source=f"t:{me.line.id}"))
    other = await new_payer(db, settings, line_state=state)
    before = await written(db)
    r = await client.post(f"/api/v1/me/lines/{me.line.id}/transfers", headers={
        **me.auth, **idem()}, json={"to": other.line.msisdn, "usage_type": "monetary",
                                    "amount": 500})
    assert r.status_code == 409, r.text
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert body["type"].endswith("/line-not-in-service") and body["field"] == "to"
    assert body["detail"] == "The receiving line is not in service."
    assert await written(db) == before
    assert await totals(db, me.line.wallet_account_id) == (2000, 0)
    assert (await _state(db, other.line))[0] == state


async def test_tmf654_refuses_a_frozen_receiver_by_its_field(
    client: httpx.AsyncClient, db: Database
) -> None:
    giver = await new_holder(db)
    frozen = await new_holder(db, wallet=0, state=LineState.frozen)
    key = await api_key(db, *ALL)
    before = await written(db)
    r = await client.post(f"{BASE}/transferBalance", headers=key, json={
        "reason": "gift", "channel": {"id": "crm", "name": "crm"},
        "logicalResource": [{"id": giver.line.msisdn}],
        "receiverLogicalResource": {"id": frozen.line.msisdn},
        "amount": {"amount": 10, "units": "MB"}, "usageType": "data",
        "bucket": {"id": str(giver.data_bucket)}, "receiverBucket": {"id": "new"},
        "receiverBucketUsageType": "data"})
    assert r.status_code == 409, r.text
    assert r.json()["type"].endswith("/line-not-in-service")
    assert r.json()["field"] == "receiverLogicalResource"
    assert await written(db) == before


async def test_the_portal_says_it_beside_the_number(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    frozen = await new_customer(db, settings, with_units=False)

    async def freeze(s: AsyncSession) -> None:
        line = await s.get(Line, frozen.line.id)
        assert line is not None
        line.state = LineState.frozen

    await db.run(freeze)
    sign_in(client, me)
    r = await client.get(page_of(me.line.id) + "/review", params={
        "to": frozen.line.msisdn, "what": "monetary", "amount": "2"})
    assert r.status_code == 409
    assert '<p class="error" id="e-to">The receiving line is not in service.</p>' in r.text
    async with db.read() as s:
        assert (await line_balances(s, frozen.line)).wallet.available == 0
