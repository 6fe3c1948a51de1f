"""The user center: each line's state with what it means and how to keep the line (the
lifecycle's own dates), the page's variants, times with their zone, the language of messages,
and a page cost that does not grow with the number of lines."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from simcharge.accounts.models import Account
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line, LineState
from simcharge.notifications.models import Notice
from tests.factories import create_line
from tests.portal.helpers import Customer, csrf_of, new_customer, sign_in

pytestmark = pytest.mark.usefixtures("shop")
DAY = timedelta(days=1)


async def set_line(db: Database, customer: Customer, **values: Any) -> None:
    async def run(s: AsyncSession) -> None:
        line = await s.get(Line, customer.line.id)
        assert line is not None
        for k, v in values.items():
            setattr(line, k, v)

    await db.run(run)


def card(html: str) -> str:
    """The first line's card."""
    return html.split('<section class="card" aria-labelledby="line-1">', 1)[1].split("</section>")[0]


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_an_active_line_ending_soon_says_until_when_and_what_keeps_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)  # validity ends in 10 days
    await set_line(db, customer, last_activity_at=utcnow())
    sign_in(client, customer)
    shown = text_of(card((await client.get("/account")).text))
    assert "(10 days left)" in shown
    assert "Top up before the validity ends to keep this line active" in shown
    # Validity ends in 10 days, then 30 days of grace: frozen in 40 days unless topped up.
    assert "If it is not topped up, this line will be frozen on" in shown
    assert "(in 40 days)" in shown
    client.cookies.set("sc_lang", "zh-Hans")
    assert "40天" in text_of(card((await client.get("/account")).text))


async def test_a_line_with_time_ahead_shows_no_warning(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    await set_line(db, customer, validity_end=utcnow() + 100 * DAY, last_activity_at=utcnow())
    sign_in(client, customer)
    shown = card((await client.get("/account")).text)
    assert "(100 days left)" in text_of(shown)
    assert 'data-testid="freeze"' not in shown and 'data-testid="guidance"' not in shown


async def test_an_unused_line_is_told_that_using_it_also_keeps_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    await set_line(db, customer, validity_end=utcnow() + 100 * DAY,
                   last_activity_at=utcnow() - 175 * DAY)
    sign_in(client, customer)
    shown = text_of(card((await client.get("/account")).text))
    assert "If it is not used or topped up, this line will be frozen on" in shown
    assert "(in 5 days)" in shown


async def test_a_line_in_grace_is_not_told_it_stays_active(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    ended = utcnow() - 3 * DAY
    await set_line(db, customer, state=LineState.grace.value, validity_end=ended,
                   state_changed_at=ended, last_activity_at=ended)
    sign_in(client, customer)
    html = card((await client.get("/account")).text)
    shown = text_of(html)
    assert "stays active" not in shown and "days left" not in shown
    assert "Validity ended" in shown  # the state
    assert "Its validity ended on" in shown
    assert "it will be frozen if it is not topped up. Top up to keep it active." in shown
    assert "If it is not topped up, this line will be frozen on" in shown
    assert "(in 27 days)" in shown


@pytest.mark.parametrize(("policy", "how"), [
    ("topup", "A top-up reactivates it."),
    ("owner_topup", "A top-up paid from your account reactivates it."),
    ("support", "Ask customer service to reactivate it."),
])
async def test_a_frozen_line_says_what_brings_it_back_and_when_it_would_close(
    db: Database, settings: Settings, policy: str, how: str
) -> None:
    from simcharge.app import create_app

    app = create_app(settings.model_copy(update={"lifecycle_frozen_reactivation": policy}),
                     db=db, run_worker=False)
    customer = await new_customer(db, settings)
    await set_line(db, customer, state=LineState.frozen.value,
                   state_changed_at=utcnow() - 10 * DAY, validity_end=utcnow() - 50 * DAY)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        sign_in(client, customer)
        html = card((await client.get("/account")).text)
    shown = text_of(html)
    assert how in shown
    assert "stays active" not in shown and 'data-testid="freeze"' not in html
    assert "If it stays frozen, this line will be closed on" in shown and "(in 355 days)" in shown
    assert "Give credit or data" not in shown  # only an active line gives


async def test_a_line_not_yet_in_service_says_its_first_top_up_starts_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, with_units=False)
    await set_line(db, customer, state=LineState.available.value, validity_end=None)
    sign_in(client, customer)
    shown = text_of(card((await client.get("/account")).text))
    assert "Not yet active" in shown
    assert "This line is not in service yet: its first top-up activates it." in shown
    assert "frozen" not in shown


async def test_the_variants_of_the_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)

    async def no_line_unverified_and_news(s: AsyncSession) -> None:
        line = await s.get(Line, customer.line.id)
        account = await s.get(Account, customer.account_id)
        assert line is not None and account is not None
        line.account_id = None
        account.phone_pending = "+14155550199"
        s.add(Notice(account_id=customer.account_id, template="account.welcome",
                     params={"username": customer.username}))

    await db.run(no_line_unverified_and_news)
    sign_in(client, customer)
    r = await client.get("/account")
    assert "You have no line yet. Add the number of your SIM or eSIM" in r.text
    assert "A contact of yours is not verified yet." in r.text and 'href="/verify"' in r.text
    assert '<span class="state pending">new</span>' in r.text


async def test_times_say_their_zone(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    for language, pattern in (
        ("en", r"[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}:\d{2}\s[AP]M UTC"),
        ("es", r"\d{1,2} [a-z]{3} \d{4}, \d{1,2}:\d{2}:\d{2} UTC"),
        ("zh-Hans", r"\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}:\d{2} UTC"),
        ("zh-Hant", r"\d{4}年\d{1,2}月\d{1,2}日 \S+\d{1,2}:\d{2}:\d{2} UTC"),
        ("fil", r"[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}:\d{2}\s[AP]M UTC"),
    ):
        client.cookies.set("sc_lang", language)
        activity = (await client.get("/account")).text.split('id="recent"', 1)[1]
        assert re.search(pattern, activity), (language, activity[:600])
        security = (await client.get("/account/security")).text
        assert re.search(pattern, security), language


async def test_the_switcher_also_sets_the_language_of_my_messages(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    page = (await client.get("/account/records")).text
    assert 'action="/language"' in page and 'href="/language/' not in page
    assert "The language you choose here is also the one of your e-mails" in page
    r = await client.post("/language", data={"csrf": csrf_of(page), "code": "zh-Hant",
                                             "next": "/account/records?kind=usage"})
    assert r.status_code == 303 and r.headers["location"] == "/account/records?kind=usage"
    async with db.read() as s:
        assert (await s.get(Account, customer.account_id, populate_existing=True)).language == (  # type: ignore[union-attr]
            "zh-Hant")
    r = await client.get("/account")
    assert '<html lang="zh-Hant">' in r.text and 'data-testid="language">繁體中文<' in r.text
    # Without the form's token nothing changes; a link (GET) changes the page only.
    r = await client.post("/language", data={"csrf": "forged", "code": "es"})
    assert r.status_code == 403
    r = await client.get("/language/fil", params={"next": "/account"})
    assert r.status_code == 303
    async with db.read() as s:
        assert (await s.get(Account, customer.account_id, populate_existing=True)).language == (  # type: ignore[union-attr]
            "zh-Hant")
    r = await client.post("/language", data={"csrf": csrf_of(page), "code": "xx"})
    assert r.status_code == 404


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements run meanwhile (on this test's engine)."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    yield seen
    event.remove(engine.sync_engine, "before_cursor_execute", note)


async def test_the_page_costs_the_same_queries_for_one_line_or_five(
    client: httpx.AsyncClient, db: Database, settings: Settings, statements: list[str]
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)

    async def count() -> int:
        before = len(statements)
        assert (await client.get("/account")).status_code == 200
        return len([s for s in statements[before:] if s.lstrip().upper().startswith("SELECT")])

    await client.get("/account")  # the session is noted as used once a minute: not counted
    one = await count()

    async def more_lines(s: AsyncSession) -> None:
        from simcharge.lines.service import UnitGrant, credit_wallet, grant_units

        for _ in range(4):
            line = await create_line(s, account_id=customer.account_id, state=LineState.active)
            await credit_wallet(s, line, 500, source=f"test:{line.id}", code="adjustment")
            await grant_units(s, line, [UnitGrant("DATA_B", 1024**3, 30, ())],
                              source=f"test:{line.id}")

    await db.run(more_lines)
    five = await count()
    assert five == one, (one, five)
    # On PostgreSQL the session check and the page's four reads are one statement; on SQLite
    # they run in turn.
    assert one == (1 if db.dialect == "postgresql" else 5), statements[-one:]
    async with db.read() as s:
        lines = (await s.execute(select(Line).where(Line.account_id == customer.account_id))).all()
    assert len(lines) == 5


def test_day_counts_round_up_as_the_warnings_do() -> None:
    from simcharge.portal.account import _days_until

    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert _days_until(now + timedelta(days=1, seconds=1), now) == 2
    assert _days_until(now + timedelta(hours=3), now) == 1
