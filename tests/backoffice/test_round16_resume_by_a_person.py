"""Resuming a suspended line is a person's act (the sixteenth round's review): an API key with
`accounts:write` may suspend a line — that protects — but resuming one reported lost or stolen
is refused `403 resume-needs-a-person`, audited as `access.denied`, and the line stays
suspended, as unlocking an account already was. A staff member resumes it. Every test runs on
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lifecycle.models import LineEvent
from simcharge.lines.models import Line, LineState
from tests.backoffice.helpers import new_staff
from tests.orders.helpers import new_payer

REASON = "SIM reported stolen, ticket T-9R2M4K7Q"


async def _state(db: Database, line_id: uuid.UUID) -> str:
    async with db.read() as s:
        line = await s.get(Line, line_id, populate_existing=True)
        assert line is not None
        return line.state


async def _audit(db: Database, line_id: uuid.UUID) -> list[AuditEntry]:
    async with db.read() as s:
        return list((await s.execute(
            select(AuditEntry).where(AuditEntry.target_id == str(line_id)).order_by(AuditEntry.at)
        )).scalars())  # fmt: skip


async def _events(db: Database, line_id: uuid.UUID) -> list[str]:
    async with db.read() as s:
        rows = (await s.execute(
            select(LineEvent).where(LineEvent.line_id == line_id).order_by(LineEvent.created_at)
        )).scalars()  # fmt: skip
        return [e.to_state for e in rows]


async def _post(client: httpx.AsyncClient, line_id: uuid.UUID, what: str,
                auth: dict[str, str], reason: str = REASON) -> httpx.Response:  # fmt: skip
    return await client.post(
        f"/api/v1/admin/lines/{line_id}/{what}", json={"reason": reason}, headers=auth
    )


async def test_a_key_suspends_but_may_not_resume_a_person_does(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    line_id = payer.line.id
    tool = await db.run(lambda s: create_api_key(s, "crm", ["accounts:write"]))
    auth = {"Authorization": f"Bearer {tool.token}"}

    # Suspending by a key stays allowed: it protects the customer.
    r = await _post(client, line_id, "suspend", auth)
    assert (r.status_code, r.json()["state"]) == (200, "suspended"), r.text

    r = await _post(client, line_id, "resume", auth, "the customer says it is found")
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert (problem["type"], problem["field"]) == ("/problems/resume-needs-a-person", "line_id")
    assert "staff member" in problem["title"]
    # Nothing changed: still suspended, no resume event, no `line.resume` in the audit log.
    assert await _state(db, line_id) == LineState.suspended
    assert await _events(db, line_id) == ["suspended"]
    entries = await _audit(db, line_id)
    assert [(e.action, e.actor) for e in entries] == [
        ("line.suspend", f"apikey:{tool.key.prefix}"),
        ("access.denied", f"apikey:{tool.key.prefix}"),
    ]
    denied = entries[1]
    assert denied.target_type == "line"
    assert denied.details == {
        "permission": "lines.unfreeze",
        "path": f"/api/v1/admin/lines/{line_id}/resume",
        "reason": "a person only",
    }
    assert "the customer says it is found" not in str(denied.details)

    # A staff member resumes it.
    agent = await new_staff(db, settings, "agent")
    r = await _post(client, line_id, "resume", agent.auth, "SIM found, owner called")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": str(line_id), "state": "active"}
    assert await _state(db, line_id) == LineState.active
    assert [e.action for e in await _audit(db, line_id)] == [
        "line.suspend",
        "access.denied",
        "line.resume",
    ]
    assert (await _audit(db, line_id))[-1].actor == f"staff:{agent.username}"


async def test_the_key_is_refused_whatever_the_line_and_an_unknown_line_is_404(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Refused before the state is looked at: even a line that is not suspended gives the key a
    403 (not a 409 that would tell it the state), audited; an unknown line is a 404 to the key
    as to anyone, with nothing audited. A key without `accounts:write` is refused by scope."""
    payer = await new_payer(db, settings)
    tool = await db.run(lambda s: create_api_key(s, "crm", ["accounts:write"]))
    auth = {"Authorization": f"Bearer {tool.token}"}

    r = await _post(client, payer.line.id, "resume", auth)
    assert (r.status_code, r.json()["type"]) == (403, "/problems/resume-needs-a-person")
    assert await _state(db, payer.line.id) == LineState.active
    assert [e.action for e in await _audit(db, payer.line.id)] == ["access.denied"]

    missing = uuid.uuid4()
    r = await _post(client, missing, "resume", auth)
    problem = r.json()
    assert r.status_code == 404, r.text
    assert (problem["type"], problem["field"]) == ("/problems/line-not-found", "line_id")
    assert await _audit(db, missing) == []

    # Bad input is still a 422 naming `reason`, and nothing is audited or changed.
    r = await client.post(f"/api/v1/admin/lines/{payer.line.id}/resume", json={}, headers=auth)
    assert r.status_code == 422, r.text
    assert [e.action for e in await _audit(db, payer.line.id)] == ["access.denied"]

    reader = await db.run(lambda s: create_api_key(s, "crm", ["customers:read"]))
    r = await _post(client, payer.line.id, "resume", {"Authorization": f"Bearer {reader.token}"})
    assert r.status_code == 403, r.text
    assert r.json()["type"] != "/problems/resume-needs-a-person"

    # A finance member (no `lines.unfreeze`) is refused by role, not as "no person".
    finance = await new_staff(db, settings, "finance")
    r = await _post(client, payer.line.id, "resume", finance.auth)
    assert r.status_code == 403, r.text
    assert r.json()["type"] != "/problems/resume-needs-a-person"
    assert await _state(db, payer.line.id) == LineState.active
