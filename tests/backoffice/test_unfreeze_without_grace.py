"""Customer service unfreezing a line when the operator runs without a grace period.

A frozen line whose validity has ended is unfrozen into grace, with a full grace period to top
up. With `LIFECYCLE_GRACE_DAYS=0` that grace has no length: the next sweep froze the line again
and sent the customer "your line is frozen" just after support had helped. Now such an unfreeze
is refused (409 `line-would-freeze-again`, field `line_id`, saying what to do: a top-up with a
package that gives validity first) and changes nothing; a line whose validity runs is unfrozen
into `active` as before.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from simcharge.app import create_app
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lifecycle.models import LineEvent
from simcharge.lifecycle.service import Policy, sweep
from simcharge.lines.models import Line, LineState
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import new_payer


async def _frozen(db: Database, line_id: Any, *, validity_left: timedelta) -> None:
    now = utcnow()
    await db.run(lambda s: s.execute(
        update(Line).where(Line.id == line_id).values(
            state=LineState.frozen, validity_end=now + validity_left,
            state_changed_at=now - timedelta(days=3), last_activity_at=now - timedelta(days=3),
        )
    ))  # fmt: skip


async def _state(db: Database, line_id: Any) -> str:
    async with db.read() as s:
        line = await s.get(Line, line_id)
        assert line is not None
        return str(line.state)


async def test_a_line_past_its_validity_is_not_unfrozen_into_a_grace_of_no_length(
    db: Database, settings: Settings
) -> None:
    no_grace = settings.model_copy(update={"lifecycle_grace_days": 0})
    payer = await new_payer(db, no_grace)
    await _frozen(db, payer.line.id, validity_left=-timedelta(days=2))
    agent = await new_staff(db, no_grace, "agent")
    app = create_app(no_grace, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        r = await client.post(f"/api/v1/admin/lines/{payer.line.id}/unfreeze", headers=agent.auth)
        assert r.status_code == 409, r.text
        problem = r.json()
        assert problem["type"] == "/problems/line-would-freeze-again"
        assert problem["field"] == "line_id"
        assert payer.line.msisdn in problem["detail"] and "validity" in problem["detail"]

        # The page says the same beside the line, and changes nothing either.
        csrf = await web_sign_in(client, agent)
        page = await client.post(f"/backoffice/lines/{payer.line.id}/unfreeze",
                                 data={"csrf": csrf})  # fmt: skip
        assert page.status_code == 409
        assert "frozen again at once" in page.text
    assert await _state(db, payer.line.id) == LineState.frozen
    async with db.read() as s:
        audited = (await s.execute(select(AuditEntry.action).where(
            AuditEntry.target_id == str(payer.line.id)))).scalars().all()  # fmt: skip
        events = (await s.execute(select(LineEvent).where(
            LineEvent.line_id == payer.line.id))).scalars().all()  # fmt: skip
    assert "line.unfreeze" not in audited and events == []


async def test_a_line_whose_validity_runs_is_unfrozen_without_a_grace_period(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A top-up with a package extended its validity (as it does for a frozen line too): support
    brings it back into `active`, and the sweep leaves it there."""
    no_grace = settings.model_copy(update={"lifecycle_grace_days": 0})
    payer = await new_payer(db, no_grace)
    await _frozen(db, payer.line.id, validity_left=timedelta(days=20))
    agent = await new_staff(db, no_grace, "agent")
    app = create_app(no_grace, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        r = await c.post(f"/api/v1/admin/lines/{payer.line.id}/unfreeze", headers=agent.auth)
    assert r.status_code == 200 and r.json()["state"] == "active", r.text
    await sweep(db, Policy.of(no_grace), now=utcnow() + timedelta(minutes=10))
    assert await _state(db, payer.line.id) == LineState.active


async def test_with_a_grace_period_a_line_past_its_validity_is_unfrozen_into_grace(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    assert settings.lifecycle_grace_days > 0
    payer = await new_payer(db, settings)
    await _frozen(db, payer.line.id, validity_left=-timedelta(days=2))
    agent = await new_staff(db, settings, "agent")
    r = await client.post(f"/api/v1/admin/lines/{payer.line.id}/unfreeze", headers=agent.auth)
    assert r.status_code == 200 and r.json()["state"] == "grace", r.text
    await sweep(db, Policy.of(settings), now=utcnow() + timedelta(minutes=10))
    assert await _state(db, payer.line.id) == LineState.grace
