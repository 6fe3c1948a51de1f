"""Transfer terms that state every limit; `reserveBalance` and `validFor.startDateTime`.

What was wrong:

- `test_the_api_terms_state_every_limit_a_transfer_is_refused_for`: the previous round added a
  least data and voice transfer and a most SMS transfer (`SIMCHARGE_BALANCE_TRANSFER_MIN_DATA_MB`,
  `…_MIN_VOICE_MINUTES`, `…_MAX_SMS`), but `GET /api/v1/me/lines/{id}/transfers/terms` did not
  say them: a customer learnt of them only by being refused.
- `test_the_portal_terms_state_every_limit_and_a_refusal_names_the_same_figure`: the transfer
  page said no SMS maximum and no data or voice minimum; and a refusal for a unit limit wrote
  the limit as the service's raw number ("At most 1536 MB of data per transfer.", "At most
  1500 minutes") while the terms wrote it with `kit.units` ("1.5 GB", "1,500 min"): not the
  figure the customer was shown. The review page did not say the limits either.
- `test_a_reservation_refuses_a_start`: `reserveBalance` stored and echoed
  `validFor.startDateTime`, in the POST answer and every GET, though a reservation holds from
  when it is made (only the end, its timeout, was applied).
- `test_a_reservation_stored_with_a_start_no_longer_shows_it`: rows written before that
  refusal still carry the start they were sent; GET showed it.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.units import units_text
from simcharge.lines.service import UnitGrant, grant_units
from simcharge.tmf654.models import BalanceAction
from tests.orders.helpers import idem
from tests.portal.helpers import new_customer, sign_in
from tests.tmf654.helpers import (
    BASE,
    MB,
    api_key,
    assert_response,
    assert_valid,
    new_holder,
    totals,
    written,
)

LIMITS = {
    "balance_transfer_min_data_mb": 2,
    "balance_transfer_max_data_mb": 1536,
    "balance_transfer_min_voice_minutes": 2,
    "balance_transfer_max_voice_minutes": 1500,
    "balance_transfer_max_sms": 1200,
}
"""Figures whose `kit.units` text is not the raw number: 1.5 GB, 1,500 min, 1,200 SMS."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=LIMITS)


async def _holding(db: Database, line: Any) -> None:
    """More of each unit than any limit allows, so that a limit, not the balance, refuses."""

    async def run(s: AsyncSession) -> None:
        await grant_units(s, line, [UnitGrant("VOICE_S", 1600 * 60, 30, ()),
                                    UnitGrant("DATA_B", 2048 * MB, 30, ()),
                                    UnitGrant("SMS", 1300, 30, ())], source=f"test:{line.id}")

    await db.run(run)


OVER = [
    # (usage type, amount breaking a limit, the terms' member, the API's words)
    ("data", 1, "min_data_mb", "At least 2 MB of data"),
    ("data", 1537, "max_data_mb", "At most 1536 MB of data"),
    ("voice", 1, "min_voice_minutes", "At least 2 minutes"),
    ("voice", 1501, "max_voice_minutes", "At most 1500 minutes"),
    ("sms", 1201, "max_sms", "At most 1200 messages"),
]


async def test_the_api_terms_state_every_limit_a_transfer_is_refused_for(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    await _holding(db, me.line)
    auth = {"Authorization": f"Bearer {me.token}"}
    url = f"/api/v1/me/lines/{me.line.id}/transfers"
    terms = (await client.get(f"{url}/terms", headers=auth)).json()
    assert {k: terms[k] for k in ("min_data_mb", "max_data_mb", "min_voice_minutes",
                                  "max_voice_minutes", "max_sms")} == {
        "min_data_mb": 2, "max_data_mb": 1536, "min_voice_minutes": 2,
        "max_voice_minutes": 1500, "max_sms": 1200}
    assert (terms["min_amount"]["minor"], terms["max_amount"]["minor"]) == (100, 5000)
    assert terms["per_day"] == 5
    before = await written(db)
    for what, amount, member, said in OVER:
        r = await client.post(url, json={"to": friend.line.msisdn, "usage_type": what,
                                         "amount": amount}, headers={**auth, **idem()})
        assert r.status_code == 409, r.text
        problem = r.json()
        assert (problem["type"], problem["field"]) == ("/problems/transfer-limit-exceeded",
                                                       "amount")
        # The figure the terms gave, in the terms' unit.
        assert said in problem["detail"] and f" {terms[member]} " in said, problem
    assert await written(db) == before
    # Just within each limit: given.
    for what, amount in (("data", 2), ("voice", 2), ("sms", 1200), ("voice", 1500)):
        r = await client.post(url, json={"to": friend.line.msisdn, "usage_type": what,
                                         "amount": amount}, headers={**auth, **idem()})
        assert r.status_code == 201, r.text


def _section(html: str, testid: str) -> str:
    found = re.search(rf'data-testid="{testid}">(.*?)</dl>', html, re.S)
    assert found, html[:2000]
    return found.group(1)


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
async def test_the_portal_terms_state_every_limit_and_a_refusal_names_the_same_figure(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str
) -> None:
    me = await new_customer(db, settings, language=language)
    friend = await new_customer(db, settings, with_units=False)
    await _holding(db, me.line)
    sign_in(client, me)
    client.cookies.set("sc_lang", language)
    page = f"/account/lines/{me.line.id}/transfer"
    r = await client.get(page)
    assert r.status_code == 200, r.text
    terms = _section(r.text, "terms")

    def shown(amount: int, unit: str) -> str:
        return units_text(language, amount, unit)

    figures = {
        "min_data_mb": shown(2 * MB, "DATA_B"), "max_data_mb": shown(1536 * MB, "DATA_B"),
        "min_voice_minutes": shown(120, "VOICE_S"),
        "max_voice_minutes": shown(1500 * 60, "VOICE_S"), "max_sms": shown(1200, "SMS"),
    }
    if language == "en":
        assert figures == {"min_data_mb": "2 MB", "max_data_mb": "1.5 GB",
                           "min_voice_minutes": "2 min", "max_voice_minutes": "1,500 min",
                           "max_sms": "1,200 SMS"}
    for figure in figures.values():
        assert figure in terms, (figure, terms)
    before = await written(db)
    for what, amount, member, _ in OVER:
        refused = await client.get(page + "/review", params={
            "to": friend.line.msisdn, "what": what, "amount": str(amount)})
        assert refused.status_code == 409, refused.text
        error = re.search(r'id="e-amount"[^>]*>(.*?)<', refused.text, re.S)
        assert error and figures[member] in error.group(1), (member, error and error.group(0))
        # The refused form still shows the same terms.
        assert figures[member] in _section(refused.text, "terms")
    assert await written(db) == before
    # The review of a transfer that is within the limits repeats the limits of its kind.
    ok = await client.get(page + "/review", params={
        "to": friend.line.msisdn, "what": "data", "amount": "100"})
    assert ok.status_code == 200, ok.text
    limits = _section(ok.text, "limits")
    assert figures["min_data_mb"] in limits and figures["max_data_mb"] in limits


async def test_the_portal_says_each_money_limit_in_the_wallet_s_currency(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Money too: the least, the most and the fee, in the line's currency, and the review's."""
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    page = f"/account/lines/{me.line.id}/transfer"
    terms = _section((await client.get(page)).text, "terms")
    assert "$1.00 to $50.00 per transfer" in terms and "plus $0.10" in terms
    ok = await client.get(page + "/review", params={
        "to": friend.line.msisdn, "what": "monetary", "amount": "5"})
    assert ok.status_code == 200, ok.text
    assert "$1.00 to $50.00 per transfer" in _section(ok.text, "limits")


# --- reserveBalance: validFor.startDateTime ----------------------------------------------------

ALL = ("balance:read", "balance:write", "balance:adjust")


def _reservation(h: Any) -> dict[str, Any]:
    return {"amount": {"amount": 2, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}


def _data_reservation(h: Any) -> dict[str, Any]:
    return {"amount": {"amount": 5, "units": "MB"}, "usageType": "data",
            "bucket": {"id": str(h.data_bucket)}, "partyAccount": {"id": str(h.account_id)}}


async def test_a_reservation_refuses_a_start(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    now = utcnow()
    end = (now.replace(microsecond=0) + timedelta(minutes=30)).isoformat()
    for body in (_reservation(h), _data_reservation(h)):
        for validity in ({"startDateTime": now.isoformat(), "endDateTime": end},
                         {"startDateTime": now.isoformat()},
                         {"startDateTime": "2020-01-01T00:00:00Z", "endDateTime": end},
                         {"startDateTime": "not a time"}):
            sent = {**body, "validFor": validity}
            if validity["startDateTime"] != "not a time":
                assert_valid("ReserveBalance_Create", sent)
            before = await written(db)
            r = await client.post(f"{BASE}/reserveBalance", headers={**key, **idem()}, json=sent)
            assert r.status_code == 400, r.text
            assert (r.json()["code"], r.json()["field"]) == (
                "validation-error", "validFor.startDateTime"), r.json()
            assert_response(r, "/reserveBalance", "post")
            assert await written(db) == before
    # The end alone is the timeout, applied and shown as the ledger has it.
    r = await client.post(f"{BASE}/reserveBalance", headers=key,
                          json={**_reservation(h), "validFor": {"endDateTime": end}})
    assert r.status_code == 201, r.text
    assert_response(r, "/reserveBalance", "post")
    assert set(r.json()["validFor"]) == {"endDateTime"}
    assert await totals(db, h.line.wallet_account_id) == (1800, 200)


async def test_a_reservation_stored_with_a_start_no_longer_shows_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    key = await api_key(db, *ALL)
    r = await client.post(f"{BASE}/reserveBalance", headers=key, json=_reservation(h))
    assert r.status_code == 201, r.text
    made = r.json()
    aid = uuid.UUID(made["id"])

    async def backdate(s: AsyncSession) -> None:
        # As a row written before the refusal is: the request with the start it was sent.
        row = await s.get(BalanceAction, aid)
        assert row is not None
        await s.execute(update(BalanceAction).where(BalanceAction.id == aid).values(
            request={**row.request, "validFor": {"startDateTime": "2020-01-01T00:00:00Z"}}))

    await db.run(backdate)
    one = await client.get(f"{BASE}/reserveBalance/{aid}", headers=key)
    assert_response(one, "/reserveBalance/{id}")
    assert one.json()["validFor"] == made["validFor"]
    assert "startDateTime" not in one.json()["validFor"]
    listed = await client.get(f"{BASE}/reserveBalance", headers=key,
                              params={"logicalResource.id": h.line.msisdn})
    assert_response(listed, "/reserveBalance")
    assert [x["validFor"] for x in listed.json()] == [made["validFor"]]
