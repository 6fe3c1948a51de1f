"""What every browser test does on a page: no serious accessibility violation (axe-core), no
Content-Security-Policy violation, and optionally a screenshot at phone and desktop width."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Any

from simcharge.db import Database
from simcharge.lines.models import Line, LineState
from tests.conftest import SmtpInbox
from tests.factories import create_line
from tests.portal.browser.conftest import AXE, DESKTOP, PHONE

_AXE_SOURCE: str | None = None


def watch(page: Any) -> list[str]:
    """Collects the page's console errors (CSP violations are reported there)."""
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and "Content Security" in m.text
        else None,
    )
    return problems


async def check(
    page: Any, name: str, problems: list[str] | None = None, *, shot: str | None = None,
    desktop: bool = True,
) -> None:
    """axe-core finds no serious or critical violation — at phone width, and unless `desktop`
    is false at desktop width too (the layout changes: two columns, the menu in a row) — and
    the page broke no CSP rule; then a screenshot when `shot` (default: `name`) is one the
    README shows."""
    await _axe(page, name)
    if desktop:
        await page.set_viewport_size(DESKTOP)
        try:
            await _axe(page, f"{name} (desktop)")
        finally:
            await page.set_viewport_size(PHONE)
    if problems is not None:
        assert not problems, f"{name}: CSP violations {problems}"
    await shoot(page, name if shot is None else shot)


async def _axe(page: Any, name: str) -> None:
    global _AXE_SOURCE
    if _AXE_SOURCE is None:
        _AXE_SOURCE = AXE.read_text(encoding="utf-8")
    # Evaluated through the DevTools protocol: the page's CSP (no inline scripts) stays on.
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(_AXE_SOURCE)
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))"
    )
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name}: accessibility violations {bad}"


# The pages shown in the README (the others are checked, not photographed).
SHOWN = frozenset({"home", "account", "topup", "review", "order", "order-qr", "records",
                   "security", "order-failed", "help", "ticket", "transfer", "transfer-review",
                   "state-dashboard", "zh-home", "zh-account", "zh-order", "zh-state-transfer"})


async def shoot(page: Any, name: str) -> None:
    folder = os.environ.get("SIMCHARGE_SCREENSHOTS")
    if not folder or name not in SHOWN:
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(out / f"{name}-phone.png"), full_page=True)
    await page.set_viewport_size(DESKTOP)
    await page.screenshot(path=str(out / f"{name}-desktop.png"), full_page=True)
    await page.set_viewport_size(PHONE)


async def email_code(inbox: SmtpInbox, address: str, *, after: int = 0) -> str:
    """The newest code e-mailed to `address` (the worker delivers it over SMTP)."""
    for _ in range(200):
        mails = inbox.to(address)
        if len(mails) > after:
            try:
                return inbox.last_code(address)
            except AssertionError:
                pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"no code e-mailed to {address}")


async def sms_code(to: str) -> str:
    from simcharge.notifications.transports import dev_mailbox

    for _ in range(200):
        texts = [m.text for m in dev_mailbox if m.channel == "sms" and m.to == to]
        found = re.findall(r"\b(\d{6})\b", texts[-1]) if texts else []
        if found:
            return str(found[-1])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no SMS code to {to}")


async def operator_line(db: Database, *, account_id: uuid.UUID | None = None) -> Line:
    """One of the operator's lines: not sold yet, or someone's."""
    state = LineState.available if account_id is None else LineState.active
    return await db.run(lambda s: create_line(s, account_id=account_id, state=state))
