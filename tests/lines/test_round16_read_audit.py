"""Round 16 (DPO review): the integration API's reads of a line — its number, ICCID, owner, last
activity, balances — are audited as the back office's reads are: one `audit_entries` row per
read, by `apikey:<prefix>`, on the line, with its owner's id and the key's client; never the
number typed. A refused or failed read records nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.models import AuditEntry
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.service import credit_wallet
from tests.factories import create_account, create_line


async def _key(db: Database, *scopes: str) -> tuple[dict[str, str], str, uuid.UUID]:
    issued = await db.run(lambda s: create_api_key(s, "crm", list(scopes)))
    return (
        {"Authorization": f"Bearer {issued.token}", "User-Agent": "crm-sync/2.1"},
        f"apikey:{issued.key.prefix}",
        issued.key.client_id,
    )


async def _line(db: Database) -> tuple[Any, uuid.UUID]:
    async def run(s: AsyncSession) -> tuple[Any, uuid.UUID]:
        n = uuid.uuid4().hex[:10]
        account = await create_account(
            s, username=f"ra{n}", email=f"ra{n}@example.com", email_verified_at=utcnow()
        )
        line = await create_line(s, account_id=account.id)
        await credit_wallet(s, line, 500, source=f"test:{line.id}")
        return line, account.id

    return await db.run(run)


async def _entries(db: Database) -> list[AuditEntry]:
    async with db.read() as s:
        return list(
            (await s.execute(select(AuditEntry).order_by(AuditEntry.at, AuditEntry.id))).scalars()
        )


async def _count(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


async def test_each_line_read_is_audited_by_the_key_on_the_line(
    client: httpx.AsyncClient, db: Database
) -> None:
    line, owner = await _line(db)
    headers, actor, client_id = await _key(db, "lines:read")
    before = await _count(db)

    found = await client.get("/api/v1/lines", params={"msisdn": line.msisdn}, headers=headers)
    assert found.status_code == 200, found.text
    assert found.json()["iccid"] == line.iccid
    one = await client.get(f"/api/v1/lines/{line.id}", headers=headers)
    assert one.status_code == 200, one.text
    held = await client.get(f"/api/v1/lines/{line.id}/balances", headers=headers)
    assert held.status_code == 200, held.text
    assert held.json()["wallet"]["available"] == 500

    entries = (await _entries(db))[before:]
    assert [(e.actor, e.action, e.target_type, e.target_id) for e in entries] == [
        (actor, "line.view", "line", str(line.id)),
        (actor, "line.view", "line", str(line.id)),
        (actor, "line.balances", "line", str(line.id)),
    ]
    assert entries[0].details == {
        "account_id": str(owner), "client": str(client_id), "by": "msisdn"
    }
    assert entries[1].details == {"account_id": str(owner), "client": str(client_id)}
    for e in entries:
        assert e.staff_id is None
        assert e.user_agent == "crm-sync/2.1"
        assert e.ip  # the caller's address, as a staff read records it
        # The log is kept for ever: it never holds the number typed.
        assert line.msisdn not in str(e.details)
        assert line.msisdn.lstrip("+") not in str(e.details)


async def test_an_unowned_line_is_recorded_with_no_owner(
    client: httpx.AsyncClient, db: Database
) -> None:
    line = await db.run(lambda s: create_line(s, account_id=None))
    headers, actor, _ = await _key(db, "lines:read")
    r = await client.get(f"/api/v1/lines/{line.id}", headers=headers)
    assert r.status_code == 200, r.text
    last = (await _entries(db))[-1]
    assert (last.actor, last.action, last.target_id) == (actor, "line.view", str(line.id))
    assert last.details["account_id"] is None


async def test_refused_and_failed_reads_record_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    line, _ = await _line(db)
    headers, _, _ = await _key(db, "lines:read")
    wrong_scope, _, _ = await _key(db, "catalog:read")
    before = await _count(db)

    no_key = await client.get(f"/api/v1/lines/{line.id}")
    assert no_key.status_code == 401
    assert no_key.json()["type"].endswith("/not-authenticated")
    scope = await client.get(f"/api/v1/lines/{line.id}", headers=wrong_scope)
    assert scope.status_code == 403
    assert scope.json()["type"].endswith("/forbidden")
    unknown = await client.get(f"/api/v1/lines/{uuid.uuid4()}", headers=headers)
    assert unknown.status_code == 404
    unknown_balances = await client.get(f"/api/v1/lines/{uuid.uuid4()}/balances", headers=headers)
    assert unknown_balances.status_code == 404
    no_number = await client.get("/api/v1/lines", params={"msisdn": "+14155550999"},
                                 headers=headers)
    assert no_number.status_code == 404
    bad = await client.get("/api/v1/lines", params={"msisdn": "not a number"}, headers=headers)
    assert bad.status_code in (404, 422)
    assert bad.json()["field"] == "msisdn"
    not_an_id = await client.get("/api/v1/lines/not-an-id", headers=headers)
    assert not_an_id.status_code == 422
    assert not_an_id.json()["field"] == "line_id"

    assert await _count(db) == before


async def test_the_reads_are_found_by_the_audit_logs_filters(
    client: httpx.AsyncClient, db: Database
) -> None:
    """The DPO's question — who read this line, what did this key read — is the audit log's
    target and actor filters, through their indexes."""
    from simcharge.backoffice.audit import entries

    line, _ = await _line(db)
    headers, actor, _ = await _key(db, "lines:read")
    await client.get(f"/api/v1/lines/{line.id}/balances", headers=headers)
    async with db.read() as s:
        by_target = await entries(s, target_type="line", target_id=str(line.id))
        by_actor = await entries(s, actor=actor)
    assert [e.action for e in by_target] == ["line.balances"]
    assert [e.action for e in by_actor] == ["line.balances"]
