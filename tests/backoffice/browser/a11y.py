"""What the back-office browser tests check on a page: axe-core's WCAG 2.0, 2.1 and 2.2 A and AA
rules find nothing, at desktop width and at a phone's; and the staff sign-in they start from.

The portal's helpers do the same for its pages (tests/portal/browser/helpers.py); the few lines
of injection are repeated here rather than imported, so that the two test packages stay apart.
Without axe-core (`npm ci`) the checks skip, or fail when `SIMCHARGE_REQUIRE_BROWSER=1`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyotp
import pytest

from simcharge.kit.clock import utcnow
from tests.backoffice.browser.conftest import Site, browser_required
from tests.backoffice.helpers import STAFF_PASSWORD, Staff

ROOT = Path(__file__).resolve().parents[3]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
"""axe-core's tags for WCAG 2.0, 2.1 and 2.2 at levels A and AA (2.2 adds AA rules only)."""

_source: str | None = None


def axe_source() -> str:
    global _source
    if _source is None:
        if not AXE.exists():
            why = f"axe-core is missing ({AXE}; `npm ci` installs it)"
            if browser_required():
                pytest.fail(f"the browser is required (SIMCHARGE_REQUIRE_BROWSER=1) but {why}")
            pytest.skip(why)
        _source = AXE.read_text(encoding="utf-8")
    return _source


async def violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's WCAG A/AA violations on the page as it is now, every impact."""
    # Evaluated through the DevTools protocol: the page's CSP (no script at all) stays on.
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(axe_source())
    found: list[dict[str, Any]] = await page.evaluate(
        """async (tags) => (await axe.run(document, {
               runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']}))
           .violations.map(v => ({id: v.id, impact: v.impact,
               nodes: v.nodes.map(n => n.target.join(' ') + ' :: ' + n.failureSummary)}))""",
        WCAG_TAGS,
    )
    return found


async def check(page: Any, name: str) -> None:
    """No violation at desktop width nor at 390 px (tables, the menu and the forms wrap)."""
    problems: dict[str, list[dict[str, Any]]] = {}
    for label, size in (("desktop", DESKTOP), ("390 px", PHONE)):
        await page.set_viewport_size(size)
        found = await violations(page)
        if found:
            problems[label] = found
    await page.set_viewport_size(DESKTOP)
    assert not problems, f"{name} ({page.url}): accessibility violations {problems}"


async def sign_in(page: Any, site: Site, staff: Staff) -> None:
    """Through the sign-in and authenticator pages (in any language), enrolling the
    authenticator the first time."""
    await page.goto(f"{site.base}/backoffice/login")
    await page.fill("input[name=username]", staff.username)
    await page.fill("input[name=password]", STAFF_PASSWORD)
    await page.click("main form button[type=submit]")
    await page.wait_for_url(re.compile(r"/backoffice/login/code"))
    if staff.secret is None:
        staff.secret = (await page.locator("code.secret").inner_text()).strip()
    await page.fill("input[name=code]", pyotp.TOTP(staff.secret).at(utcnow()))
    await page.click("main form button[type=submit]")
    await page.wait_for_url(re.compile(r"/backoffice$"))
