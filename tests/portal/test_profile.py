"""The portal's profile page (`/account/profile`): choosing a time zone (a curated list grouped
by continent, led by the current zone and the operator's) and, for a Spanish reader, the
format of numbers and money; every page then writes times in the zone and moments' days as
its days, numbers in the format. A bad choice is a 422 page naming the field and changes
nothing; a form without its CSRF token changes nothing. Signed-out pages and accounts without a
zone use the operator's zone."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from httpx import ASGITransport
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from simcharge.lines.models import Line
from simcharge.portal.profile import ZONE_GROUPS, zone_groups
from tests.portal.helpers import csrf_of, new_customer, post_form, sign_in

END = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)


async def _account(db: Database, account_id: uuid.UUID) -> Account:
    async with db.read() as s:
        found = await s.get(Account, account_id)
    assert found is not None
    return found


async def _set(db: Database, account_id: uuid.UUID, **values: str | None) -> None:
    async def run(s: AsyncSession) -> None:
        await s.execute(update(Account).where(Account.id == account_id).values(**values))

    await db.run(run)


async def test_the_page_offers_the_current_zone_and_the_operators_first(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    page = (await client.get("/account/profile")).text
    first = re.findall(r'<option value="([^"]*)"', page)
    assert first[0] == ""  # the operator's zone (UTC here), chosen
    assert re.search(r'<option value=""\s+selected>Ours: UTC</option>', page)
    assert 'data-suggest-zone' in page  # no zone of its own: portal.js may suggest the browser's
    assert "<optgroup label=\"Asia\">" in page and "Manila (UTC+08:00)" in page
    assert 'name="format_locale"' not in page  # English: written alike everywhere

    await _set(db, customer.account_id, time_zone="Asia/Manila")
    page = (await client.get("/account/profile")).text
    first = re.findall(r'<option value="([^"]*)"', page)
    assert first[:2] == ["Asia/Manila", ""]
    assert re.search(r'<option value="Asia/Manila"\s+selected>Current: Manila', page)
    assert 'data-suggest-zone' not in page


async def test_choosing_a_zone_moves_the_times_and_days_of_every_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)

    async def ends(s: AsyncSession) -> None:
        await s.execute(update(Line).where(Line.id == customer.line.id).values(validity_end=END))

    await db.run(ends)
    clock.freeze(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    dashboard = (await client.get("/account")).text
    assert "Dec 6, 2026" in dashboard and 'data-testid="time-zone">UTC' in dashboard

    r = await post_form(client, "/account/profile", "/account/profile", {"time_zone": "Asia/Manila"})
    assert r.status_code == 303 and r.headers["location"] == "/account/profile?saved=1"
    assert (await _account(db, customer.account_id)).time_zone == "Asia/Manila"
    saved = (await client.get("/account/profile?saved=1")).text
    assert "Saved." in saved
    assert "Dec 1, 2026, 8:00:00\u202fPM UTC+08:00" in saved  # the time now, as it will be seen
    dashboard = (await client.get("/account")).text
    assert "Dec 7, 2026" in dashboard and "Dec 6, 2026" not in dashboard

    # The empty choice is the operator's zone again.
    await post_form(client, "/account/profile", "/account/profile", {"time_zone": ""})
    assert (await _account(db, customer.account_id)).time_zone is None


async def test_a_spanish_reader_chooses_the_format_of_numbers(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, language="es")
    sign_in(client, customer)
    client.cookies.set("sc_lang", "es")
    page = (await client.get("/account/profile")).text
    assert 'name="format_locale"' in page and "español (México) — 1,234.56" in page
    assert "12,50" in (await client.get("/account")).text  # Spain's, 12.50 USD on the line

    r = await post_form(client, "/account/profile", "/account/profile",
                        {"time_zone": "America/Mexico_City", "format_locale": "es_MX"})  # fmt: skip
    assert r.status_code == 303
    account = await _account(db, customer.account_id)
    assert (account.time_zone, account.format_locale) == ("America/Mexico_City", "es_MX")
    assert "12.50" in (await client.get("/account")).text
    # The account's choice wins over the browser's region.
    r = await client.get("/account", headers={"Accept-Language": "es-AR"})
    assert "12.50" in r.text


@pytest.mark.parametrize(
    ("data", "field"),
    [({"time_zone": "Mars/Olympus_Mons"}, "time_zone"), ({"time_zone": "PST"}, "time_zone"),
     ({"format_locale": "en_US"}, "format_locale"), ({"format_locale": "es_ZZ"}, "format_locale")],
)
async def test_a_bad_choice_is_a_page_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings, data: dict[str, str], field: str
) -> None:
    customer = await new_customer(db, settings, language="es")
    sign_in(client, customer)
    client.cookies.set("sc_lang", "es")
    r = await post_form(client, "/account/profile", "/account/profile",
                        {"time_zone": "Asia/Manila", **data})  # fmt: skip
    assert r.status_code == 422
    assert f'id="e-{field}"' in r.text and f'id="f-{field}"' in r.text
    account = await _account(db, customer.account_id)
    assert (account.time_zone, account.format_locale) == (None, None)


async def test_a_form_without_its_token_changes_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await client.post("/account/profile", data={"csrf": "forged", "time_zone": "Asia/Manila"})
    assert r.status_code == 403
    assert (await _account(db, customer.account_id)).time_zone is None


async def test_signed_out_the_profile_asks_to_sign_in(client: httpx.AsyncClient) -> None:
    r = await client.get("/account/profile")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    shown = await client.get("/login")
    r = await client.post("/account/profile", data={"csrf": csrf_of(shown.text),
                                                     "time_zone": "Asia/Manila"})  # fmt: skip
    assert r.status_code == 401


async def test_pages_use_the_operators_zone_for_accounts_without_one(
    settings: Settings, db: Database
) -> None:
    manila = settings.model_copy(update={"operator_timezone": "Asia/Manila"})
    app = create_app(manila, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as c:
        customer = await new_customer(db, manila)
        sign_in(c, customer)
        page = (await c.get("/account/profile")).text
        assert 'data-suggest-zone' in page and "Ours: Manila (UTC+08:00)" in page
        assert "M UTC+08:00" in page  # the time now, in the operator's zone


def test_the_curated_zones_are_known_and_grouped_east_to_west() -> None:
    groups = zone_groups("en", END)
    assert [len(choices) for _, choices in groups] == [len(names) for _, names in ZONE_GROUPS]
    asia = dict(groups)["Asia"]
    assert asia[0].value == "Asia/Tokyo" or asia[0].label.endswith("(UTC+09:00)")
    assert zone_groups("zh_Hans_CN", END)[0][1][-1].label.startswith("利雅得")  # Riyadh, last


async def test_the_user_centers_warnings_are_dated_in_the_accounts_zone(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The dashboard's "validity ended on …" and "frozen on …" were UTC's dates (`.date()` of
    the moment), whatever the reader's zone."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)

    async def grace(s: AsyncSession) -> None:
        await s.execute(update(Line).where(Line.id == customer.line.id)
                        .values(state="grace", validity_end=END, state_changed_at=END))  # fmt: skip

    await db.run(grace)
    clock.freeze(END + timedelta(hours=1))
    assert "Its validity ended on Dec 6, 2026." in (await client.get("/account")).text
    await _set(db, customer.account_id, time_zone="Asia/Manila")
    page = (await client.get("/account")).text
    assert "Its validity ended on Dec 7, 2026." in page
    frozen_on = re.search(r'data-testid="freeze">[^<]*frozen on ([A-Z][a-z]{2} \d+, \d{4})', page)
    assert frozen_on, page
    await _set(db, customer.account_id, time_zone="Pacific/Pago_Pago")  # UTC−11: a day behind
    later = (await client.get("/account")).text
    assert "Its validity ended on Dec 6, 2026." in later
    assert frozen_on.group(1) not in re.findall(r'data-testid="freeze">([^<]*)', later)[0]
