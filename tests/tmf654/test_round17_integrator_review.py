"""TMF654 findings of the seventeenth round's integrator review (a BSS integrator read the API
against the TMF654 Swagger): each test states the requirement and, briefly, what was wrong
before."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.ledger.service import MAX_AMOUNT
from tests.orders.helpers import idem
from tests.tmf654.helpers import (
    BASE,
    Holder,
    api_key,
    assert_response,
    assert_valid,
    document,
    new_holder,
    totals,
    written,
)

ALL = ("balance:read", "balance:write", "balance:adjust")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No top-up maximum in the way: a large amount is what shows a float's rounding."""
    return settings.model_copy(update={"tmf654_topup_max_minor": MAX_AMOUNT})


def _topup(h: Holder, amount: Any = 2) -> dict[str, Any]:
    return {"amount": {"amount": amount, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}


async def _reservation(client: httpx.AsyncClient, h: Holder, key: dict[str, str]) -> str:
    r = await client.post(f"{BASE}/reserveBalance", headers=key, json={
        "usageType": "monetary", "amount": {"amount": 1, "units": "USD"},
        "bucket": {"id": str(h.line.wallet_account_id)},
        "partyAccount": {"id": str(h.account_id)}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# --- 1. a repeated parameter ------------------------------------------------------------------


async def test_a_repeated_parameter_is_refused_naming_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: `logicalResource.id=A&logicalResource.id=B` answered B's buckets, and
    `usageType=data&usageType=voice` only the voice ones."""
    key = await api_key(db, *ALL)
    a, b = await new_holder(db), await new_holder(db)
    topup = await client.post(f"{BASE}/topupBalance", headers=key, json=_topup(a))
    assert topup.status_code == 201
    line = ("logicalResource.id", a.line.msisdn)
    cases = [
        ("/bucket", [line, ("logicalResource.id", b.line.msisdn)], "logicalResource.id"),
        ("/bucket", [("partyAccount.id", str(a.account_id))] * 2, "partyAccount.id"),
        ("/bucket", [line, ("usageType", "data"), ("usageType", "voice")], "usageType"),
        ("/accumulatedBalance", [line, ("limit", "1"), ("limit", "2")], "limit"),
        ("/topupBalance", [line, ("offset", "0"), ("offset", "1")], "offset"),
        ("/balanceActionHistory", [line, ("fields", "id"), ("fields", "amount")], "fields"),
        (f"/bucket/{a.line.wallet_account_id}", [("fields", "id"), ("fields", "name")],
         "fields"),
        (f"/topupBalance/{topup.json()['id']}", [("fields", "id")] * 2, "fields"),
        (f"/balanceActionHistory/{topup.json()['id']}", [("fields", "id")] * 2, "fields"),
        (f"/accumulatedBalance/{a.line.id}.monetary", [("fields", "id")] * 2, "fields"),
    ]
    for path, params, field in cases:
        r = await client.get(f"{BASE}{path}", headers=key, params=params)
        assert r.status_code == 400, (path, r.text)
        assert (r.json()["code"], r.json()["field"]) == ("repeated-parameter", field), path
        assert_valid("Error", r.json())
    # Either of several values is one parameter, as TMF630 writes it.
    r = await client.get(f"{BASE}/bucket", headers=key,
                         params=[line, ("usageType", "data,voice")])
    assert r.status_code == 200 and r.headers["X-Total-Count"] == "2"


async def test_a_repeated_parameter_without_a_key_is_401_first(
    client: httpx.AsyncClient, db: Database
) -> None:
    r = await client.get(f"{BASE}/bucket", params=[("limit", "1"), ("limit", "2")])
    assert r.status_code == 401


async def test_a_malformed_party_id_is_bad_input_and_an_unknown_one_matches_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: `partyAccount.id=x` answered 200 `[]`, as if it were a filter that matched
    nothing. An unknown MSISDN stays 404 (the list is that line's)."""
    key = await api_key(db, "balance:read")
    h = await new_holder(db)
    r = await client.get(f"{BASE}/bucket", headers=key, params={"partyAccount.id": "x"})
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (
        400, "bad-request", "partyAccount.id")
    r = await client.get(f"{BASE}/topupBalance", headers=key,
                         params={"partyAccount.id": "x", "logicalResource.id": h.line.msisdn})
    assert (r.status_code, r.json()["field"]) == (400, "partyAccount.id")
    r = await client.get(f"{BASE}/bucket", headers=key,
                         params={"partyAccount.id": str(uuid.uuid4())})
    assert (r.status_code, r.json(), r.headers["X-Total-Count"]) == (200, [], "0")
    r = await client.get(f"{BASE}/bucket", headers=key,
                         params={"logicalResource.id": "+14155550999"})
    assert (r.status_code, r.json()["field"]) == (404, "logicalResource.id")


# --- 2. the hub and the listeners ---------------------------------------------------------------


async def test_the_hub_and_the_listeners_answer_not_implemented(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: the generic 404 "No such TMF654 resource", which a BSS registering at start-up
    could not tell from a wrong base path."""
    key = await api_key(db, *ALL)
    before = await written(db)
    for method, path in (("POST", "/hub"), ("DELETE", f"/hub/{uuid.uuid4()}"),
                         ("POST", "/listener/topupBalanceCreateEvent"),
                         ("POST", "/listener/reserveBalanceFailureEvent"), ("GET", "/hub")):
        r = await client.request(method, f"{BASE}{path}", headers=key,
                                 json={"callback": "https://bss.example/listener"})
        assert r.status_code == 501, (method, path, r.text)
        body = r.json()
        assert_valid("Error", body)
        assert (body["code"], body["status"], body["@type"]) == (
            "notifications-not-supported", "501", "Error")
        assert "balanceActionHistory" in body["message"]
        assert r.headers["content-type"].startswith("application/json")
    # Without a key, too: it says nothing about anybody's balance.
    r = await client.post(f"{BASE}/hub", json={"callback": "https://bss.example/listener"})
    assert r.status_code == 501
    assert await written(db) == before
    # A path that names nothing is still 404.
    r = await client.post(f"{BASE}/hubs", headers=key, json={})
    assert (r.status_code, r.json()["code"]) == (404, "not-found")


# --- 3. HEAD, OPTIONS and `Allow` ---------------------------------------------------------------


async def test_head_is_served_where_get_is(client: httpx.AsyncClient, db: Database) -> None:
    """Before: HEAD was 405 as `application/problem+json`, and `Allow` listed it anyway."""
    key = await api_key(db, *ALL)
    h = await new_holder(db)
    line = {"logicalResource.id": h.line.msisdn}
    got = await client.get(f"{BASE}/bucket", headers=key, params=line)
    head = await client.head(f"{BASE}/bucket", headers=key, params=line)
    assert head.status_code == 200
    assert head.headers["X-Total-Count"] == got.headers["X-Total-Count"] == "3"
    assert head.headers["content-type"].startswith("application/json")
    r = await client.head(f"{BASE}/bucket/{h.line.wallet_account_id}", headers=key)
    assert r.status_code == 200
    # As GET would answer: a key, the scope and the resource are needed.
    assert (await client.head(f"{BASE}/bucket", params=line)).status_code == 401
    missing = await client.head(f"{BASE}/bucket/{uuid.uuid4()}", headers=key)
    assert missing.status_code == 404
    assert (await client.head(f"{BASE}/nothing", headers=key)).status_code == 404


async def test_every_405_is_a_tmf_error_with_a_truthful_allow(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: OPTIONS was the generic problem, and a PUT's `Allow` listed HEAD, which was
    refused, and a settled top-up's PATCH answered no `Allow` at all."""
    key = await api_key(db, *ALL)
    rid = uuid.uuid4()
    cases = [
        ("PUT", f"/topupBalance/{rid}", "GET, HEAD"),
        ("PATCH", f"/topupBalance/{rid}", "GET, HEAD"),
        ("DELETE", f"/transferBalance/{rid}", "GET, HEAD"),
        ("OPTIONS", "/bucket", "GET, HEAD"),
        ("OPTIONS", f"/reserveBalance/{rid}", "GET, HEAD, PATCH, DELETE"),
        ("PUT", "/reserveBalance", "GET, HEAD, POST"),
        ("DELETE", "/balanceActionHistory", "GET, HEAD"),
        ("HEAD", "/topupBalance/x/y", None),
    ]
    for method, path, allow in cases:
        r = await client.request(method, f"{BASE}{path}", headers=key)
        if allow is None:
            assert r.status_code == 404, (method, path)
            continue
        assert r.status_code == 405, (method, path, r.text)
        assert r.headers["Allow"] == allow, (method, path)
        assert r.headers["content-type"].startswith("application/json"), (method, path)
        assert_valid("Error", r.json())
        assert r.json()["code"] == "method-not-allowed"
        for listed in allow.split(", "):
            if listed in ("GET", "HEAD"):
                answered = await client.request(listed, f"{BASE}{path}", headers=key)
                assert answered.status_code != 405, (listed, path)


# --- 4. PATCH media types -----------------------------------------------------------------------


async def test_a_patch_is_a_merge_patch_or_plain_json_only(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: any `+json` type was read as a merge patch — a JSON Patch (a list of operations)
    too."""
    key = await api_key(db, *ALL)
    h = await new_holder(db)
    rid = await _reservation(client, h, key)
    url = f"{BASE}/reserveBalance/{rid}"
    done = json.dumps({"status": "completed", "reason": "rated"})
    for content_type in ("application/json-patch+json", "application/vnd.x+json",
                         "text/plain", "application/x-www-form-urlencoded"):
        r = await client.patch(url, content=done, headers={**key, "content-type": content_type})
        assert r.status_code == 415, (content_type, r.text)
        assert (r.json()["code"], r.json()["field"]) == ("unsupported-media-type", "Content-Type")
        assert r.headers["Accept-Patch"] == "application/json, application/merge-patch+json"
        assert r.json()["accepted"] == ["application/json", "application/merge-patch+json"]
    assert await totals(db, h.line.wallet_account_id) == (1900, 100)
    ok = await client.patch(url, content=done, headers={
        **key, "content-type": "application/merge-patch+json; charset=utf-8"})
    assert (ok.status_code, ok.json()["status"]) == (200, "completed")
    again = await client.patch(url, content=done,
                               headers={**key, "content-type": "application/json"})
    assert again.status_code == 200
    assert await totals(db, h.line.wallet_account_id) == (1900, 0)
    # A POST keeps its own: `Accept-Post` is JSON.
    r = await client.post(f"{BASE}/topupBalance", content=json.dumps(_topup(h)),
                          headers={**key, "content-type": "text/plain"})
    assert (r.status_code, r.headers["Accept-Post"]) == (415, "application/json")
    assert r.json()["accepted"] == ["application/json"]


# --- 5. a reservation's unpatchable fields ------------------------------------------------------


async def test_a_reservation_patch_naming_another_field_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: `bucket`, `validFor`, `description`… were accepted and silently not applied."""
    key = await api_key(db, *ALL)
    h = await new_holder(db)
    rid = await _reservation(client, h, key)
    url = f"{BASE}/reserveBalance/{rid}"
    before = await written(db)
    done = {"status": "completed", "reason": "rated"}
    for extra in ({"validFor": {"endDateTime": "2030-01-01T00:00:00Z"}},
                  {"bucket": {"id": str(h.data_bucket)}}, {"description": "x"},
                  {"usageType": "data"}):
        r = await client.patch(url, headers=key, json={**done, **extra})
        assert r.status_code == 400, (extra, r.text)
        assert (r.json()["code"], r.json()["field"]) == ("validation-error", next(iter(extra)))
        assert_response(r, "/reserveBalance/{id}", "patch")
    assert await written(db) == before
    got = await client.get(url, headers=key)
    assert got.json()["status"] == "created" and "description" not in got.json()
    r = await client.patch(url, headers=key,
                           json={**done, "amount": {"amount": 0.5, "units": "USD"}})
    assert (r.status_code, r.json()["amount"]["amount"]) == (200, 0.5)


# --- 6. fields= keeps what the spec requires ----------------------------------------------------


async def test_a_field_selection_keeps_the_required_attributes(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: `fields=usageType` kept only id, href and @type, and a history entry without
    `status` and `receiverLogicalResource` is no `BalanceActionHistory`."""
    key = await api_key(db, *ALL)
    h = await new_holder(db)
    made = await client.post(f"{BASE}/topupBalance", headers=key, json=_topup(h))
    aid = made.json()["id"]
    line = {"logicalResource.id": h.line.msisdn, "fields": "usageType"}
    history = await client.get(f"{BASE}/balanceActionHistory", headers=key, params=line)
    assert set(history.json()[0]) == {"id", "href", "@type", "usageType", "status",
                                      "receiverLogicalResource"}
    assert_response(history, "/balanceActionHistory")
    one = await client.get(f"{BASE}/balanceActionHistory/{aid}", headers=key,
                           params={"fields": "usageType"})
    assert_response(one, "/balanceActionHistory/{id}")
    assert set(one.json()) >= {"status", "receiverLogicalResource"}
    totals_ = await client.get(f"{BASE}/accumulatedBalance", headers=key,
                               params={**line, "fields": "id"})
    assert_response(totals_, "/accumulatedBalance")
    assert set(totals_.json()[0]) == {"id", "href", "@type", "bucket", "name", "totalBalance"}
    topup = await client.get(f"{BASE}/topupBalance/{aid}", headers=key,
                             params={"fields": "amount"})
    assert set(topup.json()) == {"id", "href", "@type", "amount", "status"}
    required = document()["definitions"]["TransferBalance"]["required"]
    assert {"reason", "channel", "logicalResource"} <= set(required)


# --- 7. money as exact decimals -----------------------------------------------------------------


async def test_money_is_written_with_its_decimal_digits(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: `90071992547409.93` USD was answered as the binary float `90071992547409.94`."""
    key = await api_key(db, *ALL)
    h = await new_holder(db, wallet=0)
    raw = ('{"amount": {"amount": 90071992547409.93, "units": "USD"}, "usageType": '
           f'"monetary", "bucket": {{"id": "{h.line.wallet_account_id}"}}, '
           f'"partyAccount": {{"id": "{h.account_id}"}}}}')
    made = await client.post(f"{BASE}/topupBalance", content=raw,
                             headers={**key, **idem(), "content-type": "application/json"})
    assert made.status_code == 201, made.text

    def exact(r: httpx.Response) -> Any:
        return json.loads(r.text, parse_float=Decimal)

    assert exact(made)["amount"]["amount"] == Decimal("90071992547409.93")
    assert '"amount":90071992547409.93' in made.text
    got = await client.get(made.headers["Location"], headers=key)
    assert exact(got)["amount"]["amount"] == Decimal("90071992547409.93")
    line = {"logicalResource.id": h.line.msisdn, "usageType": "monetary"}
    bucket = await client.get(f"{BASE}/bucket", headers=key, params=line)
    assert exact(bucket)[0]["remainingValue"]["amount"] == Decimal("90071992547409.93")
    money = {"logicalResource.id": h.line.msisdn, "name": "monetary"}
    total = await client.get(f"{BASE}/accumulatedBalance", headers=key, params=money)
    assert exact(total)[0]["totalBalance"]["amount"] == Decimal("90071992547409.93")
    assert_response(total, "/accumulatedBalance")
    # Cents as the currency writes them; a correction down keeps its sign, exactly.
    adjusted = await client.post(f"{BASE}/adjustBalance", headers=key, json={
        "amount": {"amount": -0.1, "units": "USD"}, "usageType": "monetary",
        "reason": "correction", "bucket": {"id": str(h.line.wallet_account_id)}})
    assert adjusted.status_code == 201, adjusted.text
    assert '"amount":-0.10' in adjusted.text
    total = await client.get(f"{BASE}/accumulatedBalance", headers=key, params=money)
    assert exact(total)[0]["totalBalance"]["amount"] == Decimal("90071992547409.83")


async def test_a_transfer_cost_is_exact(client: httpx.AsyncClient, db: Database) -> None:
    key = await api_key(db, *ALL)
    giver, receiver = await new_holder(db, wallet=10_000), await new_holder(db)
    r = await client.post(f"{BASE}/transferBalance", headers=key, json={
        "reason": "gift", "channel": {"id": "crm"},
        "logicalResource": [{"id": giver.line.msisdn}],
        "receiverLogicalResource": {"id": receiver.line.msisdn},
        "amount": {"amount": 10, "units": "USD"}, "usageType": "monetary",
        "bucket": {"id": str(giver.line.wallet_account_id)}, "receiverBucket": {"id": "new"},
        "receiverBucketUsageType": "monetary"})
    assert r.status_code == 201, r.text
    assert_response(r, "/transferBalance", "post")
    # 2 % + 0.10 of 10.00 (this directory's settings).
    assert json.loads(r.text, parse_float=Decimal)["transferCost"]["value"] == Decimal("0.30")


# --- 8. an adjustment's party account -----------------------------------------------------------


async def test_an_adjustment_names_its_party_account(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: `AdjustBalance` never carried `partyAccount`, though the spec defines it."""
    key = await api_key(db, *ALL)
    h = await new_holder(db)
    r = await client.post(f"{BASE}/adjustBalance", headers=key, json={
        "amount": {"amount": 1, "units": "USD"}, "usageType": "monetary", "reason": "goodwill",
        "bucket": {"id": str(h.line.wallet_account_id)}})
    assert r.status_code == 201, r.text
    assert r.json()["partyAccount"] == {"id": str(h.account_id), "@referredType": "PartyAccount"}
    assert_response(r, "/adjustBalance", "post")
    unowned = await new_holder(db, owned=False)
    r = await client.post(f"{BASE}/adjustBalance", headers=key, json={
        "amount": {"amount": 1, "units": "USD"}, "usageType": "monetary", "reason": "goodwill",
        "bucket": {"id": str(unowned.line.wallet_account_id)}})
    assert r.status_code == 201, r.text
    assert "partyAccount" not in r.json()


# --- 9. operation ids ---------------------------------------------------------------------------


async def test_the_served_operations_carry_the_spec_operation_ids(
    client: httpx.AsyncClient,
) -> None:
    doc = (await client.get("/openapi.json")).json()
    served = {(method.upper(), path.removeprefix(BASE)): op["operationId"]
              for path, ops in doc["paths"].items() if path.startswith(BASE)
              for method, op in ops.items()}
    assert served
    spec_ids = {(method.upper(), path): op["operationId"]
                for path, ops in document()["paths"].items() for method, op in ops.items()}
    for (method, path), operation_id in served.items():
        named = path.replace("{bucket_id}", "{id}").replace("{balance_id}", "{id}").replace(
            "{action_id}", "{id}")
        assert spec_ids[(method, named)] == operation_id, (method, path)
    assert served[("GET", "/bucket")] == "listBucket"
    assert served[("POST", "/topupBalance")] == "createTopupBalance"
