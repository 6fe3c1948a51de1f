"""TMF654 transfers, eighth review round: each test states the requirement and what was wrong.

- `test_a_receiver_terminated_meanwhile_receives_nothing`: the receiver's state was read without
  a lock; a termination (the sweep: the line locked, its state set, its wallet forfeited) that
  committed while the transfer waited for the line let the money land on a terminated line,
  after its forfeit, where nothing could ever use it (PostgreSQL, two connections).
- `test_a_named_receiver_bucket_is_where_the_transfer_goes_or_refused`: `receiverBucket.id`
  (mandatory in `TransferBalance_Create`) was ignored: naming a third line's wallet, or an
  existing bucket, credited the receiver's wallet or a new bucket and answered 201 with another
  `receiverBucket` than the one asked for.
- `test_a_stated_transfer_cost_must_be_the_fee`: a `transferCost` the caller stated was ignored:
  a caller saying the transfer costs 0.00 was charged the fee (0.30) all the same.
- `test_a_transfer_shows_the_validity_it_gave_not_one_asked_for`: a `validFor` sent with a
  transfer was ignored (the receiver's bucket ends when the giver's does) yet echoed back as if
  applied; the end the receiver's new bucket really has was not shown.
- `test_the_customer_api_names_its_own_fields`: `/api/v1/me/lines/{id}/transfers` refused a
  transfer to oneself, to another currency or to a line out of service naming
  `receiverLogicalResource`, and a giver out of service naming `logicalResource`: TMF654's
  names, which that request does not have (its fields are `to` and the path's `line_id`).
- `test_a_transfer_naming_another_party_account_is_refused`: `transferBalance` passed over a
  `partyAccount` that does not own the giving line (topupBalance and reserveBalance refuse it),
  and a `receiver` party that does not own the receiving line: the money went to a line the
  caller took for another party's.
- `test_a_bucket_that_does_not_exist_is_not_taken_for_the_wallet`: a `bucket.id` naming no
  wallet or bucket (a typo, an id from elsewhere) was passed over and a money transfer,
  reservation or adjustment took the line's wallet instead; it is `bucket-not-found`.
- `test_the_portal_gives_at_the_fee_it_showed`: the review page showed the fee, "Give now" did
  not carry it; when the fee changed in between (new settings) the customer paid one they were
  never shown. `giving.give(fee=...)` now refuses a fee that is no longer the fee, the portal
  sends the one it showed, and a changed fee shows the review again with the fee now.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import ValidationFailed
from simcharge.lines.models import Bucket, LineState
from simcharge.lines.service import LineNotInService, credit_wallet
from simcharge.tmf654 import giving
from tests.orders.helpers import idem, new_payer
from tests.portal.helpers import new_customer, sign_in
from tests.tmf654.helpers import BASE, Holder, api_key, new_holder, totals, written

WAITING = text("SELECT count(*) FROM pg_stat_activity"
               " WHERE wait_event_type = 'Lock' AND datname = current_database()")


async def waiting(db: Database) -> None:
    """Until a transaction waits for a lock (a row's: `pg_locks` shows it as a wait for the
    holder's transaction id, not for the table)."""
    for _ in range(1000):
        async with db.read() as s:
            if (await s.execute(WAITING)).scalar_one() >= 1:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("no transaction came to wait for a lock")

ALL = ("balance:read", "balance:write", "balance:adjust")


def transfer_body(giver: Holder, receiver: Holder, usage: str, amount: dict[str, Any],
                  bucket: str) -> dict[str, Any]:
    return {"reason": "gift", "channel": {"id": "crm", "name": "crm"},
            "logicalResource": [{"id": giver.line.msisdn}],
            "receiverLogicalResource": {"id": receiver.line.msisdn},
            "amount": amount, "usageType": usage, "bucket": {"id": bucket},
            "receiverBucket": {"id": "new"}, "receiverBucketUsageType": usage}


@pytest.mark.postgres_only
@pytest.mark.parametrize("usage", ["monetary", "data"])
async def test_a_receiver_terminated_meanwhile_receives_nothing(
    fresh_db: Database, settings: Settings, usage: str
) -> None:
    giver = await new_holder(fresh_db)
    # In grace (which may receive; a frozen line is refused before any lock), then terminated.
    receiver = await new_holder(fresh_db, wallet=300, state=LineState.grace)
    gift = giving.Gift(to=receiver.line.msisdn, usage_type=usage,
                       amount=500 if usage == "monetary" else 100)
    assert giver.account_id is not None
    account_id = giver.account_id

    async def give() -> Any:
        return await fresh_db.run(lambda s: giving.give(
            s, settings, account_id=account_id, line_id=giver.line.id, gift=gift, key="k"))

    before = await written(fresh_db)
    async with fresh_db.engine.connect() as sweep:
        # As the lifecycle sweep terminates a line: locked FOR UPDATE, its state changed (its
        # wallet forfeited), not yet committed.
        await sweep.execute(text("SELECT id FROM lines WHERE id = :id FOR UPDATE"),
                            {"id": receiver.line.id})
        await sweep.execute(text("UPDATE lines SET state = 'terminated' WHERE id = :id"),
                            {"id": receiver.line.id})
        task = asyncio.ensure_future(give())
        await waiting(fresh_db)
        await sweep.commit()
    with pytest.raises(LineNotInService) as refused:
        await asyncio.wait_for(task, 30)
    assert refused.value.field == "receiverLogicalResource"
    assert await written(fresh_db) == before
    assert await totals(fresh_db, receiver.line.wallet_account_id) == (300, 0)


async def test_a_named_receiver_bucket_is_where_the_transfer_goes_or_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    giver, receiver, third = (await new_holder(db), await new_holder(db, wallet=0),
                              await new_holder(db, wallet=0))
    key = await api_key(db, *ALL)
    wallet = str(giver.line.wallet_account_id)
    money = transfer_body(giver, receiver, "monetary", {"amount": 5, "units": "USD"}, wallet)
    data = transfer_body(giver, receiver, "data", {"amount": 10, "units": "MB"},
                         str(giver.data_bucket))
    before = await written(db)
    for body, named in (
        (money, third.line.wallet_account_id),   # another line's wallet
        (money, receiver.data_bucket),           # the receiver's, but not its wallet
        (data, receiver.data_bucket),            # units go to a new bucket
        (data, third.data_bucket),
    ):
        r = await client.post(f"{BASE}/transferBalance", headers=key,
                              json={**body, "receiverBucket": {"id": str(named)}})
        assert r.status_code == 400, r.text
        assert (r.json()["code"], r.json()["field"]) == ("validation-error", "receiverBucket.id")
    assert await written(db) == before
    # The receiver's own wallet, named, is where money goes.
    r = await client.post(f"{BASE}/transferBalance", headers=key, json={
        **money, "receiverBucket": {"id": str(receiver.line.wallet_account_id)}})
    assert r.status_code == 201, r.text
    assert r.json()["receiverBucket"]["id"] == str(receiver.line.wallet_account_id)
    assert await totals(db, receiver.line.wallet_account_id) == (500, 0)
    assert await totals(db, third.line.wallet_account_id) == (0, 0)


async def test_a_stated_transfer_cost_must_be_the_fee(
    client: httpx.AsyncClient, db: Database
) -> None:
    giver, receiver = await new_holder(db), await new_holder(db, wallet=0)
    key = await api_key(db, *ALL)
    body = transfer_body(giver, receiver, "monetary", {"amount": 10, "units": "USD"},
                         str(giver.line.wallet_account_id))
    before = await written(db)
    for cost, field in (({"unit": "USD", "value": 0}, "transferCost.value"),
                        ({"unit": "USD", "value": 0.29}, "transferCost.value"),
                        ({"unit": "USD", "value": 0.301}, "transferCost.value"),
                        ({"unit": "EUR", "value": 0.3}, "transferCost.unit")):
        r = await client.post(f"{BASE}/transferBalance", headers=key,
                              json={**body, "transferCost": cost})
        assert r.status_code == 400, r.text
        assert (r.json()["code"], r.json()["field"]) == ("validation-error", field), r.json()
    assert await written(db) == before
    r = await client.post(f"{BASE}/transferBalance", headers=key,
                          json={**body, "transferCost": {"unit": "USD", "value": 0.3}})
    assert r.status_code == 201, r.text
    assert r.json()["transferCost"] == {"unit": "USD", "value": 0.3}
    assert await totals(db, giver.line.wallet_account_id) == (2000 - 1000 - 30, 0)


async def test_a_transfer_shows_the_validity_it_gave_not_one_asked_for(
    client: httpx.AsyncClient, db: Database
) -> None:
    giver, receiver = await new_holder(db), await new_holder(db, wallet=0)
    key = await api_key(db, *ALL)
    data = transfer_body(giver, receiver, "data", {"amount": 10, "units": "MB"},
                         str(giver.data_bucket))
    money = transfer_body(giver, receiver, "monetary", {"amount": 5, "units": "USD"},
                          str(giver.line.wallet_account_id))
    before = await written(db)
    for body in (data, money):
        r = await client.post(f"{BASE}/transferBalance", headers=key, json={
            **body, "validFor": {"endDateTime": "2030-01-01T00:00:00Z"}})
        assert r.status_code == 400, r.text
        assert (r.json()["code"], r.json()["field"]) == ("validation-error", "validFor")
    assert await written(db) == before
    r = await client.post(f"{BASE}/transferBalance", headers=key, json=data)
    assert r.status_code == 201, r.text
    async with db.read() as s:
        source = await s.get(Bucket, giver.data_bucket)
        given = await s.get(Bucket, uuid.UUID(r.json()["receiverBucket"]["id"]))
    assert source is not None and given is not None and source.expires_at is not None
    assert given.expires_at == source.expires_at
    shown = r.json()["validFor"]["endDateTime"]
    assert datetime.fromisoformat(shown.replace("Z", "+00:00")) == given.expires_at
    one = await client.get(f"{BASE}/transferBalance/{r.json()['id']}", headers=key)
    assert one.json()["validFor"] == r.json()["validFor"]
    r = await client.post(f"{BASE}/transferBalance", headers=key, json=money)
    assert r.status_code == 201, r.text
    assert "validFor" not in r.json()


async def test_the_customer_api_names_its_own_fields(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me, friend = await new_payer(db, settings), await new_payer(db, settings)
    euro = await new_payer(db, settings, currency="EUR")
    gone = await new_payer(db, settings, line_state=LineState.terminated)
    frozen = await new_payer(db, settings, line_state=LineState.frozen)
    for payer in (me, frozen):
        await db.run(lambda s, p=payer: credit_wallet(s, p.line, 2000, source=f"t:{p.line.id}"))
    before = await written(db)
    url = f"/api/v1/me/lines/{me.line.id}/transfers"
    for to, status, field in ((me.line.msisdn, 422, "to"),       # to myself
                              (euro.line.msisdn, 422, "to"),     # another currency
                              (gone.line.msisdn, 409, "to")):    # not in service
        r = await client.post(url, headers={**me.auth, **idem()},
                              json={"to": to, "usage_type": "monetary", "amount": 500})
        assert (r.status_code, r.json()["field"]) == (status, field), r.text
    r = await client.post(f"/api/v1/me/lines/{frozen.line.id}/transfers",
                          headers={**frozen.auth, **idem()},
                          json={"to": friend.line.msisdn, "usage_type": "monetary", "amount": 500})
    assert (r.status_code, r.json()["field"]) == (409, "line_id"), r.text
    assert r.json()["type"].endswith("/line-not-in-service")
    assert await written(db) == before


async def test_a_transfer_naming_another_party_account_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    giver, receiver, other = (await new_holder(db), await new_holder(db, wallet=0),
                              await new_holder(db, wallet=0))
    key = await api_key(db, *ALL)
    body = transfer_body(giver, receiver, "monetary", {"amount": 5, "units": "USD"},
                         str(giver.line.wallet_account_id))
    before = await written(db)
    r = await client.post(f"{BASE}/transferBalance", headers=key,
                          json={**body, "partyAccount": {"id": str(other.account_id)}})
    assert r.status_code == 400, r.text
    assert (r.json()["code"], r.json()["field"]) == ("validation-error", "partyAccount.id")
    assert await written(db) == before
    r = await client.post(f"{BASE}/transferBalance", headers=key, json={
        **body, "receiver": {"id": str(other.account_id), "role": "receiver", "name": "x",
                     "@referredType": "Individual"}})
    assert r.status_code == 400, r.text
    assert (r.json()["code"], r.json()["field"]) == ("validation-error", "receiver.id")
    assert await written(db) == before
    r = await client.post(f"{BASE}/transferBalance", headers=key, json={
        **body, "partyAccount": {"id": str(giver.account_id)},
        "receiver": {"id": str(receiver.account_id), "role": "receiver", "name": "x",
                     "@referredType": "Individual"}})
    assert r.status_code == 201, r.text


async def test_a_bucket_that_does_not_exist_is_not_taken_for_the_wallet(
    client: httpx.AsyncClient, db: Database
) -> None:
    h, receiver = await new_holder(db), await new_holder(db, wallet=0)
    key = await api_key(db, *ALL)
    nothing = str(uuid.uuid4())
    money = {"amount": {"amount": 5, "units": "USD"}, "usageType": "monetary",
             "bucket": {"id": nothing}, "logicalResource": [{"id": h.line.msisdn}],
             "partyAccount": {"id": str(h.account_id)}}
    before = await written(db)
    for path, body in (
        ("/transferBalance", transfer_body(h, receiver, "monetary",
                                           {"amount": 5, "units": "USD"}, nothing)),
        ("/reserveBalance", money),
        ("/adjustBalance", {**money, "amount": {"amount": -5, "units": "USD"},
                            "reason": "correction"}),
    ):
        r = await client.post(f"{BASE}{path}", headers=key, json=body)
        assert r.status_code == 400, (path, r.text)
        assert (r.json()["code"], r.json()["field"]) == ("bucket-not-found", "bucket.id"), path
    assert await written(db) == before
    assert await totals(db, h.line.wallet_account_id) == (2000, 0)


async def test_the_portal_gives_at_the_fee_it_showed(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    page = f"/account/lines/{me.line.id}/transfer"
    shown = await client.get(f"{page}/review", params={
        "to": friend.line.msisdn, "what": "monetary", "amount": "5.00"})
    assert 'data-testid="fee">$0.20<' in shown.text, shown.text
    form = shown.text.split(f'action="{page}"', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form))
    before = await totals(db, me.line.wallet_account_id)
    # The fee changes (a deploy with new settings) between the review and "Give now".
    dearer = settings.model_copy(update={"balance_transfer_fee_fixed": 50})
    app = create_app(dearer, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver", cookies=client.cookies) as later:
        r = await later.post(page, data=fields)
        assert await totals(db, me.line.wallet_account_id) == before, "charged another fee"
        # Shown again, with the fee now and why; its "Give now" gives at that fee.
        assert r.status_code == 409, r.text
        assert 'data-testid="fee">$0.60<' in r.text and 'data-testid="notice"' in r.text
        form = r.text.split(f'action="{page}"', 1)[1].split("</form>", 1)[0]
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form))
        r = await later.post(page, data=fields)
    assert r.status_code == 303, r.text
    assert await totals(db, me.line.wallet_account_id) == (before[0] - 560, before[1])


async def test_giving_refuses_a_fee_that_is_no_longer_the_fee(
    db: Database, settings: Settings
) -> None:
    """What the portal's fix calls: `giving.give(fee=...)` with the fee the review showed."""
    me, friend = await new_holder(db), await new_holder(db, wallet=0)
    assert me.account_id is not None
    gift = giving.Gift(to=friend.line.msisdn, usage_type="monetary", amount=500)
    before = await written(db)
    with pytest.raises(ValidationFailed) as refused:
        await db.run(lambda s: giving.give(s, settings, account_id=me.account_id,
                                           line_id=me.line.id, gift=gift, key="k1", fee=10))
    assert refused.value.field == "transferCost.value"
    assert refused.value.params["fee"] == "0.20"
    assert await written(db) == before
    given = await db.run(lambda s: giving.give(s, settings, account_id=me.account_id,
                                               line_id=me.line.id, gift=gift, key="k1", fee=20))
    assert (given.action.fee, given.replayed) == (20, False)
    assert await totals(db, me.line.wallet_account_id) == (2000 - 520, 0)
