"""A customer gives credit or data from their own line to another number (the portal's call)."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from simcharge.tmf654.models import BalanceAction
from simcharge.worker.models import OutboxJob
from tests.factories import create_line
from tests.orders.helpers import Payer, assert_ledger_balanced, idem, new_payer
from tests.tmf654.helpers import MB, totals, written


async def funded(db: Database, settings: Settings) -> Payer:
    payer = await new_payer(db, settings)

    async def fill(s: AsyncSession) -> None:
        await credit_wallet(s, payer.line, 2000, source=f"test:{payer.line.id}")
        await grant_units(s, payer.line, [UnitGrant("DATA_B", 300 * MB, 10),
                                          UnitGrant("DATA_B", 300 * MB, 20)],
                          source=f"test:{payer.line.id}")

    await db.run(fill)
    return payer


async def test_i_give_credit_to_another_number_once(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me, friend = await funded(db, settings), await new_payer(db, settings)
    url = f"/api/v1/me/lines/{me.line.id}/transfers"
    terms = await client.get(f"{url}/terms", headers=me.auth)
    assert terms.status_code == 200
    assert terms.json()["fee_fixed"]["minor"] == 10 and terms.json()["fee_percent"] == "2"
    assert terms.json()["used_today"] == 0
    headers = {**me.auth, **idem()}
    body = {"to": friend.line.msisdn, "usage_type": "monetary", "amount": 500}
    r = await client.post(url, json=body, headers=headers)
    assert r.status_code == 201, r.text
    out = r.json()
    assert (out["amount"], out["fee"]["minor"], out["to_msisdn"]) == (500, 20, friend.line.msisdn)
    again = await client.post(url, json=body, headers=headers)
    assert again.json()["id"] == out["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert await totals(db, me.line.wallet_account_id) == (2000 - 520, 0)
    assert await totals(db, friend.line.wallet_account_id) == (500, 0)
    changed = await client.post(url, json={**body, "amount": 600}, headers=headers)
    assert changed.status_code == 422
    assert changed.json()["type"].endswith("/idempotency-key-reused")
    listed = await client.get(url, headers=me.auth)
    assert [t["id"] for t in listed.json()] == [out["id"]]
    assert (await client.get(f"{url}/terms", headers=me.auth)).json()["used_today"] == 1
    async with db.read() as s:
        jobs = (await s.execute(select(OutboxJob.payload).where(
            OutboxJob.dedupe_key == f"transfer:{out['id']}"))).scalars().all()
    assert [j["account_id"] for j in jobs] == [str(friend.account_id)]
    await assert_ledger_balanced(db)


async def test_a_key_used_from_another_of_my_lines_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The line is part of the request: the same key and body from my other line gave nothing
    and must not answer with the first line's transfer."""
    me, friend = await funded(db, settings), await new_payer(db, settings)

    async def second_line(s: AsyncSession) -> Line:
        line = await create_line(s, account_id=me.account_id)
        await credit_wallet(s, line, 2000, source=f"test:{line.id}")
        return line

    other = await db.run(second_line)
    headers = {**me.auth, **idem()}
    body = {"to": friend.line.msisdn, "usage_type": "monetary", "amount": 500}
    first = await client.post(f"/api/v1/me/lines/{me.line.id}/transfers", json=body,
                              headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(f"/api/v1/me/lines/{me.line.id}/transfers", json=body,
                              headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    r = await client.post(f"/api/v1/me/lines/{other.id}/transfers", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("/idempotency-key-reused")
    assert r.json()["field"] == "Idempotency-Key"
    assert "Idempotent-Replayed" not in r.headers
    assert await totals(db, other.wallet_account_id) == (2000, 0)
    assert await totals(db, me.line.wallet_account_id) == (2000 - 520, 0)
    assert await totals(db, friend.line.wallet_account_id) == (500, 0)
    async with db.read() as s:
        actions = (await s.execute(select(BalanceAction.line_id))).scalars().all()
    assert actions == [me.line.id]
    listed = await client.get(f"/api/v1/me/lines/{other.id}/transfers", headers=me.auth)
    assert listed.json() == []


async def test_data_comes_from_the_bucket_that_ends_first(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me, friend = await funded(db, settings), await new_payer(db, settings)
    r = await client.post(f"/api/v1/me/lines/{me.line.id}/transfers", headers={**me.auth, **idem()},
                          json={"to": friend.line.msisdn, "usage_type": "data", "amount": 200})
    assert r.status_code == 201, r.text
    assert r.json()["amount"] == 200 * MB and r.json()["fee"]["minor"] == 10
    assert r.json()["receiver_bucket_id"]
    too_much = await client.post(f"/api/v1/me/lines/{me.line.id}/transfers",
                                 headers={**me.auth, **idem()},
                                 json={"to": friend.line.msisdn, "usage_type": "data",
                                       "amount": 400})
    assert too_much.status_code == 409
    assert too_much.json()["type"].endswith("/insufficient-balance")


async def test_only_my_own_lines_and_good_input(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me, stranger = await funded(db, settings), await funded(db, settings)
    body = {"to": me.line.msisdn, "usage_type": "monetary", "amount": 500}
    r = await client.post(f"/api/v1/me/lines/{stranger.line.id}/transfers", json=body,
                          headers={**me.auth, **idem()})
    assert r.status_code == 404 and r.json()["field"] == "line_id"
    r = await client.get(f"/api/v1/me/lines/{stranger.line.id}/transfers", headers=me.auth)
    assert r.status_code == 404
    url = f"/api/v1/me/lines/{me.line.id}/transfers"
    r = await client.post(url, json=body, headers=me.auth)
    assert r.status_code == 422 and r.json()["field"] == "Idempotency-Key"
    r = await client.post(url, json={**body, "to": stranger.line.msisdn, "amount": -5},
                          headers={**me.auth, **idem()})
    assert r.status_code == 422 and r.json()["field"] == "amount"
    r = await client.post(url, json={**body, "to": "+14155559999"}, headers={**me.auth, **idem()})
    assert r.status_code == 404 and r.json()["field"] == "to"
    r = await client.post(url, json=body, headers={**me.auth, **idem()})
    assert r.status_code == 422  # to myself
    r = await client.post(url, json={**body, "to": stranger.line.msisdn})
    assert r.status_code == 401
    assert await totals(db, me.line.wallet_account_id) == (2000, 0)
    assert await totals(db, stranger.line.wallet_account_id) == (2000, 0)


async def test_a_day_allows_only_so_many_transfers(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me, friend = await funded(db, settings), await new_payer(db, settings)
    url = f"/api/v1/me/lines/{me.line.id}/transfers"
    body = {"to": friend.line.msisdn, "usage_type": "monetary", "amount": 100}
    for _ in range(settings.balance_transfer_daily_count):
        assert (await client.post(url, json=body, headers={**me.auth, **idem()})).status_code == 201
    r = await client.post(url, json=body, headers={**me.auth, **idem()})
    assert r.status_code == 409 and r.json()["type"].endswith("/transfer-limit-exceeded")


async def test_the_money_limits_are_said_in_money(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me, friend = await funded(db, settings), await new_payer(db, settings)
    url = f"/api/v1/me/lines/{me.line.id}/transfers"
    body = {"to": friend.line.msisdn, "usage_type": "monetary", "amount": 6000}
    r = await client.post(url, json=body, headers={**me.auth, **idem()})
    assert r.status_code == 409
    assert r.json()["detail"] == "A transfer of money is between 1.00 and 50.00 USD."
    assert await totals(db, me.line.wallet_account_id) == (2000, 0)


async def test_an_amount_no_account_can_hold_is_bad_input(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """2^63 messages (or 2^63 / 2^20 MB: as many bytes) had no upper bound and reached the
    database: a 500. More than the ledger's `MAX_AMOUNT` in ledger units is a 422 on `amount`."""
    me, friend = await funded(db, settings), await new_payer(db, settings)

    async def texts(s: AsyncSession) -> None:
        await grant_units(s, me.line, [UnitGrant("SMS", 100, 30)], source=f"test-sms:{me.line.id}")

    await db.run(texts)
    before = await written(db)
    url = f"/api/v1/me/lines/{me.line.id}/transfers"
    for usage, amount in (("sms", 2**63), ("data", 2**43),
                          ("voice", 2**63 // 60 + 1), ("monetary", 2**63)):
        r = await client.post(url, headers={**me.auth, **idem()}, json={
            "to": friend.line.msisdn, "usage_type": usage, "amount": amount})
        assert r.status_code == 422, (usage, amount, r.text)
        assert r.json()["field"] == "amount", r.json()
        assert r.json()["type"].endswith("/validation-error")
    assert await written(db) == before
