"""A line's next holder does not read what its previous holder did with it (thirteenth round's
review, finding 1). A line belongs to its number: when its holder closes their account it is
detached with its balance, and whoever holds the SIM adds it again with an SMS code. Before, the
new holder's `GET /me/lines/{id}/transfers` and the portal's transfer page listed the previous
holder's gifts — their receivers' numbers, amounts and times. Now both list what was given
since the line was attached (`lines.attached_at`). The daily count stays the line's (decision:
closing an account and adding the line again must not reset its limit)."""

from __future__ import annotations

import csv
import io

import httpx
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Line
from simcharge.lines.service import credit_wallet
from tests.conftest import last_sms_code
from tests.orders.helpers import Payer, idem, new_payer

PASSWORD = "correct horse battery"


async def _give(
    client: httpx.AsyncClient, giver: Payer, line: Line, to: str, amount: int, reason: str
) -> None:
    r = await client.post(
        f"/api/v1/me/lines/{line.id}/transfers",
        json={"to": to, "usage_type": "monetary", "amount": amount, "reason": reason},
        headers={**giver.auth, **idem()},
    )
    assert r.status_code == 201, r.text


async def _take_over(client: httpx.AsyncClient, deliver, old: Payer, new: Payer) -> None:
    """`old` closes their account; `new`, holding the SIM, adds the line with its SMS code."""
    r = await client.post("/api/v1/me/close", json={"password": PASSWORD}, headers=old.auth)
    assert r.status_code == 200, r.text
    r = await client.post("/api/v1/me/lines", json={"msisdn": old.line.msisdn}, headers=new.auth)
    assert r.status_code == 202, r.text
    await deliver()
    code = last_sms_code(old.line.msisdn)
    r = await client.post(
        "/api/v1/me/lines/verify", json={"msisdn": old.line.msisdn, "code": code},
        headers=new.auth,
    )
    assert r.status_code == 200, r.text


async def _records_of(client: httpx.AsyncClient, holder: Payer, msisdn: str) -> list[list[str]]:
    """The rows of `holder`'s records CSV about `msisdn`, and the same of the user center."""
    client.cookies.set("sc_session", holder.token)
    try:
        csv_page = await client.get("/account/records.csv")
        center = await client.get("/account")
    finally:
        client.cookies.clear()
    assert csv_page.status_code == 200 and center.status_code == 200
    rows = [row for row in csv.reader(io.StringIO(csv_page.text)) if msisdn in row]
    if not rows:
        assert "rent for March" not in center.text
    return rows


async def test_the_next_holder_lists_only_their_own_gifts(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver
) -> None:
    x, friend, y, other = [await new_payer(db, settings) for _ in range(4)]
    await db.run(lambda s: credit_wallet(s, x.line, 5000, source=f"t:{x.line.id}"))
    await _give(client, x, x.line, friend.line.msisdn, 500, "rent for March")
    url = f"/api/v1/me/lines/{x.line.id}/transfers"
    assert [t["to_msisdn"] for t in (await client.get(url, headers=x.auth)).json()] == [
        friend.line.msisdn
    ]

    await _take_over(client, deliver, x, y)
    async with db.read() as s:
        line = (await s.execute(select(Line).where(Line.id == x.line.id))).scalar_one()
    assert line.account_id == y.account_id and line.attached_at is not None

    seen = await client.get(url, headers=y.auth)
    assert seen.status_code == 200 and seen.json() == []
    client.cookies.set("sc_session", y.token)
    try:
        page = await client.get(f"/account/lines/{x.line.id}/transfer")
    finally:
        client.cookies.clear()
    assert page.status_code == 200
    assert friend.line.msisdn not in page.text and "rent for March" not in page.text
    # Nor the records, the user center's latest activity or their CSV: the line's history
    # there starts when Y attached it (its credit and X's gift are X's).
    assert await _records_of(client, y, x.line.msisdn) == []

    # The new holder's own gift is listed; the daily count is still the line's.
    await _give(client, y, x.line, other.line.msisdn, 300, "thanks")
    listed = (await client.get(url, headers=y.auth)).json()
    assert [t["to_msisdn"] for t in listed] == [other.line.msisdn]
    terms = (await client.get(url + "/terms", headers=y.auth)).json()
    assert terms["used_today"] == 2
    # Y's records of the line: their own gift and its fee, nothing of X's.
    mine = await _records_of(client, y, x.line.msisdn)
    assert sorted(row[3] for row in mine) == ["-16", "-300"]


async def test_a_line_attached_at_creation_and_detached_on_closure(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    x = await new_payer(db, settings)
    async with db.read() as s:
        line = await s.get(Line, x.line.id)
        assert line is not None and line.attached_at is not None
    r = await client.post("/api/v1/me/close", json={"password": PASSWORD}, headers=x.auth)
    assert r.status_code == 200, r.text
    async with db.read() as s:
        line = await s.get(Line, x.line.id)
        assert line is not None
        assert line.account_id is None and line.attached_at is None
