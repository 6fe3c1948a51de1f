"""The customer page's "Suspend (lost or stolen)" and "Resume" forms, and what the customer sees
of a suspended line in the portal (the sixteenth round). The forms on both databases; the
agent's journey in Chromium (SQLite, as every browser test)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Line, LineState
from tests.backoffice.browser.a11y import sign_in as browser_sign_in
from tests.backoffice.browser.conftest import Site, chromium, page, site  # noqa: F401
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import new_payer
from tests.portal.helpers import new_customer
from tests.portal.helpers import sign_in as portal_sign_in


async def _state(db: Database, line_id: Any) -> str:
    async with db.read() as s:
        line = await s.get(Line, line_id, populate_existing=True)
        assert line is not None
        return str(line.state)


async def _actions(db: Database, line_id: Any) -> list[str]:
    async with db.read() as s:
        return list((await s.execute(
            select(AuditEntry.action).where(AuditEntry.target_id == str(line_id))
        )).scalars())  # fmt: skip


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_an_agent_suspends_and_resumes_from_the_customer_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    line_id = payer.line.id
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    screen = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert f'action="/backoffice/lines/{line_id}/suspend"' in screen.text
    assert "Suspend (lost or stolen)" in screen.text
    assert f'id="suspend-{line_id}-reason"' in screen.text
    assert f'action="/backoffice/lines/{line_id}/resume"' not in screen.text

    # Without a reason: refused beside the field, on the customer's page; nothing changes.
    r = await client.post(f"/backoffice/lines/{line_id}/suspend", data={"csrf": csrf, "reason": " "})
    assert r.status_code == 422, r.text
    assert f'id="suspend-{line_id}-reason-error"' in r.text and "Give a reason." in r.text
    assert await _state(db, line_id) == LineState.active and await _actions(db, line_id) == []

    r = await client.post(
        f"/backoffice/lines/{line_id}/suspend", data={"csrf": csrf, "reason": "phone stolen"}
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == (
        f"/backoffice/customers/{payer.account_id}?done=suspended#line-{line_id}"
    )
    assert await _state(db, line_id) == LineState.suspended
    screen = await client.get(r.headers["location"])
    shown = _text(screen.text)
    assert "suspended (lost or stolen)" in shown
    assert "The line is suspended: it cannot be used until it is resumed." in shown
    assert f'action="/backoffice/lines/{line_id}/suspend"' not in screen.text
    assert f'action="/backoffice/lines/{line_id}/resume"' in screen.text

    # Suspended twice (a second tab): refused on the page, said why.
    again = await client.post(
        f"/backoffice/lines/{line_id}/suspend", data={"csrf": csrf, "reason": "again"}
    )
    assert again.status_code == 409 and "already suspended" in again.text

    r = await client.post(
        f"/backoffice/lines/{line_id}/resume", data={"csrf": csrf, "reason": "SIM found"}
    )
    assert r.status_code == 303, r.text
    assert "done=resumed" in r.headers["location"]
    assert await _state(db, line_id) == LineState.active
    assert await _actions(db, line_id) == ["line.suspend", "line.resume"]
    shown = _text((await client.get(r.headers["location"])).text)
    assert "The line is resumed." in shown


async def test_finance_sees_no_form_and_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    screen = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert screen.status_code == 200 and "Suspend (lost or stolen)" not in screen.text
    r = await client.post(
        f"/backoffice/lines/{payer.line.id}/suspend", data={"csrf": csrf, "reason": "x"}
    )
    assert r.status_code == 403
    assert await _state(db, payer.line.id) == LineState.active


async def test_the_customer_sees_suspended_and_whom_to_ask(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    agent = await new_staff(db, settings, "agent")
    r = await client.post(f"/api/v1/admin/lines/{customer.line.id}/suspend",
                          json={"reason": "lost"}, headers=agent.auth)  # fmt: skip
    assert r.status_code == 200, r.text
    portal_sign_in(client, customer)
    shown = _text((await client.get("/account")).text)
    assert "Suspended" in shown
    assert "This line is suspended: it cannot be used. Contact us to resume it." in shown
    assert "will be frozen on" not in shown and "Give credit or data" not in shown
    client.cookies.set("sc_lang", "es")
    assert (await client.get("/account")).status_code == 200


async def test_in_chromium_an_agent_suspends_a_line_and_resumes_it(
    page: Any, site: Site  # noqa: F811
) -> None:
    payer = await new_payer(site.db, site.settings)
    agent = await new_staff(site.db, site.settings, "agent")
    await browser_sign_in(page, site, agent)
    await page.goto(f"{site.base}/backoffice/customers/{payer.account_id}")
    button = page.get_by_role("button", name="Suspend (lost or stolen)")
    async with page.expect_navigation():
        await button.click()  # no reason: refused beside the field
    assert await page.locator(f"#suspend-{payer.line.id}-reason-error").count() == 1
    assert await _state(site.db, payer.line.id) == LineState.active
    await page.fill(f"#suspend-{payer.line.id}-reason", "customer called: phone stolen")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Suspend (lost or stolen)").click()
    assert "done=suspended" in page.url
    assert await _state(site.db, payer.line.id) == LineState.suspended
    assert "suspended (lost or stolen)" in await page.locator(f"#line-{payer.line.id}").inner_text()
    await page.fill(f"#resume-{payer.line.id}-reason", "SIM found")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Resume").click()
    assert "done=resumed" in page.url
    assert await _state(site.db, payer.line.id) == LineState.active
