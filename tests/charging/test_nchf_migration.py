"""Migration 0007: sessions opened before it keep the answer they had, by sequence number."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from simcharge import migrate
from simcharge.db import JSONType, UTCDateTime, create_engine
from tests.conftest import Backend

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _sessions(*columns: sa.ColumnClause[Any]) -> sa.TableClause:
    return sa.table(
        "charging_sessions",
        sa.column("id", sa.Uuid()),
        sa.column("line_id", sa.Uuid()),
        sa.column("client", sa.String()),
        sa.column("subscriber", sa.String()),
        sa.column("state", sa.String()),
        sa.column("sequence", sa.BigInteger()),
        sa.column("groups", JSONType),
        sa.column("deadline", UTCDateTime()),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
        *columns,
    )


OLD = _sessions(sa.column("request_hash", sa.String()), sa.column("last_response", JSONType))
NEW = _sessions(sa.column("answers", JSONType))


def _answer(seq: int) -> dict[str, Any]:
    return {"invocationTimeStamp": "2026-12-01T09:00:00.000Z", "invocationSequenceNumber": seq}


async def test_sessions_keep_their_last_answer_across_the_migration(backend: Backend) -> None:
    url = await backend.copy("answers")
    engine = create_engine(url, null_pool=True)
    ids = {name: uuid.uuid4() for name in ("fresh", "updated", "released")}
    rows = {
        # (state, sequence, last_response, updated_at)
        "fresh": ("open", 0, _answer(0), T),
        "updated": ("open", 3, _answer(3), T + timedelta(minutes=5)),
        "released": ("released", 4, {}, T + timedelta(minutes=9)),
    }
    try:
        await migrate.downgrade(engine, "0006_backoffice")
        async with engine.begin() as conn:
            await conn.execute(
                OLD.insert(),
                [
                    {
                        "id": ids[name],
                        "line_id": uuid.uuid4(),
                        "client": "smf",
                        "subscriber": "imsi-001010000000001",
                        "state": state,
                        "sequence": seq,
                        "groups": {},
                        "deadline": T + timedelta(hours=1),
                        "created_at": T,
                        "updated_at": updated,
                        "request_hash": name * 4,
                        "last_response": last,
                    }
                    for name, (state, seq, last, updated) in rows.items()
                ],
            )
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            found = dict((await conn.execute(sa.select(NEW.c.id, NEW.c.answers))).all())
        assert found[ids["fresh"]] == {
            "0": {"op": "create", "hash": "fresh" * 4, "body": _answer(0)}
        }
        assert found[ids["updated"]] == {
            "3": {"op": "update", "hash": "updated" * 4, "body": _answer(3)}
        }
        assert found[ids["released"]] == {
            "4": {"op": "release", "hash": "released" * 4, "body": None}
        }
        await migrate.downgrade(engine, "0006_backoffice")
        async with engine.connect() as conn:
            back = {
                r.id: (r.request_hash, r.last_response)
                for r in await conn.execute(
                    sa.select(OLD.c.id, OLD.c.request_hash, OLD.c.last_response)
                )
            }
        assert back == {ids[n]: (n * 4, rows[n][2]) for n in rows}
    finally:
        await engine.dispose()
        await backend.discard(url)
