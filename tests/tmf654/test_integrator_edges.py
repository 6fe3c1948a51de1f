"""TMF654 as an integrator drives it (the integrators' review): lines not in service, hrefs from
the configured base URL, consistent errors, the OpenAPI document. Each test states the
requirement and, briefly, what was wrong before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from simcharge.auth.apikeys import (
    count_api_keys,
    create_api_key,
    key_view,
    key_views,
    parse_duration,
    rotate_api_key,
    staff_revoke_api_key,
    staff_rotate_api_key,
)
from simcharge.backoffice.audit import Actor
from simcharge.db import Database
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line, LineState
from simcharge.tmf654.models import BalanceAction
from tests.tmf654.helpers import BASE, Holder, api_key, new_holder

ALL = ("balance:read", "balance:write", "balance:adjust")


def _topup(h: Holder, amount: float = 5) -> dict[str, Any]:
    return {"amount": {"amount": amount, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}


async def _actions(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(BalanceAction))).scalar_one())


async def _line(db: Database, h: Holder) -> Line:
    async with db.read() as s:
        line = await s.get(Line, h.line.id)
        assert line is not None
        return line


# --- lines not in service --------------------------------------------------------------------


async def test_an_unsold_line_takes_no_topup_whatever_party_is_named(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: `_check_party` skipped a line without an account and `topup` refused only a
    terminated one, so any `partyAccount` credited an inventory SIM and activated it."""
    headers = await api_key(db, *ALL)
    unsold = await new_holder(db, wallet=0, state=LineState.available, owned=False)
    before = await _actions(db)
    for party in ("00000000-0000-0000-0000-000000000001", str(unsold.line.id)):
        body = {**_topup(unsold), "partyAccount": {"id": party}}
        r = await client.post(f"{BASE}/topupBalance", json=body, headers=headers)
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (
            409, "line-not-in-service", "logicalResource"), r.text
    assert await _actions(db) == before
    assert (await _line(db, unsold)).state == LineState.available.value


async def test_an_unsold_line_is_neither_adjusted_nor_reserved_nor_given_to(
    client: httpx.AsyncClient, db: Database
) -> None:
    headers = await api_key(db, *ALL)
    unsold = await new_holder(db, wallet=100, state=LineState.available, owned=False)
    giver = await new_holder(db, wallet=1000)
    wallet = {"id": str(unsold.line.wallet_account_id)}
    adjust = {"amount": {"amount": 1, "units": "USD"}, "usageType": "monetary",
              "reason": "goodwill", "bucket": wallet}
    reserve = {"amount": {"amount": 0.5, "units": "USD"}, "usageType": "monetary",
               "bucket": wallet, "partyAccount": {"id": str(giver.account_id)}}
    give = {"reason": "gift", "channel": {"id": "crm", "name": "crm"},
            "logicalResource": [{"id": giver.line.msisdn}],
            "receiverLogicalResource": {"id": unsold.line.msisdn},
            "amount": {"amount": 1, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(giver.line.wallet_account_id)},
            "receiverBucket": {"id": "new"}, "receiverBucketUsageType": "monetary"}
    before = await _actions(db)
    for path, body, field in (("adjustBalance", adjust, "bucket.id"),
                              ("reserveBalance", reserve, "bucket.id"),
                              ("transferBalance", give, "receiverLogicalResource")):
        r = await client.post(f"{BASE}/{path}", json=body, headers=headers)
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (
            409, "line-not-in-service", field), (path, r.text)
    assert await _actions(db) == before


async def test_a_frozen_line_takes_a_topup_and_comes_back_by_the_policy(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Decided: as a paid top-up in the portal (README, Lines not in service)."""
    headers = await api_key(db, *ALL)
    frozen = await new_holder(db, wallet=0, state=LineState.frozen)
    r = await client.post(f"{BASE}/topupBalance", json=_topup(frozen), headers=headers)
    assert r.status_code == 201, r.text
    assert (await _line(db, frozen)).state == LineState.active.value  # policy `topup`


async def test_a_terminated_line_takes_no_topup(client: httpx.AsyncClient, db: Database) -> None:
    headers = await api_key(db, *ALL)
    gone = await new_holder(db, wallet=0, state=LineState.terminated)
    r = await client.post(f"{BASE}/topupBalance", json=_topup(gone), headers=headers)
    assert (r.status_code, r.json()["code"]) == (409, "line-not-in-service")


# --- hrefs -----------------------------------------------------------------------------------


async def test_hrefs_and_location_come_from_the_configured_base_url(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: built from the request's Host header, which the client chooses."""
    headers = {**await api_key(db, *ALL), "Host": "evil.example"}
    h = await new_holder(db)
    r = await client.post(f"{BASE}/topupBalance", json=_topup(h), headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["href"].startswith(f"http://testserver{BASE}/topupBalance/")
    assert r.headers["location"] == r.json()["href"]
    listed = await client.get(f"{BASE}/bucket", params={"logicalResource.id": h.line.msisdn},
                              headers=headers)
    assert all(b["href"].startswith("http://testserver/") for b in listed.json())
    missing = await client.get(f"{BASE}/bucket/nope", headers=headers)
    assert missing.json()["referenceError"].startswith("http://testserver/")
    assert "evil" not in r.text + listed.text + missing.text


# --- errors ----------------------------------------------------------------------------------


async def test_an_unknown_accumulated_balance_says_so(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: code `balance-action-not-found`, reason "No such balance action."."""
    headers = await api_key(db, *ALL)
    r = await client.get(f"{BASE}/accumulatedBalance/nothing.data", headers=headers)
    assert r.status_code == 404
    assert r.json()["code"] == "accumulated-balance-not-found"
    assert r.json()["reason"] == r.json()["message"] == "No such accumulated balance."


async def test_paging_errors_name_their_parameter(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: `?limit=abc` was blamed on `offset`."""
    headers = await api_key(db, *ALL)
    h = await new_holder(db)
    for query, field in (("limit=abc", "limit"), ("offset=x", "offset"),
                         ("offset=-1", "offset"), ("limit=0", "limit")):
        name, value = query.split("=")
        r = await client.get(f"{BASE}/bucket", headers=headers,
                             params={"logicalResource.id": h.line.msisdn, name: value})
        assert (r.status_code, r.json()["field"]) == (400, field), query


async def test_a_body_that_is_not_json_is_415(client: httpx.AsyncClient, db: Database) -> None:
    """Before: 400 "body: This must be an object."."""
    headers = await api_key(db, *ALL)
    h = await new_holder(db)
    before = await _actions(db)
    import json

    raw = json.dumps(_topup(h))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        sent = {**headers, "content-type": content_type} if content_type else headers
        r = await client.post(f"{BASE}/topupBalance", content=raw, headers=sent)
        assert r.status_code == 415, (content_type, r.text)
        assert r.json()["code"] == "unsupported-media-type"
        assert r.json()["@type"] == "Error"
        assert r.headers["accept-post"] == "application/json"
    r = await client.patch(f"{BASE}/reserveBalance/x", content="{}",
                           headers={**headers, "content-type": "text/plain"})
    assert (r.status_code, r.headers["accept-patch"]) == (
        415, "application/json, application/merge-patch+json")
    ok = await client.post(f"{BASE}/topupBalance", content=raw,
                           headers={**headers, "content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 201, ok.text
    assert await _actions(db) == before + 1


async def test_an_unknown_tmf_path_is_a_tmf_error(client: httpx.AsyncClient, db: Database) -> None:
    """Before: the generic RFC 9457 problem."""
    headers = await api_key(db, *ALL)
    for method, path in (("GET", "/nothing"), ("POST", "/topupBalances"),
                         ("GET", "/bucket/a/b")):
        r = await client.request(method, f"{BASE}{path}", headers=headers, json={})
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["@type"] == "Error" and r.json()["code"] == "not-found"
        assert r.headers["content-type"].startswith("application/json")


async def test_taking_more_than_the_balance_is_insufficient_not_a_four_eyes_case(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before: −41 on a 40 wallet was 403 `adjustment-needs-a-person`."""
    headers = await api_key(db, *ALL)
    h = await new_holder(db, wallet=4000)
    body = {"amount": {"amount": -41, "units": "USD"}, "usageType": "monetary",
            "reason": "correction", "bucket": {"id": str(h.line.wallet_account_id)}}
    r = await client.post(f"{BASE}/adjustBalance", json=body, headers=headers)
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (
        409, "insufficient-balance", "amount")


async def test_the_openapi_document_lists_what_tmf654_answers(client: httpx.AsyncClient) -> None:
    """Before: a 422 for every operation, and neither the list parameters nor the headers."""
    doc = (await client.get("/openapi.json")).json()
    tmf = {p: ops for p, ops in doc["paths"].items() if p.startswith(BASE)}
    assert tmf
    for path, ops in tmf.items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (method, path)
            assert "400" in op["responses"], (method, path)
    listing = tmf[f"{BASE}/topupBalance"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"offset", "limit", "fields", "filters", "logicalResource.id"} <= names
    assert {"X-Total-Count", "X-Result-Count"} <= set(listing["responses"]["200"]["headers"])
    assert "Location" in tmf[f"{BASE}/topupBalance"]["post"]["responses"]["201"]["headers"]


# --- API keys: the admin side's helpers ------------------------------------------------------


async def test_key_views_page_and_a_revoked_key_shows_its_successor(db: Database) -> None:
    actor = Actor(name="staff:admin", permissions=frozenset())

    async def run(s: Any) -> None:
        base = await count_api_keys(s)
        old = (await create_api_key(s, "crm", ["balance:read"])).key
        rotated = await staff_rotate_api_key(s, actor, old.prefix, overlap=timedelta(hours=1))
        new = rotated.issued.key
        assert await count_api_keys(s) == base + 2
        first = await key_views(s, utcnow(), offset=0, limit=1)
        second = await key_views(s, utcnow(), offset=1, limit=1)
        assert [v.prefix for v in first + second] == [new.prefix, old.prefix]
        assert first[0].replaces == old.prefix  # its predecessor is on the next page
        assert second[0].replaced_by == new.prefix
        revoked = await staff_revoke_api_key(s, actor, old.prefix)
        view = await key_view(s, revoked, utcnow())
        assert (view.state, view.replaced_by) == ("revoked", new.prefix)

    await db.run(run)


async def test_a_lifetime_of_zero_is_refused_as_the_lifetime(db: Database) -> None:
    """Before: `--expires-in 0d` was refused as an `--expires-at` already past."""
    with pytest.raises(ValidationFailed) as refused:
        parse_duration("0d", field="expires_in")
    assert refused.value.field == "expires_in"
    assert parse_duration("0h", field="overlap") == timedelta(0)  # a rotation ending at once

    async def run(s: Any) -> None:
        key = (await create_api_key(s, "crm", ["balance:read"])).key
        assert await rotate_api_key(s, key.prefix, overlap=timedelta(0)) is not None

    await db.run(run)
