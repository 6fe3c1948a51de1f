"""The privacy notice is linked wherever a customer meets their data (sixteenth round's DPO
review, GDPR art. 13, Philippine DPA sec. 16): every page's footer, the registration form next
to its button, and "Your data" on the security page — when `SIMCHARGE_PRIVACY_NOTICE_URL` is
set; unset, no link anywhere (and production says so at start: tests/accounts/
test_round16_privacy.py, with the e-mails' footer)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from tests.portal.browser import conftest as browser_fixtures
from tests.portal.browser.conftest import Live
from tests.portal.browser.helpers import check, watch
from tests.portal.helpers import new_customer, sign_in

# The browser journeys' fixtures (a live server, Chromium), for the one test that drives it.
_browser_ready = browser_fixtures._browser_ready
_sqlite_only = browser_fixtures._sqlite_only
browser = browser_fixtures.browser
live = browser_fixtures.live

FOOTER = re.compile(r'<footer class="wrap foot">.*</footer>', re.S)
REGISTER_LINE = "Before you create your account, read how we use your data (privacy notice)."


async def _client(settings: Settings, db: Database, notice: str | None) -> httpx.AsyncClient:
    app = create_app(
        settings.model_copy(update={"privacy_notice_url": notice}), db=db, run_worker=False
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def _footer(html: str) -> str:
    found = FOOTER.search(html)
    assert found, "no footer"
    return found.group(0)


@pytest.mark.parametrize("notice", ["/privacy", "https://legal.example.com/privacy?lang=en&v=2"])
async def test_the_notice_is_linked_from_the_footer_the_form_and_your_data(
    db: Database, settings: Settings, notice: str
) -> None:
    href = f'href="{notice.replace("&", "&amp;")}"'
    async with await _client(settings, db, notice) as c:
        for path in ("/", "/login", "/register", "/forgot"):
            r = await c.get(path)
            assert r.status_code == 200, path
            assert f'<a {href}>Privacy notice</a>' in _footer(r.text), path
        register = (await c.get("/register")).text
        form = register[register.index('<form method="post" action="/register"'):]
        form = form[: form.index("</form>")]
        # Next to the button, inside the form, before it.
        assert f"<a {href}>{REGISTER_LINE}</a>" in form
        assert form.index(REGISTER_LINE) < form.index("Create my account")
        customer = await new_customer(db, settings)
        sign_in(c, customer)
        security = (await c.get("/account/security")).text
        data = security[security.index('aria-labelledby="s-data"'):]
        data = data[: data.index("</section>")]
        assert "Download my data (JSON)" in data and f"<a {href}>Privacy notice</a>" in data
        assert "lines and their usage" in data and "transfers between lines" in data
        # Signed in, every page's footer too.
        for path in ("/account", "/account/profile", "/account/records"):
            r = await c.get(path)
            assert r.status_code == 200, path
            assert "Privacy notice</a>" in _footer(r.text), path


async def test_without_a_notice_no_link_anywhere(db: Database, settings: Settings) -> None:
    async with await _client(settings, db, None) as c:
        pages = [(await c.get(path)).text for path in ("/", "/login", "/register")]
        customer = await new_customer(db, settings)
        sign_in(c, customer)
        pages.append((await c.get("/account/security")).text)
    for html in pages:
        assert "Privacy notice" not in html and REGISTER_LINE not in html


async def test_a_page_in_another_language_links_the_same_notice(
    db: Database, settings: Settings
) -> None:
    async with await _client(settings, db, "/privacy") as c:
        r = await c.get("/register", headers={"Accept-Language": "es"})
    assert r.status_code == 200 and r.headers["content-language"] == "es"
    assert _footer(r.text).count('href="/privacy"') == 1
    assert r.text.count('href="/privacy"') == 2


async def test_the_links_in_a_browser(live: Live, browser: Any) -> None:
    """Chromium: the register form's link and the footer's are visible, reachable and named,
    and axe-core finds nothing serious on the page with them."""
    live.settings.privacy_notice_url = "/privacy"
    ctx = await browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    try:
        page = await ctx.new_page()
        problems = watch(page)
        await page.goto(live.base + "/register")
        form_link = page.get_by_role("link", name=REGISTER_LINE)
        footer_link = page.locator("footer").get_by_role("link", name="Privacy notice")
        assert await form_link.is_visible() and await footer_link.is_visible()
        assert await form_link.get_attribute("href") == "/privacy"
        # Before the button in the reading (and Tab) order.
        order = await page.evaluate(
            """() => [...document.querySelectorAll('form[action="/register"] a, '
                      + 'form[action="/register"] button')].map(e => e.tagName)"""
        )
        assert order[-2:] == ["A", "BUTTON"]
        await check(page, "register with a privacy notice", problems, shot="")
    finally:
        live.settings.privacy_notice_url = None
        await ctx.close()
