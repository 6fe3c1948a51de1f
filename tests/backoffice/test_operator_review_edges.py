"""The back office as an operator uses it (review round 7): edges found wrong and fixed.

- The top-ups report put a refund on the day its order was *paid*, so a refund made in March of
  a January payment changed January's figures after finance had closed January, and March's
  figures did not show the money that left in March. A refund now counts on the UTC day the
  provider confirmed it (`refunds.completed_at`), the day its money left the provider's clearing
  account in the ledger; the report still reconciles with the ledger, period by period.
- With refunds on their own day a day's net can be negative; the chart drew such a bar with a
  negative height (no bar). It now goes down from a zero line.
- A staff member could neither see their own sessions nor end the others (a browser left signed
  in elsewhere, a token given to a tool): the home page now lists their open sessions, ends one
  of them, or signs out everywhere (the API too), audited.
- An adjustment of a bucket past its end was posted (units nobody could use, or taken from what
  was expiry's), also when approved after the bucket's end; it is now refused, as TMF654 does.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice.models import Adjustment, AuditEntry, StaffSession
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Bucket
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    idem,
    new_payer,
    pay_at_sandbox,
    place,
    run_worker,
)

DAY = timedelta(days=1)


async def _credited(client: httpx.AsyncClient, settings: Settings, payer: Payer,
                    **how: Any) -> dict[str, Any]:
    order = await place(client, payer, **how)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return order


async def _refunds_left_clearing(db: Database, currency: str, since: Any, until: Any) -> int:
    """What refunds took out of the providers' clearing accounts between two instants, read from
    the ledger's own tables."""
    async with db.read() as s:
        clearing = select(LedgerAccount.id).where(
            LedgerAccount.key.like("clearing:%"), LedgerAccount.unit == currency
        )
        total = (await s.execute(
            select(func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
                LedgerTransfer.code == "refund",
                LedgerTransfer.kind.in_(("posted", "post_pending")),
                LedgerTransfer.credit_account_id.in_(clearing),
                LedgerTransfer.created_at >= since,
                LedgerTransfer.created_at < until,
            )
        )).scalar_one()
        return int(total)


async def _topups(client: httpx.AsyncClient, staff: Any, first: Any, last: Any) -> list[Any]:
    r = await client.get(
        "/api/v1/admin/reports/topups",
        headers=staff.auth,
        params={"from": first.isoformat(), "to": last.isoformat()},
    )
    assert r.status_code == 200, r.text
    return list(r.json())


async def test_a_refund_counts_on_the_day_it_completed_not_the_day_the_order_was_paid(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Was: `refunded` was grouped by the order's `paid_at`, so a refund confirmed 40 days
    after the payment appeared in the payment's (closed) day and not at all in the period it
    happened. Now: the payment's day keeps its money taken and no refund; the refund's day has a
    row of its own with the refund (and no top-up), each period agreeing with what the ledger
    moved out of clearing in it."""
    paid_on = utcnow().replace(hour=10, minute=0, second=0, microsecond=0)
    clock.freeze(paid_on)
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="starter-10")

    clock.advance(days=40)
    refunded_on = utcnow()
    finance = await new_staff(db, settings, "finance")
    r = await client.post(
        f"/api/v1/admin/orders/{order['id']}/refunds",
        headers={**finance.auth, **idem()},
        json={"amount": 400, "reason": "test"},
    )
    assert r.status_code == 202, r.text
    await run_worker(app, db, settings)  # the provider confirms, on the refund's day

    january = await _topups(client, finance, paid_on.date(), paid_on.date())
    [row] = january
    assert (row["topups"], row["amount"], row["refunded"], row["net"]) == (
        1, order["total"]["minor"], 0, order["total"]["minor"]
    ), row
    march = await _topups(client, finance, refunded_on.date(), refunded_on.date())
    [row] = march
    assert row["day"] == refunded_on.date().isoformat()
    assert (row["method"], row["currency"]) == ("sandbox", "USD")
    assert (row["topups"], row["amount"], row["refunded"], row["net"]) == (0, 0, 400, -400), row
    # Period by period, the report is what the ledger moved.
    for first, rows in ((paid_on, january), (refunded_on, march)):
        start = first.replace(hour=0)
        left = await _refunds_left_clearing(db, "USD", start, start + DAY)
        assert sum(x["refunded"] for x in rows) == left
    # Both days at once: one row each, nothing counted twice.
    both = await _topups(client, finance, paid_on.date(), refunded_on.date())
    assert sum(x["refunded"] for x in both) == 400
    assert sum(x["net"] for x in both) == order["total"]["minor"] - 400
    await assert_ledger_balanced(db)


async def test_a_day_of_refunds_only_is_drawn_below_the_zero_line(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Was: the chart of net top-ups drew every bar up from the bottom, scaled by the largest
    value: a day whose net is negative (refunds only, now that refunds count on their own day)
    got a negative `height` (an SVG error: no bar) or, when every day was negative, a full bar as
    if it were the best day. Now such a day is a bar going down from a zero line."""
    paid_on = utcnow().replace(hour=10, minute=0, second=0, microsecond=0)
    clock.freeze(paid_on)
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="starter-10")
    clock.advance(days=3)
    finance = await new_staff(db, settings, "finance")
    r = await client.post(
        f"/api/v1/admin/orders/{order['id']}/refunds",
        headers={**finance.auth, **idem()},
        json={"amount": 400, "reason": "test"},
    )
    assert r.status_code == 202, r.text
    await run_worker(app, db, settings)
    await web_sign_in(client, finance)
    refund_day = utcnow().date().isoformat()
    for first in (paid_on.date().isoformat(), refund_day):
        page = await client.get("/backoffice/reports", params={"from": first, "to": refund_day})
        assert page.status_code == 200, page.text
        net_chart = page.text[page.text.index("<svg"):page.text.index("</svg>")]
        assert 'height="-' not in net_chart
        heights = {
            day: float(h)
            for h, day in re.findall(
                r'<rect [^>]*height="([0-9.]+)"[^>]*><title>([0-9-]+):', net_chart
            )
        }
        zero = float(re.search(r'<line [^>]*y1="([0-9.]+)"', net_chart).group(1))  # type: ignore[union-attr]
        below = re.search(
            rf'<rect [^>]*y="([0-9.]+)"[^>]*fill="#b3261e"><title>{refund_day}:', net_chart
        )
        assert below is not None, "the refund's day is a bar of its own, below zero"
        assert float(below.group(1)) == zero and heights[refund_day] > 0


async def _sessions(db: Database, staff_id: Any) -> dict[str, Any]:
    """A staff member's sessions by user agent (the helpers' token says `pytest`)."""
    async with db.read() as s:
        rows = (await s.execute(
            select(StaffSession).where(StaffSession.staff_id == staff_id)
        )).scalars()
        return {row.user_agent or "": row for row in rows}


async def _audited(db: Database, action: str, staff_id: Any) -> list[AuditEntry]:
    async with db.read() as s:
        return list((await s.execute(
            select(AuditEntry).where(AuditEntry.action == action,
                                     AuditEntry.staff_id == staff_id)
        )).scalars())


async def test_a_staff_member_sees_their_sessions_and_ends_another_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Was: nowhere to see where one is signed in, nor to end a session left open elsewhere
    (a token for a tool, another browser). Now: the home page lists the member's open sessions
    (this one marked) and ends one of them — theirs only — audited, keeping this one."""
    agent = await new_staff(db, settings, "agent")
    colleague = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    sessions = await _sessions(db, agent.id)
    token_session = sessions["pytest"]
    [browser] = [row for ua, row in sessions.items() if ua != "pytest"]

    home = await client.get("/backoffice")
    assert home.status_code == 200
    listed = re.findall(r'name="session" value="([0-9a-f-]+)"', home.text)
    assert listed == [str(token_session.id)], "the other session, with its End button"
    assert "192.0.2.1" in home.text and "this device" in home.text

    # Another's session, or a value that is no session: nothing changes, never a 500.
    theirs = (await _sessions(db, colleague.id))["pytest"]
    r = await client.post("/backoffice/logout", data={"csrf": csrf, "session": str(theirs.id)})
    assert r.status_code == 303 and r.headers["location"].startswith("/backoffice?")
    r = await client.post("/backoffice/logout", data={"csrf": csrf, "session": "nope"})
    assert r.status_code == 422 and "session" in r.text
    assert (await client.get("/api/v1/admin/tickets", headers=colleague.auth)).status_code == 200
    assert (await client.get("/api/v1/admin/tickets", headers=agent.auth)).status_code == 200
    assert await _audited(db, "staff.session_ended", agent.id) == []

    r = await client.post("/backoffice/logout",
                          data={"csrf": csrf, "session": str(token_session.id)})
    assert r.status_code == 303 and r.headers["location"] == "/backoffice?done=session"
    assert (await client.get("/api/v1/admin/tickets", headers=agent.auth)).status_code == 401
    home = await client.get("/backoffice")
    assert home.status_code == 200, "this session goes on"
    assert re.findall(r'name="session" value="([0-9a-f-]+)"', home.text) == []
    [entry] = await _audited(db, "staff.session_ended", agent.id)
    assert entry.details == {"session": str(token_session.id)}
    after = await _sessions(db, agent.id)
    assert after[browser.user_agent or ""].revoked_at is None


async def test_sign_out_everywhere_ends_every_session_of_the_member_only(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Was: signing out ended only the session that asked; a browser or token left elsewhere
    stayed signed in until it timed out. Now: "Sign out everywhere" (page) and
    `DELETE /admin/session?everywhere=true` (API) end all the member's sessions — not a
    colleague's — and the audit entry says how many."""
    agent = await new_staff(db, settings, "agent")
    colleague = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    r = await client.post("/backoffice/logout", data={"csrf": csrf, "everywhere": "1"})
    assert r.status_code == 303 and r.headers["location"] == "/backoffice/login"
    assert (await client.get("/api/v1/admin/tickets", headers=agent.auth)).status_code == 401
    r = await client.get("/backoffice")
    assert r.status_code == 303 and r.headers["location"] == "/backoffice/login"
    assert all(row.revoked_at is not None for row in (await _sessions(db, agent.id)).values())
    [entry] = [e for e in await _audited(db, "staff.logout", agent.id)
               if e.details.get("everywhere")]
    assert entry.details["ended"] == 2

    # Through the API: a token ends the browser too.
    await web_sign_in(client, colleague)
    r = await client.delete("/api/v1/admin/session", headers=colleague.auth,
                            params={"everywhere": "true"})
    assert r.status_code == 204
    r = await client.get("/backoffice")
    assert r.status_code == 303 and r.headers["location"] == "/backoffice/login"
    assert all(row.revoked_at is not None
               for row in (await _sessions(db, colleague.id)).values())


async def _sms_bucket(db: Database, line_id: Any) -> Bucket:
    async with db.read() as s:
        bucket = (await s.execute(
            select(Bucket).where(Bucket.line_id == line_id, Bucket.unit == "SMS")
        )).scalars().first()
        assert bucket is not None
        return bucket


async def _expire(db: Database, bucket_id: Any) -> None:
    async def run(s: AsyncSession) -> None:
        bucket = await s.get(Bucket, bucket_id)
        assert bucket is not None
        bucket.expires_at = utcnow() - timedelta(minutes=1)

    await db.run(run)


async def test_an_expired_bucket_is_neither_adjusted_nor_approved(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Was: the back office adjusted a bucket past its end — units credited to it reached no
    one (an expired bucket gives nothing, and the sweep that already ran never looks at it
    again), a debit took units that were expiry's; an adjustment asked while the bucket was live
    was posted on approval after its end. TMF654 refuses the same ("The bucket has expired.").
    Now the request and the approval are refused (422, field `target`) and nothing moves; the
    waiting request can still be rejected; the customer page offers only live buckets."""
    payer = await new_payer(db, settings)
    await _credited(client, settings, payer, plan="starter-10")
    bucket = await _sms_bucket(db, payer.line.id)
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    url = f"/api/v1/admin/lines/{payer.line.id}/adjustments"
    # Above the SMS threshold: waits for a second person, the bucket still live.
    r = await client.post(url, headers={**agent.auth, **idem()},
                          json={"target": str(bucket.id), "amount": 500, "reason": "outage"})
    assert r.json()["state"] == "awaiting_approval", r.text
    waiting = r.json()["id"]
    await _expire(db, bucket.id)

    async def moved() -> int:
        async with db.read() as s:
            return int((await s.execute(
                select(func.count()).select_from(LedgerTransfer).where(
                    LedgerTransfer.code == "adjustment")
            )).scalar_one())

    for amount in (5, -1):
        r = await client.post(url, headers={**agent.auth, **idem()},
                              json={"target": str(bucket.id), "amount": amount, "reason": "x"})
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "target", r.text
    r = await client.post(f"/api/v1/admin/adjustments/{waiting}/decision",
                          headers=finance.auth, json={"approve": True})
    assert r.status_code == 422 and r.json()["field"] == "target", r.text
    async with db.read() as s:
        adjustments = list((await s.execute(select(Adjustment))).scalars())
    assert [(a.state, a.transfer_id) for a in adjustments] == [("awaiting_approval", None)]
    assert await moved() == 0
    r = await client.post(f"/api/v1/admin/adjustments/{waiting}/decision",
                          headers=finance.auth, json={"approve": False})
    assert r.json()["state"] == "rejected", r.text
    # The page: only the live buckets to choose from; a form naming the expired one is refused.
    csrf = await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert page.status_code == 200
    assert f'<option value="{bucket.id}"' not in page.text
    r = await client.post(f"/backoffice/lines/{payer.line.id}/adjust", data={
        "csrf": csrf, "target": str(bucket.id), "amount": "5", "reason": "x", "idem": "k1"})
    assert r.status_code == 422 and "The bucket has expired." in r.text
    assert await moved() == 0
    await assert_ledger_balanced(db)
