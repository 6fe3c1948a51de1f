"""TMF654 edges found in review: each test states the requirement and, briefly, what was wrong
before it was fixed."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, select, update

from simcharge.backoffice.models import Adjustment, AuditEntry
from simcharge.backoffice.money import applied_alone
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.lines.models import Line, LineState
from simcharge.tmf654.models import BalanceAction
from tests.tmf654.helpers import (
    BASE,
    Holder,
    api_key,
    assert_response,
    assert_valid,
    new_holder,
    totals,
    written,
)

ALL = ("balance:read", "balance:write", "balance:adjust")


def transfer_body(giver: Holder, receiver: Holder, usage: str, amount: dict[str, Any],
                  bucket: str) -> dict[str, Any]:
    return {"reason": "gift", "channel": {"id": "crm", "name": "crm"},
            "logicalResource": [{"id": giver.line.msisdn}],
            "receiverLogicalResource": {"id": receiver.line.msisdn},
            "amount": amount, "usageType": usage, "bucket": {"id": bucket},
            "receiverBucket": {"id": "new"}, "receiverBucketUsageType": usage}


def wallet_body(h: Holder, amount: float = 2) -> dict[str, Any]:
    return {"amount": {"amount": amount, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}


def adjust_body(h: Holder, amount: float) -> dict[str, Any]:
    return {"amount": {"amount": amount, "units": "USD"}, "usageType": "monetary",
            "reason": "goodwill", "bucket": {"id": str(h.line.wallet_account_id)}}


# --- adjustments: four-eyes, audit, terminated lines -----------------------------------------


async def test_an_api_key_cannot_adjust_past_the_four_eyes_threshold(
    client: httpx.AsyncClient, db: Database
) -> None:
    """An API key may not ask for an adjustment that needs a second person's approval (403
    `adjustment-needs-a-person`; 20.00 USD per customer per 24 h), through TMF654 as in the back
    office. Before, `adjustBalance` posted 10,000.00 USD at once, no second person."""
    h = await new_holder(db, wallet=0)
    key = await api_key(db, "balance:adjust")
    before = await written(db)
    r = await client.post(f"{BASE}/adjustBalance", headers=key, json=adjust_body(h, 10000))
    assert r.status_code == 403, r.text
    assert (r.json()["code"], r.json()["field"]) == ("adjustment-needs-a-person", "amount")
    assert_response(r, "/adjustBalance", "post")
    assert await written(db) == before


async def test_tmf_adjustments_count_toward_the_customers_24h_total(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Adjustments made through TMF654 add up with the back office's over the rolling 24 h (an
    `adjustments` row, applied, nobody else approving): 15 + 10 USD is over the 20 USD
    threshold, though each is under it. Before, they were not counted: any number of small
    ones passed, and the back office's total did not see them."""
    h = await new_holder(db, wallet=0)
    key = await api_key(db, "balance:adjust")
    first = await client.post(f"{BASE}/adjustBalance", headers=key, json=adjust_body(h, 15))
    assert first.status_code == 201, first.text
    async with db.read() as s:
        line = await s.get(Line, h.line.id)
        assert line is not None
        assert await applied_alone(s, line, "USD", utcnow()) == 1500
        row = await s.get(Adjustment, uuid.UUID(first.json()["id"]))
        assert row is not None and row.requested_by.startswith("apikey:")
    second = await client.post(f"{BASE}/adjustBalance", headers=key, json=adjust_body(h, -10))
    assert second.status_code == 403, second.text
    assert second.json()["code"] == "adjustment-needs-a-person"
    assert await totals(db, h.line.wallet_account_id) == (1500, 0)


async def test_a_tmf_adjustment_is_in_the_audit_log(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A staff correction of a balance is an audit entry (`adjustment.apply`, by the API key,
    on the line), written in the same transaction as the adjustment. Before, it went only to
    the structlog stream."""
    h = await new_holder(db, wallet=0)
    key = await api_key(db, "balance:adjust")
    r = await client.post(f"{BASE}/adjustBalance", headers=key, json=adjust_body(h, 1))
    assert r.status_code == 201, r.text
    async with db.read() as s:
        entries = (await s.execute(select(AuditEntry).where(
            AuditEntry.target_id == str(h.line.id)))).scalars().all()
    assert [(e.action, e.actor.split(":")[0]) for e in entries] == [
        ("adjustment.apply", "apikey")]
    assert entries[0].details["balance_action"] == r.json()["id"]


async def test_adjusting_a_terminated_lines_wallet_up_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A terminated line takes no credit (409 `line-not-in-service`), as top-ups and transfers
    refuse it. Before, an adjustment credited it: money on a closed line nobody can use."""
    h = await new_holder(db, wallet=0, state=LineState.terminated)
    key = await api_key(db, *ALL)
    r = await client.post(f"{BASE}/adjustBalance", headers=key, json=adjust_body(h, 5))
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "line-not-in-service"
    assert await totals(db, h.line.wallet_account_id) == (0, 0)


# --- top-ups ---------------------------------------------------------------------------------


async def test_top_up_money_naming_a_data_bucket_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    """`bucket.id` names an account of one unit and `usageType` another: 400 naming the field,
    nothing written (as adjust, reserve and transfer). Before, money named at the data bucket
    went to the wallet (201): another account than the one named."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    before = await written(db)
    r = await client.post(f"{BASE}/topupBalance", headers=key, json={
        **wallet_body(h, 5), "bucket": {"id": str(h.data_bucket)}})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "usageType"
    assert await written(db) == before


async def test_top_up_data_naming_the_wallet_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Data named at the wallet is refused (400, `usageType`). Before, a new data bucket was
    opened instead."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    before = await written(db)
    r = await client.post(f"{BASE}/topupBalance", headers=key, json={
        "amount": {"amount": 5, "units": "MB"}, "usageType": "data",
        "bucket": {"id": str(h.line.wallet_account_id)},
        "partyAccount": {"id": str(h.account_id)}})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "usageType"
    assert await written(db) == before


async def test_a_new_bucket_ends_exactly_when_asked(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A new bucket's end is `validFor.endDateTime` as asked, never earlier. Before, it was
    rounded to whole days: 1.4 days ahead became 1, and the bucket expired ~10 h early."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    end = (utcnow() + timedelta(days=1.4)).replace(microsecond=0)
    r = await client.post(f"{BASE}/topupBalance", headers=key, json={
        "amount": {"amount": 1, "units": "GB"}, "usageType": "data", "bucket": {"id": "new"},
        "partyAccount": {"id": str(h.account_id)}, "logicalResource": [{"id": h.line.msisdn}],
        "validFor": {"endDateTime": end.isoformat().replace("+00:00", "Z")}})
    assert r.status_code == 201, r.text
    b = await client.get(f"{BASE}/bucket/{r.json()['bucket']['id']}", headers=key)
    got = datetime.fromisoformat(b.json()["validFor"]["endDateTime"].replace("Z", "+00:00"))
    assert got == end, (got, end)


# --- lists -----------------------------------------------------------------------------------


async def test_history_of_the_receiver_shows_the_transfer_it_received(
    client: httpx.AsyncClient, db: Database
) -> None:
    """`balanceActionHistory` is every action that changed a line's balance, transfers it
    received included. Before, only actions whose giver was the line were listed."""
    giver, receiver = await new_holder(db), await new_holder(db, wallet=0)
    key = await api_key(db, *ALL)
    r = await client.post(f"{BASE}/transferBalance", headers=key, json=transfer_body(
        giver, receiver, "monetary", {"amount": 5, "units": "USD"},
        str(giver.line.wallet_account_id)))
    assert r.status_code == 201, r.text
    hist = await client.get(f"{BASE}/balanceActionHistory", headers=key,
                            params={"logicalResource.id": receiver.line.msisdn})
    assert_response(hist, "/balanceActionHistory")
    assert [x["id"] for x in hist.json()] == [r.json()["id"]]
    assert hist.json()[0]["receiverLogicalResource"]["id"] == receiver.line.msisdn
    filtered = await client.get(f"{BASE}/balanceActionHistory", headers=key, params={
        "logicalResource.id": receiver.line.msisdn, "@baseType": "TransferBalance"})
    assert filtered.headers["X-Total-Count"] == "1"


async def test_sort_and_filter_operators_are_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Only equality on the resource's attributes is supported: `sort=`, an unknown attribute
    or a TMF630 operator (`x.gt=`, `x>=`) is 400 naming the parameter. Before, each was read as
    equality on a member no item has: 200 with an empty list."""
    h = await new_holder(db)
    key = await api_key(db, "balance:read")
    line = {"logicalResource.id": h.line.msisdn}
    for path, name in (("/bucket", "sort"), ("/bucket", "remainingValue.amount.gt"),
                       ("/bucket", "remainingValue.amount>"), ("/bucket", "colour"),
                       ("/topupBalance", "sort"), ("/balanceActionHistory", "amount.amount.lt"),
                       ("/accumulatedBalance", "usageType")):
        r = await client.get(f"{BASE}{path}", headers=key, params={**line, name: "1"})
        assert r.status_code == 400, (path, name, r.status_code)
        assert (r.json()["code"], r.json()["field"]) == ("bad-request", name)
        assert_valid("Error", r.json())
    r = await client.get(f"{BASE}/bucket", headers=key, params={**line, "usageType": "data"})
    assert r.headers["X-Total-Count"] == "1"


async def test_action_lists_count_and_page_beyond_5000(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Lists are counted and paged in the database: 5001 top-ups read `X-Total-Count: 5001`
    and the oldest is on the last page. Before, at most 5000 rows were read, then paged in
    memory."""
    h = await new_holder(db)
    key = await api_key(db, "balance:read")
    now = utcnow()
    rows = [dict(id=uuid.uuid4(), kind="topup", status="completed", line_id=h.line.id,
                 usage_type="monetary", unit="USD", amount=1, fee=0,
                 account_id=h.line.wallet_account_id, request={}, actor="apikey:x",
                 requested_at=now - timedelta(seconds=i), confirmed_at=now)
            for i in range(5001)]
    await db.run(lambda s: s.execute(insert(BalanceAction), rows))
    for path in ("/topupBalance", "/balanceActionHistory"):
        r = await client.get(f"{BASE}{path}", headers=key, params={
            "logicalResource.id": h.line.msisdn, "offset": 5000, "fields": "status"})
        assert r.status_code == 200
        assert (r.headers["X-Total-Count"], r.headers["X-Result-Count"]) == ("5001", "1")
        assert r.json()[0]["id"] == str(rows[-1]["id"])


async def test_an_offset_past_any_integer_is_an_empty_page_not_a_500(
    client: httpx.AsyncClient, db: Database
) -> None:
    """`offset` beyond PostgreSQL's 64-bit integers (a security review, round 15): an empty
    page with the total, as any offset past the end; with attribute filters too."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    r = await client.post(f"{BASE}/topupBalance", headers=key, json=wallet_body(h, 5))
    assert r.status_code == 201, r.text
    for extra in ({}, {"status": "completed"}):
        for path in ("/topupBalance", "/balanceActionHistory", "/bucket"):
            r = await client.get(f"{BASE}{path}", headers=key, params={
                "logicalResource.id": h.line.msisdn, "offset": 2**63, "fields": "id", **extra})
            assert r.status_code == 200, (path, r.text)
            assert r.json() == [] and r.headers["X-Result-Count"] == "0", path


# --- reservations ----------------------------------------------------------------------------


async def test_a_line_past_its_validity_cannot_reserve(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A line whose validity has ended reserves nothing (409 `line-not-in-service`), though the
    sweep has not yet put it in grace — as transfers and charging read it. Before, the
    reservation was made."""
    h = await new_holder(db)
    await db.run(lambda s: s.execute(update(Line).where(Line.id == h.line.id).values(
        validity_end=utcnow() - timedelta(hours=1))))
    key = await api_key(db, *ALL)
    r = await client.post(f"{BASE}/reserveBalance", headers=key, json=wallet_body(h))
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "line-not-in-service"
    assert await totals(db, h.line.wallet_account_id) == (2000, 0)


async def test_cancelling_a_timed_out_reservation_answers_as_done(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A reservation past its timeout reads `cancelled`; cancelling it (DELETE or PATCH) answers
    as done, and the sweep still releases it. Before, 409 `reservation-not-open`: a client's
    cancel that raced the timeout was told it failed."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    end = (utcnow() + timedelta(minutes=5)).isoformat()
    r = await client.post(f"{BASE}/reserveBalance", headers=key, json={
        **wallet_body(h), "validFor": {"endDateTime": end}})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    clock.freeze(utcnow() + timedelta(minutes=6))
    d = await client.delete(f"{BASE}/reserveBalance/{rid}", headers=key)
    assert d.status_code == 204, d.text
    p = await client.patch(f"{BASE}/reserveBalance/{rid}", headers=key,
                           json={"status": "cancelled", "reason": "hung up"})
    assert p.status_code == 200, p.text
    assert p.json()["status"] == "cancelled"
    c = await client.patch(f"{BASE}/reserveBalance/{rid}", headers=key,
                           json={"status": "completed", "reason": "rated"})
    assert c.status_code == 409 and c.json()["code"] == "reservation-not-open"


async def test_a_partly_completed_reservation_shows_what_was_charged(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A reservation completed with a smaller `amount` shows the amount charged, in the PATCH
    answer and every GET after. Before, it still showed the amount held."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    r = await client.post(f"{BASE}/reserveBalance", headers=key, json=wallet_body(h))
    assert r.status_code == 201
    p = await client.patch(f"{BASE}/reserveBalance/{r.json()['id']}", headers=key, json={
        "status": "completed", "reason": "rated", "amount": {"amount": 1.5, "units": "USD"}})
    assert p.status_code == 200
    assert await totals(db, h.line.wallet_account_id) == (1850, 0)
    assert p.json()["amount"] == {"amount": 1.5, "units": "USD"}
    got = await client.get(f"{BASE}/reserveBalance/{r.json()['id']}", headers=key)
    assert got.json()["amount"] == {"amount": 1.5, "units": "USD"}


async def test_a_reservation_shows_when_it_times_out(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A reservation shows its timeout in `validFor.endDateTime` (the default hour when none was
    asked). Before, it carried only an echo of what the client sent: none without `validFor`."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    r = await client.post(f"{BASE}/reserveBalance", headers=key, json=wallet_body(h))
    assert r.status_code == 201
    assert_valid("ReserveBalance", r.json())
    end = datetime.fromisoformat(r.json()["validFor"]["endDateTime"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < end - utcnow() <= timedelta(hours=1)


# --- errors ----------------------------------------------------------------------------------


async def test_an_unknown_receiver_is_named_by_its_field(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A number that is not ours is refused naming the request's field
    (`receiverLogicalResource.id`). Before, `field: msisdn`, a name the request does not have:
    the giver's number could not be told from the receiver's."""
    giver, receiver = await new_holder(db), await new_holder(db)
    key = await api_key(db, *ALL)
    body = transfer_body(giver, receiver, "monetary", {"amount": 1, "units": "USD"},
                         str(giver.line.wallet_account_id))
    body["receiverLogicalResource"] = {"id": "+14155550000"}
    r = await client.post(f"{BASE}/transferBalance", headers=key, json=body)
    assert r.status_code == 400
    assert r.json()["field"] == "receiverLogicalResource.id", r.json()
    listed = await client.get(f"{BASE}/bucket", headers=key,
                              params={"logicalResource.id": "+14155550000"})
    assert listed.status_code == 404 and listed.json()["field"] == "logicalResource.id"


async def test_a_method_the_resource_lacks_is_a_tmf_error(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A method a TMF654 path does not take is 405 as a TMF `Error` (with `Allow`). Before, the
    router's plain problem answered it (no `code`, no `reason`)."""
    key = await api_key(db, *ALL)
    for method, path in (("PUT", f"/topupBalance/{uuid.uuid4()}"), ("DELETE", "/bucket"),
                         ("POST", f"/bucket/{uuid.uuid4()}")):
        r = await client.request(method, f"{BASE}{path}", headers=key, json={})
        assert r.status_code == 405, (method, path, r.status_code)
        assert_valid("Error", r.json())
        assert r.json()["code"] == "method-not-allowed"
        assert "GET" in r.headers["Allow"]


async def test_a_lone_surrogate_is_bad_input_not_a_500(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A JSON string or key holding a lone surrogate (`"\\ud800"`, which Python's JSON reads but
    no database or answer can carry) is refused before anything is written, as a NUL is (the
    middleware's validation problem, naming the field). Before, the top-up was committed, then
    rendering the answer failed: a 500 after the money moved (and again on every retry)."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    nul = await client.post(f"{BASE}/topupBalance", headers=key,
                            json={**wallet_body(h), "description": "a\u0000b"})
    for member, field in (('"description": "a\\ud800b"', "description"),
                          ('"reason": "\\udfff"', "reason"),
                          ('"channel": {"\\ud800x": "crm"}', "channel.?x")):
        raw = ('{"amount": {"amount": 1, "units": "USD"}, "usageType": "monetary", '
               f'"bucket": {{"id": "{h.line.wallet_account_id}"}}, '
               f'"partyAccount": {{"id": "{h.account_id}"}}, {member}}}')
        r = await client.post(f"{BASE}/topupBalance", headers={
            **key, "Content-Type": "application/json"}, content=raw.encode())
        assert r.status_code == nul.status_code, (field, r.status_code, r.text)
        assert r.json()["type"] == nul.json()["type"]
        assert r.json()["field"] == field, r.json()
    assert await totals(db, h.line.wallet_account_id) == (2000, 0)
    # A pair is one character (here 😀): taken.
    raw = ('{"amount": {"amount": 1, "units": "USD"}, "usageType": "monetary", '
           f'"bucket": {{"id": "{h.line.wallet_account_id}"}}, '
           f'"partyAccount": {{"id": "{h.account_id}"}}, "description": "\\ud83d\\ude00"}}')
    r = await client.post(f"{BASE}/topupBalance", headers={
        **key, "Content-Type": "application/json"}, content=raw.encode())
    assert r.status_code == 201, r.text
    assert r.json()["description"] == "\U0001f600"
    async with db.read() as s:
        assert (await s.execute(select(func.count()).select_from(BalanceAction).where(
            BalanceAction.line_id == h.line.id))).scalar_one() == 1


async def test_input_refused_before_the_route_is_a_tmf_error(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A NUL (or a lone surrogate) in a TMF654 request is refused by the middleware before any
    route runs; the answer is still TMF's `Error` with 400 (TMF654 lists no 422), naming the
    field. Before, it was the JSON API's problem document with 422."""
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    for member in ('"description": "a\\u0000b"', '"description": "a\\ud800b"'):
        raw = ('{"amount": {"amount": 1, "units": "USD"}, "usageType": "monetary", '
               f'"bucket": {{"id": "{h.line.wallet_account_id}"}}, '
               f'"partyAccount": {{"id": "{h.account_id}"}}, {member}}}')
        r = await client.post(f"{BASE}/topupBalance", headers={
            **key, "Content-Type": "application/json"}, content=raw.encode())
        assert r.status_code == 400, r.text
        assert_valid("Error", r.json())
        assert (r.json()["status"], r.json()["field"]) == ("400", "description")
    r = await client.get(f"{BASE}/bucket?description=%00", headers=key)
    assert r.status_code == 400 and r.json()["@type"] == "Error", r.text
    assert await totals(db, h.line.wallet_account_id) == (2000, 0)
