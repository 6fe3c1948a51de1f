"""TMF654 `validFor` on top-ups and adjustments: what is shown is what was done.

In TMF654 `validFor` is "the period for which the balance in the bucket is valid". Before,
`topupBalance` applied it only to a new bucket and `adjustBalance` never, yet both echoed the
`validFor` they were sent, in the POST answer and every GET after, as if it had been applied:

- `test_a_wallet_top_up_refuses_an_end`: a top-up of money (which has no end) with
  `validFor.endDateTime` answered 201 showing that end; the wallet never ends.
- `test_a_top_up_of_an_existing_bucket_refuses_an_end`: a top-up into a named bucket showed the
  end asked for; the units took the bucket's own end.
- `test_a_top_up_refuses_a_start`: `validFor.startDateTime` was stored and shown, though a
  bucket is valid from when it is made.
- `test_an_adjustment_refuses_validity`: an adjustment showed the `validFor` sent; nothing
  applied it.
- `test_a_new_bucket_shows_the_end_it_has`: a new bucket's end was shown as the client wrote it
  (its offset, its precision), not as stored; now it is the bucket's end, in the POST answer,
  the GET, the list and the history alike.
- `test_an_action_stored_with_an_unapplied_validity_no_longer_shows_it`: rows written before
  these refusals still carry the `validFor` they were sent; GET showed it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Bucket
from simcharge.tmf654.models import BalanceAction
from tests.tmf654.helpers import (
    BASE,
    Holder,
    api_key,
    assert_response,
    assert_valid,
    new_holder,
    written,
)

ALL = ("balance:read", "balance:write", "balance:adjust")
END = "2031-05-01T00:00:00+02:00"


def wallet_topup(h: Holder) -> dict[str, Any]:
    return {"amount": {"amount": 2, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}


def bucket_topup(h: Holder) -> dict[str, Any]:
    return {"amount": {"amount": 10, "units": "MB"}, "usageType": "data",
            "bucket": {"id": str(h.data_bucket)}, "partyAccount": {"id": str(h.account_id)}}


def new_bucket_topup(h: Holder) -> dict[str, Any]:
    return {"amount": {"amount": 1, "units": "GB"}, "usageType": "data", "bucket": {"id": "new"},
            "partyAccount": {"id": str(h.account_id)},
            "logicalResource": [{"id": h.line.msisdn}]}


def wallet_adjustment(h: Holder) -> dict[str, Any]:
    return {"amount": {"amount": 1, "units": "USD"}, "usageType": "monetary",
            "reason": "goodwill", "bucket": {"id": str(h.line.wallet_account_id)}}


def bucket_adjustment(h: Holder) -> dict[str, Any]:
    return {"amount": {"amount": 5, "units": "MB"}, "usageType": "data",
            "reason": "goodwill", "bucket": {"id": str(h.data_bucket)}}


async def refused(
    client: httpx.AsyncClient, db: Database, path: str, definition: str,
    body: dict[str, Any], key: dict[str, str], field: str,
) -> None:
    """`body`, a valid request by the spec, is refused (400 `validation-error` naming `field`,
    a TMF `Error`) and nothing is written."""
    assert_valid(definition, body)
    before = await written(db)
    r = await client.post(f"{BASE}{path}", headers=key, json=body)
    assert r.status_code == 400, r.text
    assert (r.json()["code"], r.json()["field"]) == ("validation-error", field)
    assert_response(r, path, "post")
    assert await written(db) == before


def shown_end(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["validFor"]["endDateTime"].replace("Z", "+00:00"))


async def bucket_end(db: Database, bucket_id: str | uuid.UUID) -> datetime | None:
    async with db.read() as s:
        b = await s.get(Bucket, uuid.UUID(str(bucket_id)), populate_existing=True)
        assert b is not None
        return b.expires_at


async def test_a_wallet_top_up_refuses_an_end(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    body = wallet_topup(h)
    await refused(client, db, "/topupBalance", "TopupBalance_Create",
                  {**body, "validFor": {"endDateTime": END}}, key, "validFor")
    r = await client.post(f"{BASE}/topupBalance", headers=key, json=body)
    assert r.status_code == 201, r.text
    assert_response(r, "/topupBalance", "post")
    assert "validFor" not in r.json()


async def test_a_top_up_of_an_existing_bucket_refuses_an_end(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    body = bucket_topup(h)
    await refused(client, db, "/topupBalance", "TopupBalance_Create",
                  {**body, "validFor": {"endDateTime": END}}, key, "validFor")
    r = await client.post(f"{BASE}/topupBalance", headers=key, json=body)
    assert r.status_code == 201, r.text
    assert_response(r, "/topupBalance", "post")
    # What is shown is the end the units have: the bucket's.
    assert shown_end(r.json()) == await bucket_end(db, h.data_bucket)
    one = await client.get(f"{BASE}/topupBalance/{r.json()['id']}", headers=key)
    assert_response(one, "/topupBalance/{id}")
    assert one.json()["validFor"] == r.json()["validFor"]


async def test_a_top_up_refuses_a_start(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    start = utcnow().isoformat()
    for body in (new_bucket_topup(h), wallet_topup(h), bucket_topup(h)):
        await refused(client, db, "/topupBalance", "TopupBalance_Create",
                      {**body, "validFor": {"startDateTime": start, "endDateTime": END}}, key,
                      "validFor.startDateTime")
        await refused(client, db, "/topupBalance", "TopupBalance_Create",
                      {**body, "validFor": {"startDateTime": start}}, key,
                      "validFor.startDateTime")


async def test_an_adjustment_refuses_validity(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    for body in (wallet_adjustment(h), bucket_adjustment(h)):
        for validity in ({"endDateTime": END}, {"startDateTime": utcnow().isoformat()}, {}):
            await refused(client, db, "/adjustBalance", "AdjustBalance_Create",
                          {**body, "validFor": validity}, key, "validFor")
    money = await client.post(f"{BASE}/adjustBalance", headers=key, json=wallet_adjustment(h))
    assert money.status_code == 201, money.text
    assert_response(money, "/adjustBalance", "post")
    assert "validFor" not in money.json()
    units = await client.post(f"{BASE}/adjustBalance", headers=key, json=bucket_adjustment(h))
    assert units.status_code == 201, units.text
    assert shown_end(units.json()) == await bucket_end(db, h.data_bucket)
    one = await client.get(f"{BASE}/adjustBalance/{units.json()['id']}", headers=key)
    assert_response(one, "/adjustBalance/{id}")
    assert one.json()["validFor"] == units.json()["validFor"]


async def test_a_new_bucket_shows_the_end_it_has(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    r = await client.post(f"{BASE}/topupBalance", headers=key, json={
        **new_bucket_topup(h), "validFor": {"endDateTime": END}})
    assert r.status_code == 201, r.text
    assert_response(r, "/topupBalance", "post")
    stored = await bucket_end(db, r.json()["bucket"]["id"])
    assert stored == datetime.fromisoformat(END)
    assert r.json()["validFor"] == {"endDateTime": "2031-04-30T22:00:00Z"}
    assert shown_end(r.json()) == stored
    one = await client.get(f"{BASE}/topupBalance/{r.json()['id']}", headers=key)
    assert_response(one, "/topupBalance/{id}")
    assert one.json()["validFor"] == r.json()["validFor"]
    listed = await client.get(f"{BASE}/topupBalance", headers=key,
                              params={"logicalResource.id": h.line.msisdn})
    assert_response(listed, "/topupBalance")
    assert [x["validFor"] for x in listed.json()] == [r.json()["validFor"]]
    history = await client.get(f"{BASE}/balanceActionHistory", headers=key,
                               params={"logicalResource.id": h.line.msisdn})
    assert_response(history, "/balanceActionHistory")
    assert [x["validFor"] for x in history.json()] == [r.json()["validFor"]]
    bucket = await client.get(f"{BASE}/bucket/{r.json()['bucket']['id']}", headers=key)
    assert shown_end(bucket.json()) == stored
    # One that never ends shows no end.
    endless = await client.post(f"{BASE}/topupBalance", headers=key, json=new_bucket_topup(h))
    assert endless.status_code == 201, endless.text
    assert await bucket_end(db, endless.json()["bucket"]["id"]) is None
    assert "validFor" not in endless.json()


async def test_an_action_stored_with_an_unapplied_validity_no_longer_shows_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    made = [
        await client.post(f"{BASE}/topupBalance", headers=key, json=wallet_topup(h)),
        await client.post(f"{BASE}/topupBalance", headers=key, json=bucket_topup(h)),
        await client.post(f"{BASE}/adjustBalance", headers=key, json=wallet_adjustment(h)),
    ]
    assert [m.status_code for m in made] == [201, 201, 201], [m.text for m in made]
    for m in made:
        # As a row written before the refusal is: the request with the end it was sent.
        aid = uuid.UUID(m.json()["id"])

        async def backdate(s: Any, aid: uuid.UUID = aid) -> None:
            row = await s.get(BalanceAction, aid)
            await s.execute(update(BalanceAction).where(BalanceAction.id == aid).values(
                request={**row.request, "validFor": {"endDateTime": END}}))

        await db.run(backdate)
    wallet_top, bucket_top, adjustment = (m.json() for m in made)
    for path, item in (("/topupBalance", wallet_top), ("/topupBalance", bucket_top),
                       ("/adjustBalance", adjustment)):
        one = await client.get(f"{BASE}{path}/{item['id']}", headers=key)
        assert_response(one, path + "/{id}")
        assert one.json().get("validFor") == item.get("validFor"), (path, one.json())
    assert shown_end(bucket_top) == await bucket_end(db, h.data_bucket)
    assert shown_end(bucket_top) - utcnow() > timedelta(days=1)
