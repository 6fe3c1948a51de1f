"""Migration `0023_audit_contacts_removed`: the audit rows written before the twelfth round lose
the contacts they kept (README "Audit") — a search's words, an order list's number, the number
beside an adjustment's or an unfreeze's line — and the table is append-only again afterwards.
Run on a database at 0022 holding such rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError

from simcharge import migrate
from simcharge.backoffice.models import AuditEntry
from simcharge.db import Database, create_engine
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from tests.conftest import Backend
from tests.factories import create_line

BEFORE = "0022_customer_second_factor"


async def _back_to_before(url: str) -> None:
    engine = create_engine(url, null_pool=True)
    try:
        await migrate.downgrade(engine, BEFORE)
    finally:
        await engine.dispose()


@pytest.fixture
async def old_db(backend: Backend) -> AsyncIterator[str]:
    """A database at head, for the test to fill and take back to `BEFORE` (the models are
    head's: rows of tables a later migration changed are made before going back)."""
    url = await backend.copy("auditscrub")
    try:
        yield url
    finally:
        await backend.discard(url)


async def _write(db: Database, action: str, details: dict[str, Any], **extra: Any) -> uuid.UUID:
    entry_id = uuid7()
    async with db.transaction() as s:
        await s.execute(
            insert(AuditEntry).values(
                id=entry_id, at=utcnow(), actor="staff:ana", action=action, details=details,
                **extra,
            )
        )
    return entry_id


async def _details(db: Database) -> dict[uuid.UUID, dict[str, Any]]:
    async with db.read() as s:
        return {e.id: e.details for e in (await s.execute(select(AuditEntry))).scalars()}


async def test_old_rows_lose_the_contacts_and_nothing_else(old_db: str) -> None:
    db = Database.from_url(old_db)
    try:
        async with db.transaction() as s:
            line = await create_line(s)
        msisdn, line_id = line.msisdn, line.id
    finally:
        await db.dispose()
    await _back_to_before(old_db)
    db = Database.from_url(old_db)
    try:
        ids = {
            "email": await _write(db, "customer.search", {"q": " Ana@Example.org ", "found": 1}),
            "phone": await _write(db, "customer.search", {"q": "+1 415 555 0101", "found": 0}),
            "uuid": await _write(db, "customer.search", {"q": str(line_id), "found": 1}),
            "name": await _write(db, "customer.search", {"q": "Ana Lim", "found": 2}),
            "list": await _write(db, "order.list", {"found": 3, "msisdn": msisdn, "state": None}),
            "list_none": await _write(db, "order.list", {"found": 0, "msisdn": "+15550000000"}),
            "adjust": await _write(
                db, "adjustment.apply", {"adjustment": "a1", "msisdn": msisdn, "limit": 5},
                target_type="line", target_id=str(line_id),
            ),
            "unfreeze": await _write(db, "line.unfreeze", {"msisdn": msisdn}),
            "new": await _write(
                db, "customer.search", {"kind": "email", "length": 9, "found": 0, "accounts": []}
            ),
            "other": await _write(db, "staff.language", {"msisdn": "kept: not a customer fact"}),
        }
    finally:
        await db.dispose()

    engine = create_engine(old_db, null_pool=True)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()

    db = Database.from_url(old_db)
    try:
        after = await _details(db)
        assert after[ids["email"]] == {"found": 1, "kind": "email", "length": 15}
        assert after[ids["phone"]] == {"found": 0, "kind": "number", "length": 15}
        assert after[ids["uuid"]] == {"found": 1, "kind": "id", "length": 36}
        assert after[ids["name"]] == {"found": 2, "kind": "text", "length": 7}
        assert after[ids["list"]] == {
            "found": 3, "state": None, "line": str(line_id), "number": False
        }
        assert after[ids["list_none"]] == {"found": 0, "number": True}
        assert after[ids["adjust"]] == {"adjustment": "a1", "limit": 5}
        assert after[ids["unfreeze"]] == {}
        assert after[ids["new"]] == {"kind": "email", "length": 9, "found": 0, "accounts": []}
        assert after[ids["other"]] == {"msisdn": "kept: not a customer fact"}
        everything = repr(after)
        assert msisdn not in everything and "Ana@Example.org" not in everything
        assert "Ana Lim" not in everything

        # Append-only again: the trigger the migration lifted is back.
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.transaction() as s:
                await s.execute(
                    update(AuditEntry).where(AuditEntry.id == ids["name"]).values(details={})
                )
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.transaction() as s:
                await s.execute(text("DELETE FROM audit_entries"))
        assert (await _details(db))[ids["name"]] == {"found": 2, "kind": "text", "length": 7}
    finally:
        await db.dispose()


async def test_a_database_without_such_rows_is_left_alone(old_db: str) -> None:
    """Nothing to rewrite: the trigger is never touched (an operator whose role cannot alter
    the table, with a clean log, still migrates)."""
    await _back_to_before(old_db)
    db = Database.from_url(old_db)
    try:
        kept = await _write(db, "customer.search", {"kind": "text", "length": 3, "found": 0})
    finally:
        await db.dispose()
    engine = create_engine(old_db, null_pool=True)
    try:
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()
    db = Database.from_url(old_db)
    try:
        assert (await _details(db))[kept] == {"kind": "text", "length": 3, "found": 0}
    finally:
        await db.dispose()
