"""Round 13: a notice in the user center says what its e-mail says — a new sign-in's device,
address and time (in the reader's zone and language), from what the notice stored — and
where to act on it: the Security page for a security alert, the order for an order's notice,
the top-up of a line running out. A notice with nothing to act on has no link."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.notifications.service import notify
from tests.portal.helpers import new_customer, sign_in

WINTER = "2026-01-15T17:00:00+00:00"


async def _notify(
    db: Database, deliver: Any, account_id: uuid.UUID, template: str, params: dict[str, Any],
    line_id: uuid.UUID | None = None,
) -> None:
    await db.run(lambda s: notify(s, account_id=account_id, template=template, params=params,
                                  channels=["portal"], line_id=line_id))  # fmt: skip
    await deliver()


def _notices(page: str) -> list[str]:
    section = page.split('id="notices"', 1)[1].split("</section>", 1)[0]
    return section.split('data-testid="notice"')[1:]


async def test_a_new_sign_in_says_the_device_address_and_time_and_leads_to_security(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver: Any
) -> None:
    customer = await new_customer(db, settings)

    async def manila(s: AsyncSession) -> None:
        await s.execute(update(Account).where(Account.id == customer.account_id)
                        .values(time_zone="Asia/Manila"))  # fmt: skip

    await db.run(manila)
    await _notify(db, deliver, customer.account_id, "security.new_device",
                  {"device": "Firefox · Windows", "ip": "192.0.2.1", "time": WINTER})
    sign_in(client, customer)
    [notice] = _notices((await client.get("/account")).text)
    assert "New sign-in to your account" in notice
    body = notice.split('data-testid="notice-body">', 1)[1].split("</p>", 1)[0]
    assert body.startswith(
        "Someone signed in to your account from a new device: Firefox · Windows (192.0.2.1), "
        "Jan 16, 2026, 1:00\u202fAM UTC+08:00."  # the reader's zone, as the e-mail writes it
    )
    assert "If this was not you" in body
    assert "You receive this message" not in body  # the e-mail's footer is not the notice's
    assert '<a href="/account/security">Go to the Security page</a>' in notice


async def test_the_notice_is_in_the_readers_language(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver: Any
) -> None:
    customer = await new_customer(db, settings, language="es")
    await _notify(db, deliver, customer.account_id, "security.new_device",
                  {"device": "Firefox", "ip": "192.0.2.1", "time": WINTER})
    sign_in(client, customer)
    [notice] = _notices((await client.get("/account")).text)
    assert "Se ha iniciado sesión en tu cuenta desde un dispositivo nuevo: Firefox" in notice


async def test_each_notice_leads_where_its_reader_acts(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver: Any
) -> None:
    customer = await new_customer(db, settings)
    line = customer.line
    order_id = uuid.uuid4()
    await _notify(db, deliver, customer.account_id, "line.validity_ending",
                  {"msisdn": line.msisdn, "days_left": 3, "validity_end": WINTER},
                  line_id=line.id)
    await _notify(db, deliver, customer.account_id, "order.fulfilled", {
        "msisdn": line.msisdn, "plan": {"en": "Traveller"}, "total": 2000, "currency": "USD",
        "order_id": str(order_id)})
    await _notify(db, deliver, customer.account_id, "account.welcome",
                  {"username": "someone"})
    sign_in(client, customer)
    welcome, fulfilled, ending = _notices((await client.get("/account")).text)  # newest first
    assert f'<a href="/account/topup?line={line.id}">Top up this line</a>' in ending
    assert f"Your line {line.msisdn} stays valid until" in ending
    assert f'<a href="/account/orders/{order_id}">See the order</a>' in fulfilled
    assert "<a " not in welcome  # nothing to act on
    assert 'data-testid="notice-body"' in welcome


async def test_a_notice_of_another_account_is_not_shown(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver: Any
) -> None:
    mine, theirs = await new_customer(db, settings), await new_customer(db, settings)
    await _notify(db, deliver, theirs.account_id, "security.new_device",
                  {"device": "Firefox", "ip": "192.0.2.99", "time": WINTER})
    sign_in(client, mine)
    page = (await client.get("/account")).text
    assert "192.0.2.99" not in page and "No notices." in page
