"""Nchf_ConvergedCharging v3 end to end; every request and response checked against the YAML."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.charging.models import ChargingSession, SessionState, UsageRecord
from simcharge.charging.nchf import ANSWERS_KEPT, expire_abandoned_sessions
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant
from simcharge.worker.models import OutboxJob
from tests.charging.helpers import (
    MIB,
    Nchf,
    assert_ledger_balanced,
    balances,
    body,
    make_line,
    nchf,
    nf_key,
    open_reservations,
    ref_of,
    restarted,
    rg,
    unit_info,
)

DATA, VOICE, SMS = 200, 100, 300
FRANCE = {"nFPLMNID": {"mcc": "208", "mnc": "01"}}


def in_france(doc: dict[str, Any]) -> dict[str, Any]:
    doc["nfConsumerIdentification"].update(FRANCE)
    return doc


async def test_data_session_reserves_posts_and_releases(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 1024 * MIB, 30)])
    api = await nchf(client, db)

    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})]))
    assert r.status_code == 201, r.text
    assert r.headers["location"].startswith(
        "http://testserver/nchf-convergedcharging/v3/chargingdata/"
    )
    ref = ref_of(r)
    info = unit_info(r, DATA)
    assert info["resultCode"] == "SUCCESS"
    assert info["grantedUnit"] == {"totalVolume": 10 * MIB}
    assert info["validityTime"] == 3600
    assert "finalUnitIndication" not in info
    data = (await balances(db, t.line)).units[0]
    assert (data.remaining, data.reserved) == (1014 * MIB, 10 * MIB)

    r = await api.update(
        ref,
        body(
            t.supi,
            1,
            [rg(DATA, requested={"totalVolume": 10 * MIB}, used=[{"totalVolume": 4 * MIB}])],
        ),
    )
    assert r.status_code == 200, r.text
    assert unit_info(r, DATA)["grantedUnit"] == {"totalVolume": 10 * MIB}
    data = (await balances(db, t.line)).units[0]
    assert (data.remaining, data.reserved) == (1010 * MIB, 10 * MIB)

    r = await api.release(
        ref, body(t.supi, 2, [rg(DATA, used=[{"totalVolume": 3 * MIB}, {"uplinkVolume": 1}])])
    )
    assert r.status_code == 204, r.text
    data = (await balances(db, t.line)).units[0]
    # 1 byte more rounds up to a whole KB (the tariff's increment).
    assert (data.remaining, data.reserved) == (1024 * MIB - 7 * MIB - 1024, 0)
    assert await open_reservations(db) == 0
    async with db.read() as s:
        records = (
            (await s.execute(select(UsageRecord).order_by(UsageRecord.created_at))).scalars().all()
        )
        cs = await s.get(ChargingSession, uuid.UUID(ref))
        line = await s.get(Line, t.line.id)
    assert [r.quantity for r in records] == [4 * MIB, 3 * MIB + 1]
    assert records[1].rated == 3 * MIB + 1024
    assert records[0].from_buckets == 4 * MIB and records[0].charge == 0
    assert cs is not None and cs.state == SessionState.released.value
    assert line is not None and line.last_activity_at is not None
    await assert_ledger_balanced(db)


async def test_voice_from_the_wallet_rounds_and_says_when_the_quota_is_the_last(
    client: httpx.AsyncClient, db: Database
) -> None:
    # Europe: 0.20 USD a minute, 60/60 rounding; $1.00 buys 5 minutes.
    t = await make_line(db, money=100)
    api = await nchf(client, db)
    r = await api.create(in_france(body(t.gpsi, 0, [rg(VOICE, requested={"time": 600})])))
    info = unit_info(r, VOICE)
    assert info["grantedUnit"] == {"time": 300}
    assert info["finalUnitIndication"] == {"finalUnitAction": "TERMINATE"}
    wallet = (await balances(db, t.line)).wallet
    assert (wallet.available, wallet.reserved) == (0, 100)

    r = await api.release(ref_of(r), in_france(body(t.gpsi, 1, [rg(VOICE, used=[{"time": 61}])])))
    assert r.status_code == 204
    wallet = (await balances(db, t.line)).wallet
    assert (wallet.available, wallet.reserved) == (60, 0)  # two started minutes: 0.40
    async with db.read() as s:
        record = (await s.execute(select(UsageRecord))).scalar_one()
    assert (record.zone, record.country, record.rated, record.charge) == ("europe", "FR", 120, 40)
    await assert_ledger_balanced(db)


async def test_buckets_first_soonest_expiring_then_the_wallet(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(
        db,
        money=1000,
        grants=[
            UnitGrant("VOICE_S", 120, 60),
            UnitGrant("VOICE_S", 60, 10),
            UnitGrant("VOICE_S", 600, 30, ("asia",)),
        ],
    )
    api = await nchf(client, db)
    # At home (US): 0.05 a minute, 60/1; the Asia-only bucket is out of scope.
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 300})]))
    assert unit_info(r, VOICE)["grantedUnit"] == {"time": 300}
    r = await api.release(ref_of(r), body(t.supi, 1, [rg(VOICE, used=[{"time": 250}])]))
    view = await balances(db, t.line)
    by_expiry = {b.initial: b.remaining for b in view.units[0].buckets}
    assert by_expiry == {600: 600}  # the two others are used up
    # 70 s from the wallet at 5 cents a minute: ceil(70 * 5 / 60) = 6 cents.
    assert view.wallet.available == 1000 - 6
    async with db.read() as s:
        record = (await s.execute(select(UsageRecord))).scalar_one()
    assert (record.from_buckets, record.from_wallet, record.charge) == (180, 70, 6)
    assert [amount for _, amount in record.taken] == [60, 120, 6]
    await assert_ledger_balanced(db)


async def test_sms_one_time_event_is_charged_at_once(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("SMS", 2, 30)])
    api = await nchf(client, db)
    doc = body(
        t.supi,
        0,
        [rg(SMS, requested={"serviceSpecificUnits": 1})],
        oneTimeEvent=True,
        oneTimeEventType="IEC",
    )
    r = await api.create(doc)
    assert r.status_code == 201
    assert unit_info(r, SMS)["grantedUnit"] == {"serviceSpecificUnits": 1}
    assert (await balances(db, t.line)).units[0].remaining == 1
    assert await open_reservations(db) == 0
    async with db.read() as s:
        cs = (await s.execute(select(ChargingSession))).scalar_one()
    assert cs.state == SessionState.released.value
    # Three at once do not fit (one left, no money): nothing is charged.
    doc = body(
        t.supi,
        0,
        [rg(SMS, requested={"serviceSpecificUnits": 3})],
        oneTimeEvent=True,
        oneTimeEventType="IEC",
    )
    r = await api.create(doc)
    assert unit_info(r, SMS)["resultCode"] == "QUOTA_LIMIT_REACHED"
    assert (await balances(db, t.line)).units[0].remaining == 1
    await assert_ledger_balanced(db)


async def test_result_codes_per_rating_group(client: httpx.AsyncClient, db: Database) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(
        body(
            t.supi,
            0,
            [
                rg(DATA, requested={"totalVolume": 10 * MIB}),
                rg(VOICE, requested={"time": 60}),
                rg(999, requested={"time": 60}),
            ],
        )
    )
    assert r.status_code == 201
    data = unit_info(r, DATA)
    assert data["grantedUnit"] == {"totalVolume": MIB}
    assert data["finalUnitIndication"]["finalUnitAction"] == "TERMINATE"
    assert unit_info(r, VOICE)["resultCode"] == "QUOTA_LIMIT_REACHED"
    assert unit_info(r, 999)["resultCode"] == "RATING_FAILED"


async def test_frozen_and_grace_lines_are_denied(client: httpx.AsyncClient, db: Database) -> None:
    """A subscriber's line that may not be charged: denied per rating group. (A line in stock or
    terminated is no subscriber's: `USER_UNKNOWN`, see test_integrators.py.)"""
    api = await nchf(client, db)
    for state in ("frozen", "grace"):
        t = await make_line(db, money=1000, state=state)
        r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})]))
        assert r.status_code == 201
        assert unit_info(r, DATA)["resultCode"] == "END_USER_SERVICE_DENIED"
    assert await open_reservations(db) == 0


async def test_problem_details(client: httpx.AsyncClient, db: Database) -> None:
    api = await nchf(client, db)
    await make_line(db)
    r = await api.create(body("imsi-999999999999999", 0, [rg(DATA, requested={"totalVolume": 1})]))
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["cause"] == "USER_UNKNOWN"

    r = await api.create(body(None, 0, []))
    assert (r.status_code, r.json()["cause"]) == (400, "CHARGING_FAILED")
    assert r.json()["invalidParams"][0]["param"] == "/subscriberIdentifier"

    r = await api.create({"invocationSequenceNumber": 0}, validate_request=False)
    assert (r.status_code, r.json()["cause"]) == (400, "MANDATORY_IE_MISSING")
    params = {p["param"] for p in r.json()["invalidParams"]}
    assert params == {"/nfConsumerIdentification", "/invocationTimeStamp"}

    r = await api.create(b"[1, 2", validate_request=False)
    assert (r.status_code, r.json()["cause"]) == (400, "INVALID_MSG_FORMAT")

    r = await api.update("0192e4a0-0000-7000-8000-000000000000", body("imsi-1", 1, []))
    assert (r.status_code, r.json()["cause"]) == (404, "CONTEXT_NOT_FOUND")
    r = await api.release("not-a-ref", body("imsi-1", 1, []))
    assert (r.status_code, r.json()["cause"]) == (404, "CONTEXT_NOT_FOUND")


async def test_api_key_and_scope(client: httpx.AsyncClient, db: Database) -> None:
    t = await make_line(db)
    doc = body(t.supi, 0, [])
    # Through the validator too: the 401 and 403 ProblemDetails are the spec's.
    for headers, status in (
        ({}, 401),
        (await nf_key(db, ("lines:read",)), 403),
        ({"Authorization": "Bearer sck_x_y"}, 401),
    ):
        r = await Nchf(client, headers).create(doc)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == status
    assert await open_reservations(db) == 0


async def test_retransmissions_are_answered_again_and_charged_once(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    first = body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})])
    r1 = await api.create(first)
    r2 = await api.create({**first, "retransmissionIndicator": True})
    assert r2.headers["location"] == r1.headers["location"] and r2.json() == r1.json()
    assert await open_reservations(db) == 1
    ref = ref_of(r1)
    update = body(
        t.supi, 1, [rg(DATA, requested={"totalVolume": 10 * MIB}, used=[{"totalVolume": MIB}])]
    )
    u1 = await api.update(ref, update)
    u2 = await api.update(ref, update)
    assert u1.json() == u2.json()
    assert (await balances(db, t.line)).units[0].remaining == 89 * MIB
    # An older sequence number, or the last one with another body, is refused.
    r = await api.update(ref, body(t.supi, 0, [rg(DATA, used=[{"totalVolume": MIB}])]))
    assert (r.status_code, r.json()["cause"]) == (400, "CHARGING_FAILED")
    release = body(t.supi, 2, [rg(DATA, used=[{"totalVolume": MIB}])])
    assert (await api.release(ref, release)).status_code == 204
    assert (await api.release(ref, release)).status_code == 204
    assert (await balances(db, t.line)).units[0].remaining == 98 * MIB
    r = await api.update(ref, body(t.supi, 3, [rg(DATA, requested={"totalVolume": 1})]))
    assert (r.status_code, r.json()["cause"]) == (404, "CONTEXT_NOT_FOUND")
    await assert_ledger_balanced(db)


async def test_a_late_retransmission_gets_its_own_answer(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    create = body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})])
    c1 = await api.create(create)
    ref = ref_of(c1)
    update1 = body(
        t.supi, 1, [rg(DATA, requested={"totalVolume": 2 * MIB}, used=[{"totalVolume": MIB}])]
    )
    u1 = await api.update(ref, update1)
    update2 = body(
        t.supi, 2, [rg(DATA, requested={"totalVolume": 3 * MIB}, used=[{"totalVolume": MIB}])]
    )
    u2 = await api.update(ref, update2)
    assert unit_info(u2, DATA)["grantedUnit"] == {"totalVolume": 3 * MIB}

    # The create, retransmitted after the updates: the create's answer, not the last one.
    again = await api.create({**create, "retransmissionIndicator": True})
    assert again.status_code == 201
    assert again.headers["location"] == c1.headers["location"]
    assert again.json() == c1.json() and again.json()["invocationSequenceNumber"] == 0
    # An update retransmitted after a later one: its own answer.
    late = await api.update(ref, {**update1, "retransmissionIndicator": True})
    assert (late.status_code, late.json()) == (200, u1.json())
    # The same number with another body is another request: refused.
    other = body(t.supi, 1, [rg(DATA, used=[{"totalVolume": 7 * MIB}])])
    r = await api.update(ref, other)
    assert (r.status_code, r.json()["cause"]) == (400, "CHARGING_FAILED")
    assert r.json()["invalidParams"][0]["param"] == "/invocationSequenceNumber"
    # A release with an update's number and body is not that update.
    r = await api.release(ref, update2)
    assert (r.status_code, r.json()["cause"]) == (400, "CHARGING_FAILED")

    release = body(t.supi, 3, [rg(DATA, used=[{"totalVolume": MIB}])])
    assert (await api.release(ref, release)).status_code == 204
    remaining = (await balances(db, t.line)).units[0].remaining
    assert remaining == 97 * MIB
    # After the release: the create, an update and the release still get their answers.
    again = await api.create(create)
    assert (again.status_code, again.json()) == (201, c1.json())
    assert again.headers["location"] == c1.headers["location"]
    assert (await api.update(ref, update2)).json() == u2.json()
    assert (await api.release(ref, release)).status_code == 204
    # Nothing was charged or reserved twice.
    assert (await balances(db, t.line)).units[0].remaining == remaining
    assert await open_reservations(db) == 0
    async with db.read() as s:
        records = (await s.execute(select(UsageRecord))).scalars().all()
    assert sorted(r.external_id.rsplit("/", 2)[1] for r in records) == ["1", "2", "3"]
    await assert_ledger_balanced(db)


async def test_only_the_latest_answers_are_kept(client: httpx.AsyncClient, db: Database) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    create = body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})])
    ref = ref_of(await api.create(create))
    updates = [
        body(t.supi, seq, [rg(DATA, requested={"totalVolume": MIB}, used=[{"totalVolume": 1}])])
        for seq in range(1, ANSWERS_KEPT + 3)
    ]
    answered = [(await api.update(ref, u)).json() for u in updates]
    async with db.read() as s:
        cs = await s.get(ChargingSession, uuid.UUID(ref))
    assert cs is not None
    assert len(cs.answers) == 1 + ANSWERS_KEPT
    # The oldest updates' answers are gone: refused as answered already; the create's stays.
    r = await api.update(ref, updates[0])
    assert (r.status_code, r.json()["cause"]) == (400, "CHARGING_FAILED")
    assert (await api.update(ref, updates[2])).json() == answered[2]
    assert (await api.create(create)).json()["invocationSequenceNumber"] == 0


async def test_usage_too_large_to_keep_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    """The 3GPP type allows 2^64 - 1 used units; what a record and the ledger's 64-bit columns
    cannot hold — in one report, or added up over the session — is a bad value, not a 500."""
    api = await nchf(client, db)
    t = await make_line(db, money=10_000, grants=[UnitGrant("DATA_B", 10**9, 30)])
    r = await api.create(body(t.supi, 1, [rg(DATA, requested={"totalVolume": 1000})]))
    assert r.status_code == 201
    ref = ref_of(r)
    before = await balances(db, t.line)
    for seq, used in ((2, {"totalVolume": 2**64 - 1}), (3, {"uplinkVolume": 2**62})):
        r = await api.update(ref, body(t.supi, seq, [rg(DATA, used=[used])]))
        assert (r.status_code, r.json()["cause"]) == (400, "MANDATORY_IE_INCORRECT")
        assert r.json()["invalidParams"][0]["param"].startswith(
            "/multipleUnitUsage/0/usedUnitContainer/0/")
    # Each report within bounds, their sum over the session not.
    r = await api.update(ref, body(t.supi, 4, [rg(DATA, used=[{"totalVolume": 2**62 - 1}])]))
    assert r.status_code == 200
    after_first = await balances(db, t.line)
    async with db.read() as s:
        records = (await s.execute(select(UsageRecord))).scalars().all()
    r = await api.update(ref, body(t.supi, 5, [rg(DATA, used=[
        {"uplinkVolume": 2**62 - 1, "downlinkVolume": 2**62 - 1}])]))  # fmt: skip
    assert (r.status_code, r.json()["cause"]) == (400, "MANDATORY_IE_INCORRECT")
    assert r.json()["invalidParams"][0]["param"] == "/multipleUnitUsage/0/usedUnitContainer"
    assert await balances(db, t.line) == after_first != before
    async with db.read() as s:
        assert len((await s.execute(select(UsageRecord))).scalars().all()) == len(records)
    await assert_ledger_balanced(db)


async def test_a_refused_quota_is_not_activity(client: httpx.AsyncClient, db: Database) -> None:
    api = await nchf(client, db)

    async def last_activity(t: Any) -> Any:
        async with db.read() as s:
            line = await s.get(Line, t.line.id, populate_existing=True)
            assert line is not None
            return line.last_activity_at

    broke = await make_line(db, money=0)
    r = await api.create(body(broke.supi, 0, [rg(DATA, requested={"totalVolume": MIB})]))
    assert unit_info(r, DATA)["resultCode"] == "QUOTA_LIMIT_REACHED"
    r = await api.update(ref_of(r), body(broke.supi, 1, [rg(999, requested={"time": 60})]))
    assert unit_info(r, 999)["resultCode"] == "RATING_FAILED"
    assert await last_activity(broke) is None

    frozen = await make_line(db, money=1000, state="frozen")
    r = await api.create(body(frozen.supi, 0, [rg(DATA, requested={"totalVolume": MIB})]))
    assert unit_info(r, DATA)["resultCode"] == "END_USER_SERVICE_DENIED"
    assert await last_activity(frozen) is None

    # A quota granted and given back unused is no activity either; used units are.
    t = await make_line(db, money=1000)
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 60})]))
    ref = ref_of(r)
    r = await api.update(ref, body(t.supi, 1, [rg(VOICE, requested={"time": 60}, used=[])]))
    assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    assert await last_activity(t) is None
    await api.release(ref, body(t.supi, 2, [rg(VOICE, used=[{"time": 5}])]))
    assert await last_activity(t) is not None


async def test_every_entry_of_a_rating_group_counts(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(
        body(
            t.supi,
            0,
            [
                rg(DATA, requested={"totalVolume": 4 * MIB}),
                rg(DATA, requested={"totalVolume": 6 * MIB}),
            ],
        )
    )
    # One quota for the group, as much as both entries asked for.
    assert unit_info(r, DATA)["grantedUnit"] == {"totalVolume": 10 * MIB}
    ref = ref_of(r)
    r = await api.update(
        ref,
        body(
            t.supi,
            1,
            [
                rg(DATA, requested={"totalVolume": MIB}, used=[{"totalVolume": MIB}]),
                rg(DATA, used=[{"totalVolume": 5 * MIB}, {"uplinkVolume": MIB}]),
            ],
        ),
    )
    assert unit_info(r, DATA)["grantedUnit"] == {"totalVolume": MIB}
    await api.release(
        ref,
        body(t.supi, 2, [rg(DATA, used=[{"totalVolume": MIB // 2}]), rg(DATA, used=[])]),
    )
    assert (await balances(db, t.line)).units[0].remaining == 100 * MIB - 7 * MIB - MIB // 2
    async with db.read() as s:
        records = (
            (await s.execute(select(UsageRecord).order_by(UsageRecord.external_id)))
            .scalars()
            .all()
        )
    assert [(r.quantity, r.from_buckets, r.unbilled) for r in records] == [
        (7 * MIB, 7 * MIB, 0),
        (MIB // 2, MIB // 2, 0),
    ]
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


async def test_a_group_left_out_of_an_update_keeps_its_quota(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(
        db, grants=[UnitGrant("DATA_B", 100 * MIB, 30), UnitGrant("VOICE_S", 600, 30)]
    )
    api = await nchf(client, db)
    r = await api.create(
        body(
            t.supi, 0, [rg(DATA, requested={"totalVolume": MIB}), rg(VOICE, requested={"time": 60})]
        )
    )
    ref = ref_of(r)
    await api.update(ref, body(t.supi, 1, [rg(DATA, used=[{"totalVolume": MIB}])]))
    view = {u.unit: u for u in (await balances(db, t.line)).units}
    assert view["VOICE_S"].reserved == 60 and view["DATA_B"].reserved == 0
    await api.release(ref, body(t.supi, 2, []))
    assert await open_reservations(db) == 0


async def test_a_rating_group_configured_away_keeps_its_sessions_service(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=1000)  # voice at home: 0.05 a minute, 60/1
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 600})]))
    ref = ref_of(r)
    assert (await balances(db, t.line)).wallet.reserved == 50
    # The operator renumbers voice (100 → 101) while the call goes on.
    async with restarted(api, db, settings, charging_rating_groups="101=voice,200=data") as later:
        r = await later.update(
            ref, body(t.supi, 1, [rg(VOICE, used=[{"time": 60}], requested={"time": 60})])
        )
        assert unit_info(r, VOICE)["grantedUnit"] == {"time": 60}
        r = await later.release(ref, body(t.supi, 2, []))
        assert r.status_code == 204
        # A session that did not have the group before: the configuration decides.
        r = await later.create(body(t.supi, 0, [rg(VOICE, requested={"time": 60})]))
        assert unit_info(r, VOICE) == {"ratingGroup": VOICE, "resultCode": "RATING_FAILED"}
    wallet = (await balances(db, t.line)).wallet
    assert (wallet.available, wallet.reserved) == (995, 0)  # the minute used, once
    assert await open_reservations(db) == 0
    async with db.read() as s:
        cs = await s.get(ChargingSession, uuid.UUID(ref))
    assert cs is not None and cs.state == SessionState.released.value
    await assert_ledger_balanced(db)


async def test_abandoned_sessions_time_out_and_release(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})]))
    assert await open_reservations(db) == 1
    assert await db.run(lambda s: expire_abandoned_sessions(s, settings)) == 0
    later = utcnow() + timedelta(
        seconds=settings.charging_validity_seconds + settings.charging_session_grace_seconds + 1
    )
    assert await db.run(lambda s: expire_abandoned_sessions(s, settings, now=later)) == 1
    assert await open_reservations(db) == 0
    assert (await balances(db, t.line)).units[0].remaining == 100 * MIB
    r = await api.update(ref_of(r), body(t.supi, 1, [rg(DATA, used=[{"totalVolume": MIB}])]))
    assert (r.status_code, r.json()["cause"]) == (404, "CONTEXT_NOT_FOUND")
    await assert_ledger_balanced(db)


async def test_usage_alerts_are_sent_once(client: httpx.AsyncClient, db: Database) -> None:
    t = await make_line(db, money=300, grants=[UnitGrant("DATA_B", 10 * MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})]))
    ref = ref_of(r)
    await api.update(
        ref,
        body(
            t.supi,
            1,
            [rg(DATA, requested={"totalVolume": 2 * MIB}, used=[{"totalVolume": 9 * MIB}])],
        ),
    )
    await api.update(
        ref,
        body(
            t.supi,
            2,
            [rg(DATA, requested={"totalVolume": 2 * MIB}, used=[{"totalVolume": MIB // 2}])],
        ),
    )
    # Home data: 0.02 a MB; the bucket is used up, then 5 MB from the wallet: 3.00 → 2.90 → 1.xx.
    await api.release(ref, body(t.supi, 3, [rg(DATA, used=[{"totalVolume": 2 * MIB}])]))
    await api.create(
        body(t.supi, 0, [rg(DATA, requested={"totalVolume": 60 * MIB})]) | {"chargingId": 7}
    )
    async with db.read() as s:
        jobs = (
            (await s.execute(select(OutboxJob).where(OutboxJob.dedupe_key.like("usage:%"))))
            .scalars()
            .all()
        )
    templates = sorted(j.payload["template"] for j in jobs)
    assert templates == ["bucket.used_80", "bucket.used_up"], templates


async def test_low_balance_alert(client: httpx.AsyncClient, db: Database) -> None:
    t = await make_line(db, money=250)
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 100 * MIB})]))
    await api.release(ref_of(r), body(t.supi, 1, [rg(DATA, used=[{"totalVolume": 30 * MIB}])]))
    async with db.read() as s:
        jobs = (
            (await s.execute(select(OutboxJob).where(OutboxJob.dedupe_key.like("usage:low:%"))))
            .scalars()
            .all()
        )
    assert [j.payload["template"] for j in jobs] == ["balance.low"]
    assert jobs[0].payload["params"]["balance"] == 250 - 60


async def test_the_worker_times_sessions_out(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    import simcharge.worker.jobs  # noqa: F401 - registers every job
    from simcharge.worker.registry import JobContext, registry

    assert "charging.expire_sessions" in registry.periodic
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})]))
    async with db.transaction() as s:
        for cs in (await s.execute(select(ChargingSession))).scalars():
            cs.deadline = utcnow() - timedelta(seconds=1)
    handler = registry.handlers["charging.expire_sessions"]
    await handler(JobContext(db, settings, None, client), {})  # type: ignore[arg-type]
    assert await open_reservations(db) == 0


def _requests_counted(text: str, operation: str, result: str) -> float:
    prefix = f'simcharge_charging_requests_total{{operation="{operation}",result="{result}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_charging_requests_are_counted_in_the_metrics(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    before = (await client.get("/metrics")).text
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})]))
    assert r.status_code == 201, r.text
    r = await api.release(ref_of(r), body(t.supi, 1, [rg(DATA, used=[{"totalVolume": 1}])]))
    assert r.status_code == 204
    r = await api.release("no-such-ref", body(t.supi, 1, []))
    assert r.status_code == 404
    after = (await client.get("/metrics")).text
    for operation, result in (("create", "ok"), ("release", "ok")):
        assert _requests_counted(after, operation, result) == (
            _requests_counted(before, operation, result) + 1
        )
    failed = [line for line in after.splitlines()
              if line.startswith('simcharge_charging_requests_total{operation="release"')
              and 'result="ok"' not in line]
    assert failed, after
