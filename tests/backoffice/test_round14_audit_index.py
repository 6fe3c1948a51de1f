"""The audit log filtered on a target's id alone (fourteenth round): the `(target_type,
target_id, at)` index cannot serve a filter without the type, so the page's target filter and
"its trail" links read the whole log (kept for ever). Migration `0026_audit_target_index` adds
`(target_id, at)`; the filter is an exact match, with an id typed in capitals or with spaces
around it read as the same id."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text

from simcharge.backoffice import audit
from simcharge.backoffice.audit import entries_query, target_id_of
from simcharge.config import Settings
from simcharge.db import Database, dialect_name
from tests.backoffice.helpers import new_staff


def _literal(stmt: Any, dialect: str) -> str:
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql as d
    else:
        from sqlalchemy.dialects import sqlite as d  # type: ignore[no-redef]
    return str(stmt.compile(dialect=d.dialect(), compile_kwargs={"literal_binds": True}))


async def test_a_target_id_alone_is_read_through_its_index(db: Database) -> None:
    stmt = entries_query(target_id=str(uuid.uuid4()), limit=100)
    async with db.read() as s:
        dialect = dialect_name(s)
        sql = _literal(stmt, dialect)
        if dialect == "postgresql":
            # A small table would be scanned whatever the indexes: ask whether one serves it.
            await s.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(r[0] for r in await s.execute(text(f"EXPLAIN {sql}")))
            assert "ix_audit_entries_target_id" in plan, plan
            assert "Seq Scan" not in plan, plan
        else:
            plan = "\n".join(str(r[-1]) for r in await s.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "USING INDEX ix_audit_entries_target_id (target_id=?)" in plan, plan
    # With its type too, the older index still serves it.
    stmt = entries_query(target_type="order", target_id=str(uuid.uuid4()))
    async with db.read() as s:
        sql = _literal(stmt, dialect)
        if dialect == "postgresql":
            await s.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(r[0] for r in await s.execute(text(f"EXPLAIN {sql}")))
        else:
            plan = "\n".join(str(r[-1]) for r in await s.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
        assert "ix_audit_entries_target" in plan, plan


def test_a_typed_target_id_is_read_as_the_id_it_is() -> None:
    some = uuid.uuid4()
    assert target_id_of(f"  {str(some).upper()} ") == str(some)
    assert target_id_of(some.hex) == str(some)
    assert target_id_of("  RF01ABC ") == "RF01ABC"  # not an id: as typed, trimmed
    assert target_id_of("   ") is None and target_id_of(None) is None


async def test_the_api_and_the_page_find_a_target_typed_in_capitals(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    target = uuid.uuid4()
    other = uuid.uuid4()

    async def write(s: Any) -> None:
        actor = audit.command_line_actor("test")
        await audit.record(s, actor, "order.check", target_type="order", target_id=target)
        await audit.record(s, actor, "order.check", target_type="order", target_id=other)

    await db.run(write)
    for typed in (str(target), f" {str(target).upper()} ", target.hex):
        r = await client.get("/api/v1/admin/audit", headers=admin.auth,
                             params={"target_id": typed})
        assert r.status_code == 200, r.text
        assert [e["target_id"] for e in r.json()] == [str(target)], typed
    r = await client.get("/api/v1/admin/audit", headers=admin.auth,
                         params={"target_id": str(uuid.uuid4())})
    assert r.json() == []
