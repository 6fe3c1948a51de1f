"""Round 13: a bad period on the reports page or a bad filter on a line's usage page draws the
page again — the form with what was typed, the error beside its field and in the summary
above, status 422 — instead of a bare error page; and nothing is read (no report, no records,
no read audited)."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import func, select

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import new_payer


async def _reads(db: Database, action: str) -> int:
    async with db.read() as s:
        return int((await s.execute(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        )).scalar_one())  # fmt: skip


def _beside(html: str, form: str, field: str, words: str) -> None:
    assert f'id="{form}-{field}-error"' in html, (form, field)
    assert f'aria-describedby="{form}-{field}-error"' in html
    assert f'href="#{form}-{field}"' in html  # the summary on top links to the field
    assert words in html, words
    assert "error-summary" in html


async def test_a_bad_report_period_redraws_the_form_with_the_error_beside_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    finance = await new_staff(db, settings, "finance")
    await web_sign_in(client, finance)
    long_ago = (utcnow().date() - timedelta(days=400)).isoformat()
    for params, field, words in (
        ({"from": "2026-12-07", "to": "2026-12-01"}, "from", "The period ends before it starts."),
        ({"from": long_ago}, "from", "A report covers at most"),
        ({"from": "2026-02-30"}, "from", "Use a date like 2026-11-25."),
        ({"to": "soon"}, "to", "Use a date like 2026-11-25."),
    ):
        before = await _reads(db, "report.view")
        r = await client.get("/backoffice/reports", params=params)
        assert r.status_code == 422, (params, r.text)
        _beside(r.text, "report", field, words)
        for name, value in params.items():
            assert f'id="report-{name}" name="{name}" value="{value}"' in r.text
        assert "<svg" not in r.text and 'id="topups"' not in r.text  # no report
        assert await _reads(db, "report.view") == before
    # a good period again: the report
    ok = await client.get("/backoffice/reports")
    assert ok.status_code == 200 and ok.text.count("<svg") >= 3
    assert "error-summary" not in ok.text


async def test_a_bad_usage_filter_redraws_the_form_with_the_error_beside_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    url = f"/backoffice/lines/{payer.line.id}/usage"
    for params, field in (
        ({"from": "2026-12-07", "to": "2026-12-01"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-40"}, "to"),
        ({"service": "fax"}, "service"),
    ):
        before = await _reads(db, "usage.list")
        r = await client.get(url, params=params)
        assert r.status_code == 422, (params, r.text)
        assert f'id="usage-{field}-error"' in r.text and f'href="#usage-{field}"' in r.text
        assert f'aria-describedby="usage-{field}-error"' in r.text
        for name, value in params.items():
            if name != "service":
                assert f'id="usage-{name}" name="{name}" value="{value}"' in r.text
        assert payer.line.msisdn in r.text  # the line's page, not an error page
        assert await _reads(db, "usage.list") == before
    # a line that is not there stays "not found"
    r = await client.get("/backoffice/lines/00000000-0000-0000-0000-000000000000/usage",
                         params={"from": "nope"})
    assert r.status_code == 404
    assert (await client.get(url)).status_code == 200
