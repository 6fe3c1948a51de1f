"""A bucket credited after its grant (fourteenth round): an adjustment (or a transfer in) left
it with more than it was granted, and the customer page showed "Remaining 15 SMS, Granted
10 SMS" unexplained. The page and the API now show what was credited since the grant."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Bucket
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import fulfilled, idem, new_payer


def _bucket_row(html: str, line_id: object, unit_word: str) -> str:
    table = html.split(f'id="line-{line_id}"', 1)[1].split("</table>", 1)[0]
    [row] = [r for r in re.findall(r"<tr>(.*?)</tr>", table, re.S) if unit_word in r]
    return row


async def test_what_was_credited_after_the_grant_is_shown(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    await fulfilled(client, settings, payer)
    async with db.read() as s:
        bucket = (await s.execute(select(Bucket).where(
            Bucket.line_id == payer.line.id, Bucket.unit == "SMS"))).scalars().first()
    assert bucket is not None
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert "credited since" not in _bucket_row(page.text, payer.line.id, "SMS")

    def api_bucket(view: dict[str, object]) -> dict[str, object]:
        [line] = view["lines"]  # type: ignore[misc]
        return next(b for u in line["balances"]["units"] for b in u["buckets"]
                    if b["id"] == str(bucket.id))

    view = (await client.get(f"/api/v1/admin/customers/{payer.account_id}",
                             headers=agent.auth)).json()
    assert api_bucket(view)["credited"] == 0
    r = await client.post(f"/api/v1/admin/lines/{payer.line.id}/adjustments",
                          headers={**agent.auth, **idem()},
                          json={"target": str(bucket.id), "amount": 5, "reason": "sorry"})
    assert r.json()["state"] == "applied", r.text
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    row = _bucket_row(page.text, payer.line.id, "SMS")
    assert "+ 5 SMS credited since (an adjustment or a transfer)" in row
    view = (await client.get(f"/api/v1/admin/customers/{payer.account_id}",
                             headers=agent.auth)).json()
    got = api_bucket(view)
    assert (got["initial"], got["credited"]) == (bucket.initial_amount, 5)
    assert got["remaining"] == bucket.initial_amount + 5  # nothing used yet
    # Taken back (a negative adjustment) is not a credit: the credited figure stays what was
    # added, and what remains is below it again.
    r = await client.post(f"/api/v1/admin/lines/{payer.line.id}/adjustments",
                          headers={**agent.auth, **idem()},
                          json={"target": str(bucket.id), "amount": -3, "reason": "too much"})
    assert r.json()["state"] == "applied", r.text
    got = api_bucket((await client.get(f"/api/v1/admin/customers/{payer.account_id}",
                                       headers=agent.auth)).json())
    assert (got["credited"], got["remaining"]) == (5, bucket.initial_amount + 2)
