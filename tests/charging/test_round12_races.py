"""The Nchf money path under concurrency (review round 12), on PostgreSQL with real connections:
a create retransmitted while the first is still being answered, an update retransmitted at
once, and a release racing the sweep of abandoned sessions in either order. Each must charge
exactly once (or not at all, where the resource is gone), leave no reservation open and keep
the ledger balanced; the answers must say what happened. The review found these held (the
session's row lock, the derived transfer ids); the tests keep them so.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.models import ChargingSession, UsageRecord
from simcharge.charging.nchf import expire_abandoned_sessions
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant
from tests.charging.helpers import (
    MIB,
    Nchf,
    assert_ledger_balanced,
    balances,
    body,
    make_line,
    nchf,
    open_reservations,
    ref_of,
    rg,
    unit_info,
)
from tests.locks import app_client, until_waiting

if TYPE_CHECKING:  # (imported by name, pytest would take the class for a test)
    from tests.charging.helpers import TestLine

DATA = 200


async def _usage(db: Database) -> list[tuple[int, int]]:
    async with db.read() as s:
        rows = await s.execute(select(UsageRecord.quantity, UsageRecord.from_buckets))
        return sorted((int(q), int(b)) for q, b in rows)


async def _state(db: Database, ref: str) -> str:
    async with db.read() as s:
        found = await s.scalar(
            select(ChargingSession.state).where(ChargingSession.id == uuid.UUID(ref))
        )
        return str(found)


async def _pots_held(db: Database, t: TestLine, holding: asyncio.Event,
                     release: asyncio.Event) -> None:
    """A third transaction holding the line's pots, so that the requests under test line up."""
    async with db.transaction() as s:
        await s.execute(
            text("SELECT id FROM ledger_accounts WHERE line_id = :l FOR UPDATE"),
            {"l": t.line.id},
        )
        holding.set()
        await release.wait()


async def _open(db: Database, client: httpx.AsyncClient) -> tuple[TestLine, Nchf, str]:
    """A line with 100 MiB of data, and a session holding 10 MiB of it."""
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})]))
    assert r.status_code == 201, r.text
    return t, api, ref_of(r)


@pytest.mark.postgres_only
async def test_a_create_retransmitted_while_the_first_is_answered_opens_one_session(
    fresh_db: Database, settings: Settings
) -> None:
    db = fresh_db
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    holding, release = asyncio.Event(), asyncio.Event()
    async with app_client(db, settings) as client:
        api = await nchf(client, db)
        first = body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})])
        held = asyncio.create_task(_pots_held(db, t, holding, release))
        await holding.wait()
        one = asyncio.create_task(api.create(first))
        two = asyncio.create_task(api.create({**first, "retransmissionIndicator": True}))
        await until_waiting(db, 2)
        release.set()
        await held
        r1, r2 = await one, await two
    assert (r1.status_code, r2.status_code) == (201, 201), (r1.text, r2.text)
    assert r1.headers["location"] == r2.headers["location"] and r1.json() == r2.json()
    async with db.read() as s:
        assert await s.scalar(select(func.count()).select_from(ChargingSession)) == 1
    assert await open_reservations(db) == 1
    assert (await balances(db, t.line)).units[0].remaining == 90 * MIB
    await assert_ledger_balanced(db)


@pytest.mark.postgres_only
async def test_an_update_retransmitted_at_once_is_charged_once(
    fresh_db: Database, settings: Settings
) -> None:
    db = fresh_db
    holding, release = asyncio.Event(), asyncio.Event()
    async with app_client(db, settings) as client:
        t, api, ref = await _open(db, client)
        update = body(t.supi, 1, [rg(DATA, requested={"totalVolume": 10 * MIB},
                                     used=[{"totalVolume": 4 * MIB}])])  # fmt: skip
        held = asyncio.create_task(_pots_held(db, t, holding, release))
        await holding.wait()
        one = asyncio.create_task(api.update(ref, update))
        await until_waiting(db, 1)  # the first holds the session, waits for the pots
        two = asyncio.create_task(api.update(ref, {**update, "retransmissionIndicator": True}))
        await until_waiting(db, 2)  # the retransmission waits for the session
        release.set()
        await held
        r1, r2 = await one, await two
    assert (r1.status_code, r2.status_code) == (200, 200), (r1.text, r2.text)
    assert r1.json() == r2.json()
    assert await _usage(db) == [(4 * MIB, 4 * MIB)]
    assert await open_reservations(db) == 1  # the new quota's, once
    assert (await balances(db, t.line)).units[0].remaining == 100 * MIB - 4 * MIB - 10 * MIB
    await assert_ledger_balanced(db)


async def _sweep(db: Database, settings: Settings) -> int:
    later = utcnow() + timedelta(
        seconds=settings.charging_validity_seconds + settings.charging_session_grace_seconds + 1
    )
    return await db.run(lambda s: expire_abandoned_sessions(s, settings, now=later))


@pytest.mark.postgres_only
async def test_a_release_before_the_sweep_is_charged_and_the_sweep_finds_nothing(
    fresh_db: Database, settings: Settings
) -> None:
    """The release holds the session (waiting for the pots): the sweep skips it, and the
    release posts what was used and frees the rest."""
    db = fresh_db
    holding, release = asyncio.Event(), asyncio.Event()
    async with app_client(db, settings) as client:
        t, api, ref = await _open(db, client)
        held = asyncio.create_task(_pots_held(db, t, holding, release))
        await holding.wait()
        releasing = asyncio.create_task(
            api.release(ref, body(t.supi, 1, [rg(DATA, used=[{"totalVolume": 3 * MIB}])]))
        )
        await until_waiting(db, 1)
        swept = await _sweep(db, settings)  # does not wait: the session is someone else's
        release.set()
        await held
        r = await releasing
    assert r.status_code == 204, r.text
    assert swept == 0
    assert await _state(db, ref) == "released"
    assert await _usage(db) == [(3 * MIB, 3 * MIB)]
    assert await open_reservations(db) == 0
    assert (await balances(db, t.line)).units[0].remaining == 97 * MIB
    await assert_ledger_balanced(db)


@pytest.mark.postgres_only
async def test_a_release_after_the_sweep_took_the_session_is_refused_and_charges_nothing(
    fresh_db: Database, settings: Settings
) -> None:
    """The sweep holds the session (waiting for the pots): the release waits for it, then finds
    the resource timed out — 404, so that the network knows its units were not charged — and
    nothing is posted twice or left reserved."""
    db = fresh_db
    holding, release = asyncio.Event(), asyncio.Event()
    async with app_client(db, settings) as client:
        t, api, ref = await _open(db, client)
        held = asyncio.create_task(_pots_held(db, t, holding, release))
        await holding.wait()
        sweeping = asyncio.create_task(_sweep(db, settings))
        await until_waiting(db, 1)
        releasing = asyncio.create_task(
            api.release(ref, body(t.supi, 1, [rg(DATA, used=[{"totalVolume": 3 * MIB}])]))
        )
        await until_waiting(db, 2)
        release.set()
        await held
        swept, r = await sweeping, await releasing
    assert swept == 1
    assert (r.status_code, r.json()["cause"]) == (404, "CONTEXT_NOT_FOUND")
    assert await _state(db, ref) == "timed_out"
    assert await _usage(db) == []
    assert await open_reservations(db) == 0
    assert (await balances(db, t.line)).units[0].remaining == 100 * MIB
    await assert_ledger_balanced(db)


async def test_a_line_frozen_mid_session_keeps_its_quota_and_gets_no_more(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Both databases: the quota granted before the freeze is what the use reported after it is
    posted against; the new quota asked for is denied; the release frees what is left."""
    t, api, ref = await _open(db, client)

    async def freeze(s: AsyncSession) -> None:
        await s.execute(update(Line).where(Line.id == t.line.id).values(state="frozen"))

    await db.run(freeze)
    r = await api.update(ref, body(t.supi, 1, [rg(DATA, requested={"totalVolume": 10 * MIB},
                                                  used=[{"totalVolume": 4 * MIB}])]))  # fmt: skip
    assert r.status_code == 200, r.text
    assert unit_info(r, DATA)["resultCode"] == "END_USER_SERVICE_DENIED"
    assert await _usage(db) == [(4 * MIB, 4 * MIB)]
    assert await open_reservations(db) == 0  # the rest of the old quota freed, no new one
    r = await api.release(ref, body(t.supi, 2, [rg(DATA, used=[{"totalVolume": MIB}])]))
    assert r.status_code == 204
    # Beyond any quota (none stood): recorded, unbilled, nothing taken.
    async with db.read() as s:
        unbilled = await s.scalar(select(func.sum(UsageRecord.unbilled)))
    assert unbilled == MIB
    assert (await balances(db, t.line)).units[0].remaining == 96 * MIB
    await assert_ledger_balanced(db)
