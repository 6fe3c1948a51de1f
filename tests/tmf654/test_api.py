"""TMF654 over HTTP: every request and response checked against the official Swagger document."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount
from simcharge.lines.models import Bucket, Line, LineState
from tests.orders.helpers import assert_ledger_balanced
from tests.tmf654.helpers import (
    BASE,
    MB,
    Holder,
    api_key,
    assert_response,
    assert_valid,
    new_holder,
    totals,
    written,
)

ALL = ("balance:read", "balance:write", "balance:adjust")


def wallet_body(h: Holder, amount: float = 2) -> dict[str, Any]:
    """A request on the line's wallet (a top-up or a reservation of `amount` USD)."""
    return {"amount": {"amount": amount, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}


async def expire(db: Database, bucket_id: uuid.UUID) -> None:
    """The bucket ended yesterday; the expiry sweep has not run yet."""
    await db.run(lambda s: s.execute(update(Bucket).where(Bucket.id == bucket_id).values(
        expires_at=utcnow() - timedelta(days=1))))


async def post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str],
    definition: str | None = None,
) -> httpx.Response:
    if definition:
        assert_valid(definition, body)
    r = await client.post(f"{BASE}{path}", json=body, headers=headers)
    assert_response(r, path, "post")
    return r


# --- bucket ----------------------------------------------------------------------------------


async def test_buckets_of_a_line_filtered_paged_and_projected(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, "balance:read")
    r = await client.get(f"{BASE}/bucket", params={"logicalResource.id": h.line.msisdn},
                         headers=key)
    assert_response(r, "/bucket")
    items = r.json()
    assert r.headers["X-Total-Count"] == "3" and r.headers["X-Result-Count"] == "3"
    by_usage = {b["usageType"]: b for b in items}
    assert by_usage["monetary"]["remainingValue"] == {"amount": 20.0, "units": "USD"}
    assert by_usage["data"]["remainingValue"] == {"amount": 500 * MB, "units": "bytes"}
    assert by_usage["data"]["status"] == "active"
    assert "endDateTime" in by_usage["data"]["validFor"]
    assert by_usage["voice"]["logicalResource"][0]["id"] == h.line.msisdn
    # Filtering, projection and paging as TMF630 describes them.
    r = await client.get(f"{BASE}/bucket", headers=key, params={
        "partyAccount.id": str(h.account_id), "usageType": "data,voice",
        "fields": "remainingValue", "limit": 1, "offset": 1})
    assert_response(r, "/bucket")
    assert r.headers["X-Total-Count"] == "2" and r.headers["X-Result-Count"] == "1"
    [only] = r.json()
    assert set(only) == {"id", "href", "@type", "remainingValue"}
    # One bucket.
    r = await client.get(f"{BASE}/bucket/{h.data_bucket}", headers=key)
    assert_response(r, "/bucket/{id}")
    assert r.json()["id"] == str(h.data_bucket)


async def test_attribute_filters_compare_values_as_json_writes_them(
    client: httpx.AsyncClient, db: Database
) -> None:
    """`isShared=false` matches the buckets whose `isShared` is `false` (every one here); it
    compared Python's `False` and matched none."""
    h = await new_holder(db)
    key = await api_key(db, "balance:read")
    line = {"logicalResource.id": h.line.msisdn}
    r = await client.get(f"{BASE}/bucket", headers=key, params={**line, "isShared": "false"})
    assert_response(r, "/bucket")
    assert r.headers["X-Total-Count"] == "3"
    r = await client.get(f"{BASE}/bucket", headers=key, params={**line, "isShared": "true"})
    assert r.headers["X-Total-Count"] == "0"
    r = await client.get(f"{BASE}/bucket", headers=key, params={**line, "isShared": "False"})
    assert r.headers["X-Total-Count"] == "0"
    r = await client.get(f"{BASE}/bucket", headers=key,
                         params={**line, "isShared": "true,false", "usageType": "data"})
    assert r.headers["X-Total-Count"] == "1"


async def test_bucket_errors_are_tmf_errors(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db)
    key = await api_key(db, "balance:read")
    for path, spec_path in [(f"/bucket/{h.line.id}", "/bucket/{id}"),
                            ("/bucket/not-a-uuid", "/bucket/{id}"),
                            ("/bucket?logicalResource.id=%2B14155559999", "/bucket")]:
        r = await client.get(f"{BASE}{path}", headers=key)
        assert r.status_code == 404, r.text
        assert_response(r, spec_path)
    r = await client.get(f"{BASE}/bucket", headers=key)
    assert r.status_code == 400
    assert_response(r, "/bucket")
    assert r.json()["code"] == "bad-request" and r.json()["field"] == "logicalResource.id"
    r = await client.get(f"{BASE}/bucket", params={"logicalResource.id": h.line.msisdn,
                                                   "limit": "x"}, headers=key)
    assert r.status_code == 400


async def test_api_keys_and_scopes_are_required(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db)
    r = await client.get(f"{BASE}/bucket", params={"logicalResource.id": h.line.msisdn})
    assert r.status_code == 401
    assert_response(r, "/bucket")
    assert r.json()["code"] == "not-authenticated"
    read_only = await api_key(db, "balance:read")
    body = {"amount": {"amount": 5, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}
    r = await client.post(f"{BASE}/topupBalance", json=body, headers=read_only)
    assert r.status_code == 403
    assert_response(r, "/topupBalance", "post")
    writer = await api_key(db, "balance:write")
    r = await client.post(f"{BASE}/adjustBalance", json=body, headers=writer)
    assert r.status_code == 403
    assert await totals(db, h.line.wallet_account_id) == (2000, 0)


async def test_a_body_that_is_not_json_is_a_tmf_error(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    headers = {**key, "content-type": "application/json"}
    r = await client.post(f"{BASE}/topupBalance", content=b"{not json", headers=headers)
    assert r.status_code in (400, 422), r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["@type"] == "Error"
    r = await client.patch(f"{BASE}/reserveBalance/{uuid.uuid4()}", content=b"\xff{",
                           headers=headers)
    assert r.status_code in (400, 422), r.text
    assert r.json().get("@type") == "Error", r.text
    assert await totals(db, h.line.wallet_account_id) == (2000, 0)


# --- topupBalance ----------------------------------------------------------------------------


async def test_a_money_top_up_reactivates_a_line_whose_validity_ended(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A `topupBalance` gives no validity of its own: a line in grace whose validity ended gets
    `LIFECYCLE_TOPUP_VALIDITY_DAYS` (30) from now and is active again."""
    h = await new_holder(db, state=LineState.grace)
    ended = utcnow() - timedelta(days=3)
    await db.run(lambda s: s.execute(
        update(Line).where(Line.id == h.line.id).values(validity_end=ended)))
    key = {**(await api_key(db, *ALL)), "Idempotency-Key": "pos-grace"}
    body = {"amount": {"amount": 5, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)},
            "logicalResource": [{"id": h.line.msisdn}]}
    before = utcnow()
    r = await post(client, "/topupBalance", body, key, "TopupBalance_Create")
    assert r.status_code == 201, r.text
    async with db.read() as s:
        line = await s.get(Line, h.line.id)
    assert line is not None and line.state == LineState.active.value
    assert line.validity_end is not None
    assert before + timedelta(days=30) <= line.validity_end <= utcnow() + timedelta(days=30)


async def test_a_top_up_credits_once_per_idempotency_key(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db, state=LineState.grace)
    key = {**(await api_key(db, *ALL)), "Idempotency-Key": "pos-4711"}
    body = {"amount": {"amount": 12.5, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)},
            "logicalResource": [{"id": h.line.msisdn}],
            "channel": {"id": "pos", "name": "retail"}, "reason": "voucher",
            "voucher": "V-123", "isAutoTopup": False}
    r = await post(client, "/topupBalance", body, key, "TopupBalance_Create")
    assert r.status_code == 201
    out = r.json()
    assert out["status"] == "completed" and out["channel"]["name"] == "retail"
    assert (out["voucher"], out["isAutoTopup"]) == ("V-123", False)
    assert r.headers["Location"].endswith(f"/topupBalance/{out['id']}")
    assert await totals(db, h.line.wallet_account_id) == (3250, 0)
    again = await post(client, "/topupBalance", body, key)
    assert again.json()["id"] == out["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert await totals(db, h.line.wallet_account_id) == (3250, 0)
    other = await client.post(f"{BASE}/topupBalance", headers=key,
                              json={**body, "amount": {"amount": 99, "units": "USD"}})
    assert other.status_code == 400 and other.json()["code"] == "idempotency-key-reused"
    assert await totals(db, h.line.wallet_account_id) == (3250, 0)
    # A top-up reactivates a line in grace (validity not ended: none set).
    r = await client.get(f"{BASE}/bucket/{h.line.wallet_account_id}", headers=key)
    assert r.json()["status"] == "active"
    listed = await client.get(f"{BASE}/topupBalance",
                              params={"logicalResource.id": h.line.msisdn}, headers=key)
    assert_response(listed, "/topupBalance")
    assert [t["id"] for t in listed.json()] == [out["id"]]
    one = await client.get(f"{BASE}/topupBalance/{out['id']}", headers=key)
    assert_response(one, "/topupBalance/{id}")
    await assert_ledger_balanced(db)


async def test_a_key_is_for_one_kind_of_action(client: httpx.AsyncClient, db: Database) -> None:
    """The same key and body sent to another action answered the first action (a top-up for a
    reservation, holding nothing): it is another request, refused as another body is."""
    h = await new_holder(db)
    key = {**(await api_key(db, *ALL)), "Idempotency-Key": "k-1"}
    body = {**wallet_body(h), "reason": "voucher"}
    r = await post(client, "/topupBalance", body, key, "TopupBalance_Create")
    assert r.status_code == 201
    before = await written(db)
    for path in ("/reserveBalance", "/adjustBalance"):
        other = await post(client, path, body, key)
        assert other.status_code == 400, other.text
        assert (other.json()["code"], other.json()["field"]) == (
            "idempotency-key-reused", "Idempotency-Key")
        assert "Idempotent-Replayed" not in other.headers
    assert await written(db) == before
    again = await post(client, "/topupBalance", body, key)
    assert again.status_code == 201 and again.json()["id"] == r.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await totals(db, h.line.wallet_account_id) == (2200, 0)


async def test_without_a_key_the_transfers_name_their_action(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Without an Idempotency-Key the action's id was drawn twice: its transfers' `reference`
    (and a new bucket's `source`) named an action that does not exist."""
    from simcharge.ledger.models import LedgerTransfer
    from simcharge.tmf654.models import BalanceAction

    h, receiver = await new_holder(db), await new_holder(db)
    key = await api_key(db, *ALL)
    made = [
        await post(client, "/topupBalance", wallet_body(h), key),
        await post(client, "/topupBalance", {
            "amount": {"amount": 1, "units": "MB"}, "usageType": "data", "bucket": {"id": "new"},
            "partyAccount": {"id": str(h.account_id)},
            "logicalResource": [{"id": h.line.msisdn}]}, key),
        await post(client, "/adjustBalance", {**wallet_body(h), "reason": "goodwill"}, key),
        await post(client, "/reserveBalance", wallet_body(h), key),
        await post(client, "/transferBalance", transfer_body(
            h, receiver, "data", {"amount": 1, "units": "MB"}, str(h.data_bucket)), key),
    ]
    assert [r.status_code for r in made] == [201] * 5, [r.text for r in made]
    async with db.read() as s:
        for r in made:
            aid = uuid.UUID(r.json()["id"])
            refs = set((await s.execute(select(LedgerTransfer.reference).where(
                LedgerTransfer.reference.like(f"balance:{aid}%")))).scalars())
            assert refs == {f"balance:{aid}"}, r.json()
            action = await s.get(BalanceAction, aid)
            assert action is not None
            if action.pending_transfer_id is not None:
                pending = await s.get(LedgerTransfer, action.pending_transfer_id)
                assert pending is not None and pending.reference == f"balance:{aid}"
        new_bucket = await s.get(Bucket, uuid.UUID(made[1].json()["bucket"]["id"]))
        assert new_bucket is not None and new_bucket.source == f"balance:{made[1].json()['id']}"
        given = await s.get(Bucket, uuid.UUID(made[4].json()["receiverBucket"]["id"]))
        assert given is not None and given.source == f"balance:{made[4].json()['id']}"


async def test_a_top_up_into_an_expired_bucket_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    """The units went to a bucket that shows nothing left and that the expiry sweep takes:
    refused as a transfer from it is (400 bucket-not-found, field bucket.id)."""
    h = await new_holder(db)
    await expire(db, h.data_bucket)
    key = await api_key(db, *ALL)
    before = await written(db)
    r = await post(client, "/topupBalance", {
        "amount": {"amount": 100, "units": "MB"}, "usageType": "data",
        "bucket": {"id": str(h.data_bucket)}, "partyAccount": {"id": str(h.account_id)}}, key)
    assert r.status_code == 400, r.text
    assert (r.json()["code"], r.json()["field"]) == ("bucket-not-found", "bucket.id")
    assert await written(db) == before


async def test_a_data_top_up_opens_a_bucket_until_the_given_end(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    body = {"amount": {"amount": 2, "units": "GB"}, "usageType": "data",
            "bucket": {"id": "new"}, "partyAccount": {"id": str(h.account_id)},
            "logicalResource": [{"id": h.line.msisdn}],
            "validFor": {"endDateTime": "2099-01-01T00:00:00Z"}}
    r = await post(client, "/topupBalance", body, key, "TopupBalance_Create")
    assert r.status_code == 201, r.text
    bucket_id = r.json()["bucket"]["id"]
    b = await client.get(f"{BASE}/bucket/{bucket_id}", headers=key)
    assert b.json()["remainingValue"] == {"amount": 2 * 1024 * MB, "units": "bytes"}


async def test_bad_top_ups_change_nothing(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    good = {"amount": {"amount": 1, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}
    cases = [
        ({k: v for k, v in good.items() if k != "usageType"}, 400, "usageType"),
        ({**good, "usageType": "gold"}, 400, "usageType"),
        ({**good, "amount": {"amount": 1.001, "units": "USD"}}, 400, "amount.amount"),
        ({**good, "amount": {"amount": 1, "units": "EUR"}}, 400, "amount.units"),
        ({**good, "amount": {"amount": -1, "units": "USD"}}, 400, "amount"),
        ({**good, "partyAccount": {"id": "someone-else"}}, 400, "partyAccount.id"),
        ({**good, "bucket": {"id": "x"}}, 400, "logicalResource.id"),
        ({**good, "bucket": {"id": "x"}, "logicalResource": [{"id": "+14155559999"}]}, 400,
         "logicalResource.id"),
    ]
    for body, status, field in cases:
        r = await client.post(f"{BASE}/topupBalance", json=body, headers=key)
        assert r.status_code == status, (body, r.text)
        assert r.json()["field"] == field, (body, r.json())
        assert_response(r, "/topupBalance", "post")
    r = await client.post(f"{BASE}/topupBalance", content=b"{", headers={
        **key, "content-type": "application/json"})
    assert r.status_code in (400, 422)
    assert await totals(db, h.line.wallet_account_id) == (2000, 0)


# --- adjustBalance ---------------------------------------------------------------------------


async def test_adjustments_up_and_down_never_below_zero(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    body = {"amount": {"amount": -300, "units": "seconds"}, "usageType": "voice",
            "bucket": {"id": str(h.voice_bucket)}, "reason": "dropped call credit reversed",
            "adjustType": "oneTime"}
    r = await post(client, "/adjustBalance", body, key, "AdjustBalance_Create")
    assert r.status_code == 201, r.text
    assert r.json()["amount"]["amount"] == -300
    assert await totals(db, h.voice_bucket) == (3300, 0)
    # More than the bucket holds, within what one may adjust alone (1 GiB of data a day).
    too_much = {**body, "usageType": "data", "bucket": {"id": str(h.data_bucket)},
                "amount": {"amount": -600, "units": "MB"}}
    r = await post(client, "/adjustBalance", too_much, key)
    assert r.status_code == 409 and r.json()["code"] == "insufficient-balance"
    assert await totals(db, h.data_bucket) == (500 * MB, 0)
    assert await totals(db, h.voice_bucket) == (3300, 0)
    no_reason = {k: v for k, v in body.items() if k != "reason"}
    r = await post(client, "/adjustBalance", no_reason, key)
    assert r.status_code == 400 and r.json()["field"] == "reason"
    up = {"amount": {"amount": 5, "units": "USD"}, "usageType": "monetary",
          "bucket": {"id": "wallet"}, "logicalResource": [{"id": h.line.msisdn}],
          "reason": "goodwill"}
    r = await post(client, "/adjustBalance", up, key, "AdjustBalance_Create")
    assert r.status_code == 201
    assert await totals(db, h.line.wallet_account_id) == (2500, 0)
    got = await client.get(f"{BASE}/adjustBalance/{r.json()['id']}", headers=key)
    assert_response(got, "/adjustBalance/{id}")
    listed = await client.get(f"{BASE}/adjustBalance",
                              params={"logicalResource.id": h.line.msisdn}, headers=key)
    assert_response(listed, "/adjustBalance")
    assert r.json()["id"] in {a["id"] for a in listed.json()}
    missing = await client.get(f"{BASE}/adjustBalance/{uuid.uuid4()}", headers=key)
    assert_response(missing, "/adjustBalance/{id}")
    assert missing.status_code == 404
    await assert_ledger_balanced(db)


async def test_adjustments_are_listed_by_party_account(
    client: httpx.AsyncClient, db: Database
) -> None:
    """`partyAccount.id` picks the owner's lines; it was also matched against each item, and an
    adjustment carries no `partyAccount`: the list and the history left them out."""
    h, other = await new_holder(db), await new_holder(db)
    key = await api_key(db, *ALL)
    r = await post(client, "/adjustBalance", {**wallet_body(h, 1), "reason": "goodwill"}, key)
    assert r.status_code == 201
    owner = {"partyAccount.id": str(h.account_id)}
    by_owner = await client.get(f"{BASE}/adjustBalance", headers=key, params=owner)
    assert_response(by_owner, "/adjustBalance")
    assert [a["id"] for a in by_owner.json()] == [r.json()["id"]]
    history = await client.get(f"{BASE}/balanceActionHistory", headers=key, params=owner)
    assert [a["@baseType"] for a in history.json()] == ["AdjustBalance"]
    # Both: the line, if that account owns it.
    both = {"logicalResource.id": h.line.msisdn}
    r = await client.get(f"{BASE}/adjustBalance", headers=key, params={**owner, **both})
    assert len(r.json()) == 1
    r = await client.get(f"{BASE}/adjustBalance", headers=key,
                         params={**both, "partyAccount.id": str(other.account_id)})
    assert r.json() == [] and r.headers["X-Total-Count"] == "0"
    r = await client.get(f"{BASE}/bucket", headers=key,
                         params={**both, "partyAccount.id": str(other.account_id)})
    assert r.json() == []


# --- reserveBalance --------------------------------------------------------------------------


async def test_a_reservation_is_held_then_completed_or_cancelled(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    body = {"amount": {"amount": 2, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}
    r = await post(client, "/reserveBalance", body, key, "ReserveBalance_Create")
    assert r.status_code == 201 and r.json()["status"] == "created"
    rid = r.json()["id"]
    assert await totals(db, h.line.wallet_account_id) == (1800, 200)
    b = await client.get(f"{BASE}/bucket/{h.line.wallet_account_id}", headers=key)
    assert b.json()["reservedValue"] == {"amount": 2.0, "units": "USD"}
    patch = {"status": "completed", "reason": "call rated",
             "amount": {"amount": 1.5, "units": "USD"}}
    assert_valid("ReserveBalance_Update", patch)
    r = await client.patch(f"{BASE}/reserveBalance/{rid}", json=patch, headers=key)
    assert_response(r, "/reserveBalance/{id}", "patch")
    assert r.json()["status"] == "completed"
    assert await totals(db, h.line.wallet_account_id) == (1850, 0)
    # Settled: settling again the same way is harmless; the other way is refused.
    r = await client.patch(f"{BASE}/reserveBalance/{rid}", json=patch, headers=key)
    assert r.status_code == 200
    r = await client.patch(f"{BASE}/reserveBalance/{rid}",
                           json={"status": "cancelled", "reason": "x"}, headers=key)
    assert r.status_code == 409 and r.json()["code"] == "reservation-not-open"
    assert_response(r, "/reserveBalance/{id}", "patch")
    # Another, cancelled by DELETE.
    r = await post(client, "/reserveBalance", {**body, "bucket": {"id": str(h.data_bucket)},
                                               "usageType": "data",
                                               "amount": {"amount": 100, "units": "MB"}}, key)
    assert await totals(db, h.data_bucket) == (400 * MB, 100 * MB)
    d = await client.delete(f"{BASE}/reserveBalance/{r.json()['id']}", headers=key)
    assert d.status_code == 204
    assert await totals(db, h.data_bucket) == (500 * MB, 0)
    got = await client.get(f"{BASE}/reserveBalance/{r.json()['id']}", headers=key)
    assert_response(got, "/reserveBalance/{id}")
    assert got.json()["status"] == "cancelled"
    listed = await client.get(f"{BASE}/reserveBalance",
                              params={"logicalResource.id": h.line.msisdn}, headers=key)
    assert_response(listed, "/reserveBalance")
    assert {rid, r.json()["id"]} <= {a["id"] for a in listed.json()}
    # More than there is: refused, nothing held.
    r = await post(client, "/reserveBalance", {**body, "amount": {"amount": 100, "units": "USD"}},
                   key)
    assert r.status_code == 409 and r.json()["code"] == "insufficient-balance"
    assert await totals(db, h.line.wallet_account_id) == (1850, 0)
    await assert_ledger_balanced(db)


async def test_a_reservation_replays_after_it_is_completed(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Completing wrote the amount used into the stored request, and the same key and body then
    answered 400 idempotency-key-reused: the request is kept as sent (the settle transfer says
    what was used)."""
    from simcharge.tmf654.models import BalanceAction

    h = await new_holder(db)
    key = {**(await api_key(db, *ALL)), "Idempotency-Key": "res-1"}
    body = wallet_body(h)
    r = await post(client, "/reserveBalance", body, key, "ReserveBalance_Create")
    assert r.status_code == 201
    rid = r.json()["id"]
    p = await client.patch(f"{BASE}/reserveBalance/{rid}", headers=key, json={
        "status": "completed", "reason": "rated", "amount": {"amount": 0.5, "units": "USD"}})
    assert p.status_code == 200, p.text
    again = await post(client, "/reserveBalance", body, key)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == rid and again.json()["status"] == "completed"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await totals(db, h.line.wallet_account_id) == (1950, 0)
    async with db.read() as s:
        action = await s.get(BalanceAction, uuid.UUID(rid))
        assert action is not None and action.request == body


async def test_a_reservation_stored_with_its_used_amount_still_replays(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Rows completed before: their request carries `_used`. They replay, and completing them
    again compares with what was posted."""
    from simcharge.tmf654.models import BalanceAction

    h = await new_holder(db)
    key = {**(await api_key(db, *ALL)), "Idempotency-Key": "res-old"}
    body = wallet_body(h)
    r = await post(client, "/reserveBalance", body, key)
    rid = r.json()["id"]
    used = {"status": "completed", "reason": "rated", "amount": {"amount": 1.5, "units": "USD"}}
    assert (await client.patch(f"{BASE}/reserveBalance/{rid}", headers=key,
                               json=used)).status_code == 200
    await db.run(lambda s: s.execute(update(BalanceAction).where(
        BalanceAction.id == uuid.UUID(rid)).values(request={**body, "_used": 150})))
    again = await post(client, "/reserveBalance", body, key)
    assert again.status_code == 201 and again.json()["id"] == rid, again.text
    assert (await client.patch(f"{BASE}/reserveBalance/{rid}", headers=key,
                               json=used)).status_code == 200
    other = await client.patch(f"{BASE}/reserveBalance/{rid}", headers=key, json={
        **used, "amount": {"amount": 2, "units": "USD"}})
    assert other.status_code == 409 and other.json()["field"] == "amount"
    changed = await post(client, "/reserveBalance", {**body, "reason": "x"}, key)
    assert changed.status_code == 400 and changed.json()["code"] == "idempotency-key-reused"
    assert await totals(db, h.line.wallet_account_id) == (1850, 0)


async def test_completing_again_with_another_amount_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Completed with 1.50: completing again with 0.50 answered 200, as if 0.50 had been
    charged. The same amount, or none, is the same request (200); another is 409."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    r = await post(client, "/reserveBalance", wallet_body(h), key)
    url = f"{BASE}/reserveBalance/{r.json()['id']}"
    done = {"status": "completed", "reason": "rated", "amount": {"amount": 1.5, "units": "USD"}}
    assert (await client.patch(url, headers=key, json=done)).status_code == 200
    for amount in (0.5, 2, 0):
        p = await client.patch(url, headers=key, json={
            **done, "amount": {"amount": amount, "units": "USD"}})
        assert p.status_code == 409, (amount, p.text)
        assert (p.json()["code"], p.json()["field"]) == ("reservation-not-open", "amount")
        assert_response(p, "/reserveBalance/{id}", "patch")
    for same in (done, {"status": "completed", "reason": "rated"}):
        p = await client.patch(url, headers=key, json=same)
        assert p.status_code == 200 and p.json()["status"] == "completed"
    assert await totals(db, h.line.wallet_account_id) == (1850, 0)
    # Completed in full (no amount): the amount posted is the whole reservation.
    r = await post(client, "/reserveBalance", wallet_body(h, 1), key)
    url = f"{BASE}/reserveBalance/{r.json()['id']}"
    assert (await client.patch(url, headers=key, json={"status": "completed",
                                                       "reason": "rated"})).status_code == 200
    p = await client.patch(url, headers=key, json={**done, "amount": {"amount": 1, "units": "USD"}})
    assert p.status_code == 200
    p = await client.patch(url, headers=key, json=done)
    assert p.status_code == 409 and p.json()["field"] == "amount"
    assert await totals(db, h.line.wallet_account_id) == (1750, 0)


async def test_an_empty_amount_is_bad_input_not_the_whole_reservation(
    client: httpx.AsyncClient, db: Database
) -> None:
    """`"amount": {}` is falsy in Python and posted everything reserved."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    r = await post(client, "/reserveBalance", wallet_body(h), key)
    before = await written(db)
    p = await client.patch(f"{BASE}/reserveBalance/{r.json()['id']}", headers=key,
                           json={"status": "completed", "reason": "rated", "amount": {}})
    assert p.status_code == 400, p.text
    assert (p.json()["code"], p.json()["field"]) == ("validation-error", "amount.amount")
    assert await written(db) == before
    assert await totals(db, h.line.wallet_account_id) == (1800, 200)


async def test_a_timed_out_reservation_shows_cancelled_before_the_sweep(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Past its timeout and not yet released by the sweep it read `created` (open), while
    completing it was refused."""
    from simcharge.kit.clock import clock

    h = await new_holder(db)
    key = await api_key(db, *ALL)
    end = (utcnow() + timedelta(minutes=5)).isoformat()
    r = await post(client, "/reserveBalance", {**wallet_body(h), "validFor": {
        "endDateTime": end}}, key)
    url = f"{BASE}/reserveBalance/{r.json()['id']}"
    assert (await client.get(url, headers=key)).json()["status"] == "created"
    clock.freeze(utcnow() + timedelta(minutes=6))
    got = await client.get(url, headers=key)
    assert_response(got, "/reserveBalance/{id}")
    assert got.json()["status"] == "cancelled"
    listed = await client.get(f"{BASE}/reserveBalance", headers=key,
                              params={"logicalResource.id": h.line.msisdn, "status": "created"})
    assert listed.json() == []
    late = await client.patch(url, headers=key, json={"status": "completed", "reason": "late"})
    assert late.status_code == 409 and late.json()["code"] == "reservation-not-open"
    assert await totals(db, h.line.wallet_account_id) == (1800, 200)  # the sweep releases it


async def test_an_expired_bucket_can_be_neither_reserved_nor_adjusted(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A reservation from a bucket past its end was accepted, and completing it spent units
    that are expiry's."""
    h = await new_holder(db)
    await expire(db, h.data_bucket)
    key = await api_key(db, *ALL)
    data = {"amount": {"amount": 100, "units": "MB"}, "usageType": "data",
            "bucket": {"id": str(h.data_bucket)}, "partyAccount": {"id": str(h.account_id)}}
    before = await written(db)
    for path, body in (("/reserveBalance", data),
                       ("/adjustBalance", {**data, "reason": "goodwill"}),
                       ("/adjustBalance", {**data, "reason": "goodwill",
                                           "amount": {"amount": -100, "units": "MB"}})):
        r = await post(client, path, body, key)
        assert r.status_code == 400, (path, r.text)
        assert (r.json()["code"], r.json()["field"]) == ("bucket-not-found", "bucket.id")
    assert await written(db) == before
    assert await totals(db, h.data_bucket) == (500 * MB, 0)


# --- transferBalance -------------------------------------------------------------------------


def transfer_body(giver: Any, receiver: Any, usage: str, amount: dict[str, Any],
                  bucket: str) -> dict[str, Any]:
    return {"reason": "gift", "channel": {"id": "crm", "name": "crm"},
            "logicalResource": [{"id": giver.line.msisdn}],
            "receiverLogicalResource": {"id": receiver.line.msisdn},
            "amount": amount, "usageType": usage, "bucket": {"id": bucket},
            "receiverBucket": {"id": "new"}, "receiverBucketUsageType": usage}


async def test_transfers_move_credit_and_data_with_a_fee(
    client: httpx.AsyncClient, db: Database
) -> None:
    giver, receiver = await new_holder(db), await new_holder(db, wallet=0)
    key = await api_key(db, *ALL)
    body = transfer_body(giver, receiver, "monetary", {"amount": 10, "units": "USD"},
                         str(giver.line.wallet_account_id))
    r = await post(client, "/transferBalance", body, key, "TransferBalance_Create")
    assert r.status_code == 201, r.text
    out = r.json()
    # 10.00 given, fee 2 % + 0.10 = 0.30 paid by the giver.
    assert out["transferCost"] == {"unit": "USD", "value": 0.3}
    assert await totals(db, giver.line.wallet_account_id) == (2000 - 1000 - 30, 0)
    assert await totals(db, receiver.line.wallet_account_id) == (1000, 0)
    data = transfer_body(giver, receiver, "data", {"amount": 200, "units": "MB"},
                         str(giver.data_bucket))
    r = await post(client, "/transferBalance", data, key, "TransferBalance_Create")
    assert r.status_code == 201, r.text
    received = uuid.UUID(r.json()["receiverBucket"]["id"])
    assert await totals(db, giver.data_bucket) == (300 * MB, 0)
    async with db.read() as s:
        source = await s.get(Bucket, giver.data_bucket)
        gift = (await s.execute(select(Bucket).where(Bucket.id == received))).scalar_one()
        fees = sum(a.credits_posted for a in (await s.execute(select(LedgerAccount).where(
            LedgerAccount.id == chart.fees("USD", chart.shard_of(giver.line.id)).id))).scalars())
    assert source is not None
    assert (gift.line_id, gift.expires_at) == (receiver.line.id, source.expires_at)
    assert fees >= 40
    assert await totals(db, giver.line.wallet_account_id) == (2000 - 1000 - 30 - 10, 0)
    listed = await client.get(f"{BASE}/transferBalance",
                              params={"logicalResource.id": giver.line.msisdn}, headers=key)
    assert_response(listed, "/transferBalance")
    assert len(listed.json()) == 2
    one = await client.get(f"{BASE}/transferBalance/{out['id']}", headers=key)
    assert_response(one, "/transferBalance/{id}")
    assert one.json()["id"] == out["id"]
    missing = await client.get(f"{BASE}/transferBalance/{uuid.uuid4()}", headers=key)
    assert_response(missing, "/transferBalance/{id}")
    assert missing.status_code == 404
    await assert_ledger_balanced(db)


async def test_transfers_out_of_bounds_are_refused_and_change_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    giver, receiver = await new_holder(db), await new_holder(db)
    frozen = await new_holder(db, state=LineState.frozen)
    euro = await new_holder(db, currency="EUR")
    key = await api_key(db, *ALL)
    wallet = str(giver.line.wallet_account_id)
    cases = [
        (transfer_body(giver, receiver, "monetary", {"amount": 60, "units": "USD"}, wallet),
         409, "transfer-limit-exceeded"),
        (transfer_body(giver, receiver, "monetary", {"amount": 0.5, "units": "USD"}, wallet),
         409, "transfer-limit-exceeded"),
        (transfer_body(giver, giver, "monetary", {"amount": 5, "units": "USD"}, wallet),
         400, "validation-error"),
        (transfer_body(giver, euro, "monetary", {"amount": 5, "units": "USD"}, wallet),
         400, "validation-error"),
        (transfer_body(frozen, receiver, "monetary", {"amount": 5, "units": "USD"},
                       str(frozen.line.wallet_account_id)), 409, "line-not-in-service"),
        (transfer_body(giver, receiver, "data", {"amount": 20, "units": "GB"},
                       str(giver.data_bucket)), 409, "transfer-limit-exceeded"),
        ({**transfer_body(giver, receiver, "monetary", {"amount": 5, "units": "USD"}, wallet),
          "costOwner": "receiver"}, 400, "validation-error"),
        ({k: v for k, v in transfer_body(giver, receiver, "monetary",
                                          {"amount": 5, "units": "USD"}, wallet).items()
          if k != "channel"}, 400, "validation-error"),
    ]
    for body, status, code in cases:
        r = await client.post(f"{BASE}/transferBalance", json=body, headers=key)
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
        assert_response(r, "/transferBalance", "post")
    assert await totals(db, giver.line.wallet_account_id) == (2000, 0)
    assert await totals(db, receiver.line.wallet_account_id) == (2000, 0)
    # Not enough in the wallet for amount + fee: nothing moves.
    poor = await new_holder(db, wallet=1000)
    body = transfer_body(poor, receiver, "monetary", {"amount": 10, "units": "USD"},
                         str(poor.line.wallet_account_id))
    r = await client.post(f"{BASE}/transferBalance", json=body, headers=key)
    assert (r.status_code, r.json()["code"]) == (409, "insufficient-balance")
    assert await totals(db, poor.line.wallet_account_id) == (1000, 0)
    assert await totals(db, receiver.line.wallet_account_id) == (2000, 0)


# --- amounts and dates out of range ---------------------------------------------------------


def raw(body: dict[str, Any], amount: str) -> str:
    """`body` as JSON with `amount.amount` written as `amount`, a literal Python's JSON reads
    (Infinity, NaN) or that no float holds exactly."""
    body = {**body, "amount": {**body["amount"], "amount": "@"}}
    return json.dumps(body).replace('"@"', amount)


async def test_amounts_no_balance_can_hold_are_bad_input_and_change_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    h, receiver = await new_holder(db), await new_holder(db)
    key = await api_key(db, *ALL)
    line = {"logicalResource": [{"id": h.line.msisdn}],
            "partyAccount": {"id": str(h.account_id)}}
    wallet = {**line, "usageType": "monetary", "bucket": {"id": str(h.line.wallet_account_id)},
              "amount": {"amount": 1, "units": "USD"}}
    reservation = await post(client, "/reserveBalance", wallet, key, "ReserveBalance_Create")
    assert reservation.status_code == 201
    sms = {**line, "usageType": "sms", "bucket": {"id": "new"}, "amount": {"units": "sms"}}
    money = {**wallet, "amount": {"units": "USD"}}
    data = {**line, "usageType": "data", "bucket": {"id": str(h.data_bucket)},
            "amount": {"units": "MB"}}
    voice = {**line, "usageType": "voice", "bucket": {"id": str(h.voice_bucket)},
             "amount": {"units": "seconds"}, "reason": "goodwill"}
    give_money = transfer_body(h, receiver, "monetary", {"units": "USD"},
                               str(h.line.wallet_account_id))
    give_data = transfer_body(h, receiver, "data", {"units": "MB"}, str(h.data_bucket))
    cases = [
        ("/topupBalance", sms, "Infinity"),
        ("/topupBalance", sms, "NaN"),
        ("/topupBalance", sms, "1e30"),
        ("/topupBalance", sms, "9223372036854775808"),  # 2^63: MAX_AMOUNT + 1
        ("/topupBalance", money, "1e30"),
        ("/topupBalance", money, "92233720368547758.08"),  # 2^63 cents
        ("/topupBalance", data, "Infinity"),
        ("/adjustBalance", voice, "Infinity"),
        ("/adjustBalance", voice, "-Infinity"),
        ("/adjustBalance", voice, "1e30"),
        ("/adjustBalance", voice, "-1e30"),
        ("/reserveBalance", voice, "Infinity"),
        ("/reserveBalance", voice, "1e30"),
        ("/transferBalance", give_money, "Infinity"),
        ("/transferBalance", give_data, "8796093022208"),  # 2^63 bytes
    ]
    before = await written(db)
    for path, body, amount in cases:
        r = await client.post(f"{BASE}{path}", content=raw(body, amount),
                              headers={**key, "content-type": "application/json"})
        assert r.status_code == 400, (path, amount, r.text)
        assert (r.json()["code"], r.json()["field"]) == ("validation-error", "amount.amount")
        assert_response(r, path, "post")
    rid = reservation.json()["id"]
    completed = {"status": "completed", "reason": "call rated", "amount": {"units": "USD"}}
    for amount in ("Infinity", "1e30"):
        r = await client.patch(f"{BASE}/reserveBalance/{rid}", content=raw(completed, amount),
                               headers={**key, "content-type": "application/json"})
        assert r.status_code == 400, (amount, r.text)
        assert (r.json()["code"], r.json()["field"]) == ("validation-error", "amount.amount")
        assert_response(r, "/reserveBalance/{id}", "patch")
    assert await written(db) == before
    assert await totals(db, h.line.wallet_account_id) == (1900, 100)
    got = await client.get(f"{BASE}/reserveBalance/{rid}", headers=key)
    assert got.json()["status"] == "created"


async def test_an_end_of_validity_past_the_last_date_is_bad_input(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    body = {"amount": {"amount": 1, "units": "GB"}, "usageType": "data",
            "bucket": {"id": "new"}, "partyAccount": {"id": str(h.account_id)},
            "logicalResource": [{"id": h.line.msisdn}]}
    before = await written(db)
    for end in ("9999-12-31T23:00:00-12:00",  # in the year 10000 in UTC
                "9999-12-31T12:00:00Z"):  # the bucket's end, in whole days, may be later
        r = await post(client, "/topupBalance", {**body, "validFor": {"endDateTime": end}}, key,
                       "TopupBalance_Create")
        assert r.status_code == 400, (end, r.text)
        assert (r.json()["code"], r.json()["field"]) == ("validation-error",
                                                         "validFor.endDateTime")
    assert await written(db) == before
    late = {**body, "validFor": {"endDateTime": "9999-12-30T00:00:00Z"}}
    r = await post(client, "/topupBalance", late, key, "TopupBalance_Create")
    assert r.status_code == 201, r.text
    bucket = await client.get(f"{BASE}/bucket/{r.json()['bucket']['id']}", headers=key)
    assert bucket.json()["validFor"]["endDateTime"][:10] in ("9999-12-29", "9999-12-30")


# --- accumulatedBalance ----------------------------------------------------------------------


async def test_accumulated_balances_per_usage_type(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, "balance:read")
    r = await client.get(f"{BASE}/accumulatedBalance",
                         params={"logicalResource.id": h.line.msisdn}, headers=key)
    assert_response(r, "/accumulatedBalance")
    totals_ = {a["name"]: a["totalBalance"] for a in r.json()}
    assert totals_ == {"monetary": {"amount": 20.0, "units": "USD"},
                       "data": {"amount": 500 * MB, "units": "bytes"},
                       "voice": {"amount": 3600, "units": "seconds"}}
    one = await client.get(f"{BASE}/accumulatedBalance/{h.line.id}.data", headers=key)
    assert_response(one, "/accumulatedBalance/{id}")
    missing = await client.get(f"{BASE}/accumulatedBalance/{h.line.id}.gold", headers=key)
    assert missing.status_code == 404
    assert_response(missing, "/accumulatedBalance/{id}")


async def test_settled_actions_cannot_be_patched(client: httpx.AsyncClient, db: Database) -> None:
    key = await api_key(db, *ALL)
    r = await client.delete(f"{BASE}/topupBalance/x", headers=key)
    assert r.status_code == 405
    assert_response(r, "/topupBalance/{id}", "delete")


async def test_a_reservation_left_open_times_out(client: httpx.AsyncClient, db: Database) -> None:
    from datetime import timedelta

    from simcharge.kit.clock import clock, utcnow
    from simcharge.ledger.service import expire_pending_transfers

    h = await new_holder(db)
    key = await api_key(db, *ALL)
    end = (utcnow() + timedelta(minutes=5)).isoformat()
    body = {"amount": {"amount": 60, "units": "seconds"}, "usageType": "voice",
            "bucket": {"id": str(h.voice_bucket)}, "partyAccount": {"id": str(h.account_id)},
            "validFor": {"endDateTime": end}}
    r = await post(client, "/reserveBalance", body, key, "ReserveBalance_Create")
    assert r.status_code == 201
    assert await totals(db, h.voice_bucket) == (3540, 60)
    clock.freeze(utcnow() + timedelta(minutes=6))
    assert await db.run(expire_pending_transfers) >= 1
    assert await totals(db, h.voice_bucket) == (3600, 0)
    got = await client.get(f"{BASE}/reserveBalance/{r.json()['id']}", headers=key)
    assert got.json()["status"] == "cancelled"
    late = await client.patch(f"{BASE}/reserveBalance/{r.json()['id']}", headers=key,
                              json={"status": "completed", "reason": "too late"})
    assert late.status_code == 409
    unknown = await client.patch(f"{BASE}/reserveBalance/{h.voice_bucket}", headers=key,
                                 json={"status": "completed", "reason": "x"})
    assert unknown.status_code == 404
    assert_response(unknown, "/reserveBalance/{id}", "patch")
    too_long = {**body, "validFor": {"endDateTime": "2099-01-01T00:00:00Z"}}
    r = await post(client, "/reserveBalance", too_long, key)
    assert r.status_code == 400 and r.json()["field"] == "validFor.endDateTime"


async def test_termination_releases_a_reservation_and_forfeits_what_it_held(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A line terminated with a reservation open: the reservation is released (it reads
    cancelled, and completing it is refused) and the wallet is forfeited whole, so nothing comes
    back to a terminated line when the reservation would have been settled or timed out."""
    from sqlalchemy.ext.asyncio import AsyncSession

    from simcharge.ledger.service import expire_pending_transfers
    from simcharge.lifecycle.service import Policy, sweep

    h = await new_holder(db)
    key = await api_key(db, *ALL)
    body = {"amount": {"amount": 2, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}
    r = await post(client, "/reserveBalance", body, key, "ReserveBalance_Create")
    assert r.status_code == 201
    assert await totals(db, h.line.wallet_account_id) == (1800, 200)
    now = utcnow()

    async def frozen_long_ago(s: AsyncSession) -> None:
        line = await s.get(Line, h.line.id)
        assert line is not None
        line.state, line.state_changed_at = LineState.frozen.value, now - timedelta(days=366)

    await db.run(frozen_long_ago)
    await sweep(db, Policy.of(settings), now=now)
    assert await totals(db, h.line.wallet_account_id) == (0, 0)
    got = await client.get(f"{BASE}/reserveBalance/{r.json()['id']}", headers=key)
    assert got.json()["status"] == "cancelled"
    late = await client.patch(f"{BASE}/reserveBalance/{r.json()['id']}", headers=key,
                              json={"status": "completed", "reason": "call rated"})
    assert late.status_code == 409
    assert await db.run(expire_pending_transfers) == 0
    assert await totals(db, h.line.wallet_account_id) == (0, 0)
    await assert_ledger_balanced(db)


async def test_the_history_of_a_line_holds_every_action(
    client: httpx.AsyncClient, db: Database
) -> None:
    giver, receiver = await new_holder(db), await new_holder(db)
    key = await api_key(db, *ALL)
    await post(client, "/topupBalance", {
        "amount": {"amount": 1, "units": "USD"}, "usageType": "monetary",
        "bucket": {"id": str(giver.line.wallet_account_id)},
        "partyAccount": {"id": str(giver.account_id)}}, key)
    await post(client, "/transferBalance", transfer_body(
        giver, receiver, "monetary", {"amount": 5, "units": "USD"},
        str(giver.line.wallet_account_id)), key)
    r = await client.get(f"{BASE}/balanceActionHistory",
                         params={"logicalResource.id": giver.line.msisdn}, headers=key)
    assert_response(r, "/balanceActionHistory")
    kinds = [(h["@baseType"], h["receiverLogicalResource"]["id"]) for h in r.json()]
    assert kinds == [("TransferBalance", receiver.line.msisdn),
                     ("TopupBalance", giver.line.msisdn)]
    one = await client.get(f"{BASE}/balanceActionHistory/{r.json()[0]['id']}", headers=key)
    assert_response(one, "/balanceActionHistory/{id}")
    filtered = await client.get(f"{BASE}/balanceActionHistory", headers=key, params={
        "logicalResource.id": giver.line.msisdn, "@baseType": "TopupBalance"})
    assert len(filtered.json()) == 1
    missing = await client.get(f"{BASE}/balanceActionHistory/nope", headers=key)
    assert missing.status_code == 404
