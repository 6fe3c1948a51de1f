"""A customer's adjustments are bounded on their view (seventeenth round), as their tickets
are: the page and the API list the latest 50 and say how many there are; all of them are a
list of their own, a page at a time (`GET /admin/customers/{id}/adjustments`, the page's "All
this customer's adjustments"), audited as `adjustment.list`."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice.models import Adjustment, AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.tmf654.helpers import Holder, new_holder


async def _adjustments(db: Database, holder: Holder, count: int, *, same_time: int = 0) -> None:
    """`count` adjustments a minute apart, oldest first; the last `same_time` at one moment (a
    page may end among them)."""
    start = utcnow() - timedelta(days=10)

    async def run(s: AsyncSession) -> None:
        # held since before them (a customer's list shows what was made since they hold the line)
        await s.execute(update(Line).where(Line.id == holder.line.id)
                        .values(attached_at=start - timedelta(days=1)))  # fmt: skip
        for i in range(count):
            at = start + timedelta(minutes=min(i, count - same_time))
            s.add(Adjustment(
                line_id=holder.line.id, ledger_account_id=holder.line.wallet_account_id,
                unit=holder.line.currency, amount=i + 1, reason=f"goodwill {i}",
                state="posted", requested_by="staff:someone", created_at=at,
            ))  # fmt: skip
        await s.flush()

    await db.run(run)


async def test_the_view_lists_the_latest_50_and_the_list_pages_through_all(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    busy = await new_holder(db)
    quiet = await new_holder(db)
    await _adjustments(db, busy, 123, same_time=5)
    await _adjustments(db, quiet, 2)
    agent = await new_staff(db, settings, "agent")

    r = await client.get(f"/api/v1/admin/customers/{busy.account_id}", headers=agent.auth)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["adjustments_total"] == 123
    amounts = [a["amount"] for a in view["adjustments"]]
    assert len(amounts) == 50
    assert set(amounts[:5]) == {119, 120, 121, 122, 123}  # the five made at one moment
    assert amounts[5:] == list(range(118, 73, -1))
    r = await client.get(f"/api/v1/admin/customers/{quiet.account_id}", headers=agent.auth)
    assert r.json()["adjustments_total"] == 2
    assert [a["amount"] for a in r.json()["adjustments"]] == [2, 1]

    # All of them, a page at a time, none twice nor missed (the first page ends among the five
    # made at one moment: the cursor is the time and the id).
    seen: list[int] = []
    params: dict[str, str] = {"limit": "3"}
    while True:
        r = await client.get(f"/api/v1/admin/customers/{busy.account_id}/adjustments",
                             headers=agent.auth, params=params)  # fmt: skip
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [a["amount"] for a in page]
        if len(page) < 3:
            break
        params = {"limit": "3", "before": page[-1]["created_at"], "before_id": page[-1]["id"]}
    assert sorted(seen) == list(range(1, 124)) and len(seen) == 123
    assert seen[5:] == list(range(118, 0, -1))

    async with db.read() as s:
        listed = (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "adjustment.list"))).scalars().all()  # fmt: skip
    assert listed and all(e.target_id == str(busy.account_id) for e in listed)


async def test_the_list_refuses_an_unknown_customer_and_bad_paging(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "agent")
    holder = await new_holder(db)
    r = await client.get(f"/api/v1/admin/customers/{uuid.uuid4()}/adjustments",
                         headers=agent.auth)  # fmt: skip
    assert r.status_code == 404 and r.json()["type"] == "/problems/customer-not-found"
    url = f"/api/v1/admin/customers/{holder.account_id}/adjustments"
    for params, field in (({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"),
                          ({"before": "yesterday"}, "before"), ({"before_id": "x"}, "before_id")):
        r = await client.get(url, headers=agent.auth, params=params)
        assert r.status_code == 422, r.text
        assert r.json()["type"] == "/problems/validation-error" and r.json()["field"] == field
    # Not signed in.
    r = await client.get(url)
    assert r.status_code == 401


async def test_the_page_shows_the_latest_50_and_links_to_all_of_them(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    busy = await new_holder(db)
    await _adjustments(db, busy, 153)
    quiet = await new_holder(db)
    await _adjustments(db, quiet, 3)
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)

    page = await client.get(f"/backoffice/customers/{busy.account_id}")
    assert page.status_code == 200
    assert page.text.count("goodwill ") == 50
    assert "goodwill 152" in page.text and "goodwill 102<" not in page.text
    assert 'data-testid="adjustments-more"' in page.text
    assert "The latest 50 of 153 adjustments." in page.text
    link = f"/backoffice/customers/{busy.account_id}/adjustments"
    assert f'href="{link}"' in page.text
    quiet_page = await client.get(f"/backoffice/customers/{quiet.account_id}")
    assert 'data-testid="adjustments-more"' not in quiet_page.text

    # All of them: 100 a page, then "Older".
    first = await client.get(link)
    assert first.status_code == 200
    assert first.text.count('data-testid="adjustment-') == 100
    assert "goodwill 152<" in first.text and "goodwill 52<" not in first.text
    older = first.text.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    second = await client.get(older)
    assert second.status_code == 200
    assert second.text.count('data-testid="adjustment-') == 53
    assert "goodwill 52<" in second.text and "goodwill 0<" in second.text
    assert 'rel="next"' not in second.text

    r = await client.get(f"/backoffice/customers/{uuid.uuid4()}/adjustments")
    assert r.status_code == 404


async def test_a_line_back_from_stock_brings_no_adjustment_of_its_previous_holder(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Adjustments follow the customer, not only the line: those made before the new holder
    attached it (amounts, reasons, notes of the previous holder's) are not on their view."""
    before = await new_holder(db)
    await _adjustments(db, before, 3)
    after = await new_holder(db)

    async def move(s: AsyncSession) -> None:  # the line back to stock, then the next holder's
        await s.execute(update(Line).where(Line.id == after.line.id).values(account_id=None))
        await s.execute(update(Line).where(Line.id == before.line.id).values(
            account_id=after.account_id, attached_at=utcnow()))  # fmt: skip
        s.add(Adjustment(
            line_id=before.line.id, ledger_account_id=before.line.wallet_account_id,
            unit=before.line.currency, amount=77, reason="the new holder's",
            state="posted", requested_by="staff:someone", created_at=utcnow() + timedelta(seconds=1),
        ))  # fmt: skip

    await db.run(move)
    agent = await new_staff(db, settings, "agent")
    r = await client.get(f"/api/v1/admin/customers/{after.account_id}", headers=agent.auth)
    assert r.status_code == 200, r.text
    assert (r.json()["adjustments_total"], [a["amount"] for a in r.json()["adjustments"]]) == (
        1, [77])
    r = await client.get(f"/api/v1/admin/customers/{after.account_id}/adjustments",
                         headers=agent.auth)  # fmt: skip
    assert [a["amount"] for a in r.json()] == [77]
