"""A suspended line in the portal (the sixteenth round's review): a top-up is accepted and
credited while a line is suspended, but does not bring it back — so the user center no longer
pushes one ("Top up this line" is not on its card; the card's warning links customer service),
the top-up page says it beside the suspended line, the review says it above "Pay now" (which
still orders), and the transfer page says why the line gives nothing and who resumes it. A
gift's review says nothing of the receiver's state (not the payer's to know). Every test runs
on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Line, LineState
from simcharge.orders.models import Order
from tests.backoffice.helpers import new_staff
from tests.factories import create_line
from tests.portal.helpers import Customer, new_customer, review_form, sign_in

pytestmark = pytest.mark.usefixtures("shop")

WARNING = (
    "This line is suspended: a top-up is credited but the line stays unusable until customer "
    "service resumes it."
)
TRANSFER_SAYS = "This line is suspended: contact customer service to resume it."


async def _suspend(client: httpx.AsyncClient, db: Database, settings: Settings,
                   line_id: uuid.UUID) -> None:  # fmt: skip
    """As customer service does: the admin API, by a staff member."""
    agent = await new_staff(db, settings, "agent")
    r = await client.post(
        f"/api/v1/admin/lines/{line_id}/suspend",
        json={"reason": "SIM stolen"},
        headers=agent.auth,
    )
    assert (r.status_code, r.json()["state"]) == (200, "suspended"), r.text


async def _second_line(db: Database, customer: Customer) -> Line:
    return await db.run(
        lambda s: create_line(s, account_id=customer.account_id, state=LineState.active)
    )


def _card_of(html: str, msisdn: str) -> str:
    cards = html.split('<section class="card" aria-labelledby="line-')[1:]
    [found] = [c for c in (c.split("</section>")[0] for c in cards) if msisdn in c]
    return found


def _main(html: str) -> str:
    return html.split("<main", 1)[1].split("</main>")[0]


def _query(
    line_id: uuid.UUID | None, msisdn: str = "", plan: str = "traveller-20"
) -> dict[str, str]:
    return {"line": str(line_id) if line_id else "other", "msisdn": msisdn, "plan": plan,
            "method": "sandbox"}  # fmt: skip


async def _orders(db: Database, account_id: uuid.UUID) -> list[Order]:
    async with db.read() as s:
        rows = await s.execute(select(Order).where(Order.account_id == account_id))
        return list(rows.scalars())


async def test_the_user_center_offers_no_top_up_for_a_suspended_line(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    other = await _second_line(db, me)
    await _suspend(client, db, settings, me.line.id)
    sign_in(client, me)
    r = await client.get("/account")
    assert r.status_code == 200, r.text

    gone = _card_of(r.text, me.line.msisdn)
    assert "Suspended" in gone
    assert "This line is suspended: it cannot be used. Contact us to resume it." in gone
    assert "Top up this line" not in gone and "/account/topup?line=" not in gone
    assert re.search(r'data-testid="guidance">[^<]*<a href="/account/help">Customer service</a>',
                     gone), gone  # fmt: skip
    assert f"/account/records?line={me.line.id}" in gone  # its records stay a click away
    assert "/transfer" not in gone

    fine = _card_of(r.text, other.msisdn)
    assert f'<a class="btn" href="/account/topup?line={other.id}">Top up this line</a>' in fine


async def test_the_top_up_page_says_it_beside_the_suspended_line(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    other = await _second_line(db, me)
    sign_in(client, me)
    # Nothing suspended: nothing said.
    r = await client.get("/account/topup", params={"line": str(me.line.id)})
    assert r.status_code == 200 and WARNING not in r.text

    await _suspend(client, db, settings, me.line.id)
    for chosen in (me.line.id, other.id):  # said whichever line is chosen, by the line it is of
        r = await client.get("/account/topup", params={"line": str(chosen)})
        assert r.status_code == 200, r.text
        main = _main(r.text)
        assert main.count(WARNING) == 1
        choices = main.split('<label class="choice">')
        label = next(c for c in choices if me.line.msisdn in c)
        assert WARNING in label and "Suspended" in label
        radio = re.search(rf'<input type="radio" name="line" value="{me.line.id}"[^>]*>', label)
        assert radio and 'aria-describedby="w-line-' in radio.group(0)
        described = re.search(r'aria-describedby="(w-line-\d+)"', radio.group(0))
        assert described and f'id="{described.group(1)}"' in label
        assert WARNING not in next(c for c in choices if other.msisdn in c)

    # Shown again with an error (an unknown package): still said.
    r = await client.get("/account/topup/review", params=_query(me.line.id, plan="no-such"))
    assert r.status_code >= 400 and "1. Which line?" in r.text
    assert WARNING in r.text


async def test_the_review_warns_and_pay_now_still_orders(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    await _suspend(client, db, settings, me.line.id)
    sign_in(client, me)
    review = await client.get("/account/topup/review", params=_query(me.line.id))
    assert review.status_code == 200, review.text
    warning = re.search(r'<div class="alert warn" role="status" data-testid="suspended">(.*?)</div>',
                        review.text, re.S)  # fmt: skip
    assert warning, review.text[:3000]
    assert WARNING in warning.group(1) and 'href="/account/help"' in warning.group(1)
    assert "Pay $" in review.text  # accepted, as README says: warned, not refused

    r = await client.post("/account/topup", data={**review_form(review.text), **_query(me.line.id)})
    assert r.status_code == 303, r.text
    [order] = await _orders(db, me.account_id)
    assert order.line_id == me.line.id
    async with db.read() as s:
        line = await s.get(Line, me.line.id, populate_existing=True)
        assert line is not None and line.state == LineState.suspended

    # By its number instead of its id: still the payer's own line, still said.
    r = await client.get("/account/topup/review", params=_query(None, me.line.msisdn))
    assert r.status_code == 200 and WARNING in r.text
    number = _main(r.text).split("<dd>", 2)[1].split("</dd>")[0]
    assert "gift" not in number


async def test_no_warning_for_an_active_line_nor_a_gift_to_a_suspended_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    stranger = await new_customer(db, settings)
    await _suspend(client, db, settings, stranger.line.id)
    sign_in(client, me)
    r = await client.get("/account/topup/review", params=_query(me.line.id))
    assert r.status_code == 200 and WARNING not in r.text
    assert 'data-testid="suspended"' not in r.text
    # A gift: the receiver's state is not the payer's to know (the order is accepted as before).
    r = await client.get("/account/topup/review", params=_query(None, stranger.line.msisdn))
    assert r.status_code == 200, r.text
    assert "suspended" not in _main(r.text).lower()


async def test_the_transfer_page_says_a_suspended_line_is_resumed_by_customer_service(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    await _suspend(client, db, settings, me.line.id)
    sign_in(client, me)
    r = await client.get(f"/account/lines/{me.line.id}/transfer")
    assert r.status_code == 200, r.text
    main = _main(r.text)
    said = re.search(r'data-testid="not-active">(.*?)</p>', main, re.S)
    assert said and TRANSFER_SAYS in said.group(1) and 'href="/account/help"' in said.group(1)
    assert "Top it up first" not in main
    assert 'action="/account/lines/' not in main  # no form to give from it

    # Any other state that is not active keeps its own words.
    async def frozen(s: AsyncSession) -> None:
        line = await s.get(Line, me.line.id)
        assert line is not None
        line.state = LineState.frozen.value

    await db.run(frozen)
    main = _main((await client.get(f"/account/lines/{me.line.id}/transfer")).text)
    assert "Only an active line can give balance. Top it up first." in main
    assert TRANSFER_SAYS not in main


async def test_a_notice_from_before_the_suspension_leads_to_customer_service(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A "line about to freeze" notice stored before the line was suspended offered "Top up
    this line": a top-up would not bring it back. Now it leads to customer service; the same
    notice of a line still active keeps its top-up."""
    from simcharge.kit.clock import utcnow
    from simcharge.notifications.models import Notice

    me = await new_customer(db, settings)
    other = await _second_line(db, me)

    async def notices(s: AsyncSession) -> None:
        for line in (me.line, other):
            s.add(Notice(
                account_id=me.account_id, template="line.freeze_warning", line_id=line.id,
                params={"msisdn": line.msisdn, "days_left": 7,
                        "freeze_on": utcnow().isoformat()},
            ))  # fmt: skip

    await db.run(notices)
    await _suspend(client, db, settings, me.line.id)
    sign_in(client, me)
    page = await client.get("/account")
    assert page.status_code == 200
    assert f'href="/account/topup?line={me.line.id}"' not in page.text
    assert f'href="/account/topup?line={other.id}"' in page.text
    assert 'href="/account/help"' in page.text
