"""A transfer's amount must be a JSON integer (review round 11): `true` was read as 1 (a cent, or a
minute, given away), `"5"` and `5.0` as 5. Now each is a 422 naming `amount`, nothing given."""

from __future__ import annotations

import httpx

from simcharge.config import Settings
from simcharge.db import Database
from tests.orders.helpers import idem, new_payer
from tests.tmf654.helpers import totals
from tests.tmf654.test_customer_transfers import funded


async def test_a_transfer_amount_must_be_a_json_integer(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me, friend = await funded(db, settings), await new_payer(db, settings)
    url = f"/api/v1/me/lines/{me.line.id}/transfers"
    for amount in (True, "500", 500.0, "1e3"):
        body = {"to": friend.line.msisdn, "usage_type": "monetary", "amount": amount}
        r = await client.post(url, json=body, headers={**me.auth, **idem()})
        assert r.status_code == 422, (amount, r.text)
        problem = r.json()
        assert problem["type"].endswith("/validation-error"), problem
        assert [e["field"] for e in problem["errors"]] == ["amount"], problem
    assert await totals(db, me.line.wallet_account_id) == (2000, 0)
    assert await totals(db, friend.line.wallet_account_id) == (0, 0)
    r = await client.post(url, json={"to": friend.line.msisdn, "usage_type": "monetary",
                                     "amount": 500}, headers={**me.auth, **idem()})
    assert r.status_code == 201, r.text
