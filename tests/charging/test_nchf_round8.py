"""Nchf_ConvergedCharging v3: two leftovers of the review rounds (eighth round).

What was wrong, per test:

- `test_a_request_after_the_release_is_context_not_found_and_charges_nothing`: a second release
  of a released session, with a new sequence number, was answered `204` and its used units were
  ignored: the network function was told the units were taken care of, and they were never
  charged nor recorded. A released resource is gone (TS 32.291 5.2.2.4, the release "updates and
  releases" the resource; 404 `CONTEXT_NOT_FOUND` is its answer for a resource that does not
  exist): any request after it but a retransmission is `CONTEXT_NOT_FOUND` now, as after a
  timeout, so the network knows (and may report the usage offline). A retransmitted release
  still gets its `204`.
- `test_used_units_in_a_unit_the_group_does_not_rate_are_rating_failed_and_change_nothing`: used
  units in a unit the rating group's service does not count (`totalVolume` for voice, `time`
  for data) counted as zero: the group's reservation was released as if nothing had been used
  (the usage given away) and a new quota granted. The group now gets `RATING_FAILED` (TS 32.291
  ResultCode: the CHF cannot rate "an AVP value that is not recognized or supported in the
  rating") and is left as it was: nothing posted nor released, no new quota; the other groups
  of the request are charged as usual.
- `test_a_post_event_in_a_unit_the_group_does_not_rate_is_rating_failed`: a post event (PEC)
  reporting such units answered `SUCCESS` and charged nothing.
- `test_a_release_reporting_units_the_group_does_not_rate_is_refused_whole`: a release has no
  answer per group (`204`, no body), so there the report is refused whole, 400
  `MANDATORY_IE_INCORRECT` naming the container, and changes nothing: the session stays open,
  its reservations held, for a corrected release (or the timeout).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.charging.models import ChargingSession, SessionState, UsageRecord
from simcharge.db import Database
from simcharge.lines.service import UnitGrant
from tests.charging.helpers import (
    MIB,
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

DATA, VOICE = 200, 100


async def _records(db: Database) -> list[UsageRecord]:
    async with db.read() as s:
        return list((await s.execute(select(UsageRecord).order_by(UsageRecord.quantity))).scalars())


async def _state(db: Database, ref: str) -> str:
    async with db.read() as s:
        found = (
            await s.execute(select(ChargingSession.state).where(ChargingSession.id == uuid.UUID(ref)))
        ).scalar_one()
        return str(found)


async def test_a_request_after_the_release_is_context_not_found_and_charges_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, money=1000, grants=[UnitGrant("DATA_B", 10 * MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})]))
    ref = ref_of(r)
    release = body(t.supi, 1, [rg(DATA, used=[{"totalVolume": MIB}])])
    assert (await api.release(ref, release)).status_code == 204
    before = await balances(db, t.line)

    again = body(t.supi, 2, [rg(DATA, used=[{"totalVolume": 5 * MIB}])])
    r = await api.release(ref, again)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["cause"] == "CONTEXT_NOT_FOUND"
    r = await api.update(ref, body(t.supi, 3, [rg(DATA, used=[{"totalVolume": MIB}])]))
    assert (r.status_code, r.json()["cause"]) == (404, "CONTEXT_NOT_FOUND")
    # The release retransmitted: its own answer, still.
    assert (await api.release(ref, release)).status_code == 204

    assert await balances(db, t.line) == before
    assert [r.quantity for r in await _records(db)] == [MIB]
    assert await _state(db, ref) == SessionState.released.value
    await assert_ledger_balanced(db)


async def test_used_units_in_a_unit_the_group_does_not_rate_are_rating_failed_and_change_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    # At home: voice 0.05 a minute (60/1) from the wallet; data from the bucket.
    t = await make_line(db, money=1000, grants=[UnitGrant("DATA_B", 10 * MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(
        body(
            t.supi,
            0,
            [rg(VOICE, requested={"time": 600}), rg(DATA, requested={"totalVolume": MIB})],
        )
    )
    ref = ref_of(r)
    held = await balances(db, t.line)
    assert held.wallet.reserved == 50

    doc = body(
        t.supi,
        1,
        [
            rg(VOICE, used=[{"totalVolume": 4000}], requested={"time": 600}),
            rg(DATA, used=[{"totalVolume": MIB}], requested={"totalVolume": MIB}),
        ],
    )
    r = await api.update(ref, doc)
    assert r.status_code == 200, r.text
    assert unit_info(r, VOICE) == {"ratingGroup": VOICE, "resultCode": "RATING_FAILED"}
    assert unit_info(r, DATA)["resultCode"] == "SUCCESS"
    view = await balances(db, t.line)
    # Voice: its reservation held as it was, nothing charged; data: charged and granted again.
    assert (view.wallet.available, view.wallet.reserved) == (950, 50)
    assert [(r.service, r.quantity) for r in await _records(db)] == [("data", MIB)]
    # Retransmitted: the same answer, nothing more.
    assert (await api.update(ref, doc)).json() == r.json()

    # A container with units of both kinds: the group's own counts.
    r = await api.update(
        ref, body(t.supi, 2, [rg(VOICE, used=[{"time": 120, "totalVolume": 9}])])
    )
    assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    assert (await api.release(ref, body(t.supi, 3, []))).status_code == 204
    view = await balances(db, t.line)
    assert (view.wallet.available, view.wallet.reserved) == (1000 - 10, 0)  # two minutes
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


async def test_a_post_event_in_a_unit_the_group_does_not_rate_is_rating_failed(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, money=1000)
    api = await nchf(client, db)
    doc = body(
        t.supi,
        0,
        [rg(VOICE, used=[{"serviceSpecificUnits": 3}])],
        oneTimeEvent=True,
        oneTimeEventType="PEC",
    )
    r = await api.create(doc)
    assert r.status_code == 201, r.text
    assert unit_info(r, VOICE) == {"ratingGroup": VOICE, "resultCode": "RATING_FAILED"}
    assert await _records(db) == []
    assert (await balances(db, t.line)).wallet.available == 1000


async def test_a_release_reporting_units_the_group_does_not_rate_is_refused_whole(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, money=1000, grants=[UnitGrant("DATA_B", 10 * MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(
        body(
            t.supi,
            0,
            [rg(VOICE, requested={"time": 600}), rg(DATA, requested={"totalVolume": MIB})],
        )
    )
    ref = ref_of(r)
    before = await balances(db, t.line)
    bad: dict[str, Any] = body(
        t.supi,
        1,
        [rg(VOICE, used=[{"time": 60}]), rg(DATA, used=[{"totalVolume": 5}, {"time": 30}])],
    )
    r = await api.release(ref, bad)
    assert r.status_code == 400, r.text
    problem = r.json()
    assert problem["cause"] == "MANDATORY_IE_INCORRECT"
    assert [p["param"] for p in problem["invalidParams"]] == [
        "/multipleUnitUsage/1/usedUnitContainer/1"
    ]
    assert "rating group 200 (data) counts totalVolume" in problem["invalidParams"][0]["reason"]
    assert await balances(db, t.line) == before
    assert await _records(db) == []
    assert await _state(db, ref) == SessionState.open.value

    good = body(t.supi, 2, [rg(VOICE, used=[{"time": 60}]), rg(DATA, used=[{"totalVolume": 5}])])
    assert (await api.release(ref, good)).status_code == 204
    view = await balances(db, t.line)
    assert (view.wallet.available, view.wallet.reserved) == (995, 0)
    assert sorted((r.service, r.quantity) for r in await _records(db)) == [
        ("data", 5), ("voice", 60)
    ]  # fmt: skip
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


async def test_a_group_reporting_no_units_at_all_counts_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A container with no units (a trigger's report, say) is not a unit mismatch."""
    t = await make_line(db, money=1000)
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 60})]))
    r = await api.update(ref_of(r), body(t.supi, 1, [rg(VOICE, used=[{}], requested={"time": 60})]))
    assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    assert await _records(db) == []
