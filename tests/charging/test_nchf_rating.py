"""Nchf end to end: who the subscriber is, where, at which tariff; every request and response
checked against the YAML."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.models import ChargingSession, SessionState, UsageRecord
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.service import UnitGrant
from tests.charging.helpers import (
    MIB,
    assert_ledger_balanced,
    balances,
    body,
    load_tariffs_only,
    make_line,
    nchf,
    open_reservations,
    ref_of,
    restarted,
    rg,
    unit_info,
)

DATA, VOICE, SMS = 200, 100, 300

# Voice at home costs 0.05 a minute by the second, but at least 0.10 a call; Europe has voice
# only; nowhere has SMS.
TARIFFS = """
[[tariffs]]
service = "voice"
zone = "home"
currency = "USD"
price = "0.05"
per = "minute"
rounding = "1/1"
minimum = "0.10"

[[tariffs]]
service = "voice"
zone = "europe"
currency = "USD"
price = "0.20"
per = "minute"
rounding = "60/60"

[[tariffs]]
service = "data"
zone = "home"
currency = "USD"
price = "0.02"
per = "MB"
rounding = "1KB"
"""


def plmn(mcc: str) -> dict[str, str]:
    return {"mcc": mcc, "mnc": "01"}


def nr_location(mcc: str) -> dict[str, Any]:
    return {
        "nrLocation": {
            "tai": {"plmnId": plmn(mcc), "tac": "0001"},
            "ncgi": {"plmnId": plmn(mcc), "nrCellId": "000000001"},
        }
    }


def eutra_location(mcc: str) -> dict[str, Any]:
    return {
        "eutraLocation": {
            "tai": {"plmnId": plmn(mcc), "tac": "0001"},
            "ecgi": {"plmnId": plmn(mcc), "eutraCellId": "0000001"},
        }
    }


async def records(db: Database) -> list[UsageRecord]:
    async with db.read() as s:
        return list(
            (await s.execute(select(UsageRecord).order_by(UsageRecord.external_id))).scalars()
        )


async def reserved_by_zone(db: Database, t: Any) -> dict[str, int]:
    return {b.zones[0]: b.reserved for b in (await balances(db, t.line)).units[0].buckets}


async def test_the_subscriber_may_be_the_pdu_sessions_served_gpsi(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 10 * MIB, 30)])
    api = await nchf(client, db)
    pdu = {"pDUSessionChargingInformation": {"userInformation": {"servedGPSI": t.gpsi}}}
    r = await api.create(body(None, 0, [rg(DATA, requested={"totalVolume": MIB})], **pdu))
    assert r.status_code == 201, r.text
    assert unit_info(r, DATA)["grantedUnit"] == {"totalVolume": MIB}
    assert (await balances(db, t.line)).units[0].reserved == MIB
    async with db.read() as s:
        cs = (await s.execute(select(ChargingSession))).scalar_one()
    assert (cs.line_id, cs.subscriber) == (t.line.id, t.gpsi)
    # A GPSI no line has is an unknown user, as a SUPI would be.
    pdu = {"pDUSessionChargingInformation": {"userInformation": {"servedGPSI": "msisdn-1999"}}}
    r = await api.create(body(None, 0, [rg(DATA, requested={"totalVolume": MIB})], **pdu))
    assert (r.status_code, r.json()["cause"]) == (404, "USER_UNKNOWN")


async def test_the_user_location_picks_the_zone_its_tariff_and_buckets(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(
        db,
        money=100,
        grants=[
            UnitGrant("DATA_B", 10 * MIB, 30, ("home",)),
            UnitGrant("DATA_B", 10 * MIB, 60, ("europe",)),
            UnitGrant("DATA_B", 10 * MIB, 90, ("asia",)),
        ],
    )
    api = await nchf(client, db)

    def in_place(doc: dict[str, Any], location: dict[str, Any]) -> dict[str, Any]:
        # The SMF is at home (US); the user's cell is elsewhere: the cell decides.
        doc["nfConsumerIdentification"]["nFPLMNID"] = plmn("310")
        doc["pDUSessionChargingInformation"] = {"userLocationinfo": location}
        return doc

    units = [rg(VOICE, requested={"time": 600}), rg(DATA, requested={"totalVolume": 20 * MIB})]
    r = await api.create(in_place(body(t.supi, 0, units), nr_location("208")))  # France
    # Europe's tariff: 0.20 a minute, so 1.00 buys 5 minutes (at home it would buy 20).
    assert unit_info(r, VOICE)["grantedUnit"] == {"time": 300}
    # Data from the Europe bucket only (the money went to the voice quota).
    data = unit_info(r, DATA)
    assert data["grantedUnit"] == {"totalVolume": 10 * MIB}
    assert data["finalUnitIndication"] == {"finalUnitAction": "TERMINATE"}
    assert await reserved_by_zone(db, t) == {"home": 0, "europe": 10 * MIB, "asia": 0}
    ref = ref_of(r)

    # The user moves to the Philippines (an E-UTRA cell): Asia's bucket from now on.
    r = await api.update(
        ref,
        in_place(
            body(
                t.supi,
                1,
                [
                    rg(VOICE, used=[{"time": 61}]),
                    rg(DATA, requested={"totalVolume": MIB}, used=[{"totalVolume": 2 * MIB}]),
                ],
            ),
            eutra_location("515"),
        ),
    )
    assert unit_info(r, DATA)["grantedUnit"] == {"totalVolume": MIB}
    assert await reserved_by_zone(db, t) == {"home": 0, "europe": 0, "asia": MIB}
    await api.release(ref, body(t.supi, 2, [rg(DATA, used=[{"totalVolume": MIB}])]))
    # What was used in France was charged there, what was used in the Philippines here.
    found = await records(db)
    assert [(r.service, r.country, r.zone) for r in found] == [
        ("voice", "FR", "europe"),
        ("data", "FR", "europe"),
        ("data", "PH", "asia"),
    ]
    assert found[0].charge == 40  # two started minutes in Europe
    view = await balances(db, t.line)
    assert view.wallet.available == 60
    left = {b.zones[0]: b.remaining for b in view.units[0].buckets}
    assert left == {"home": 10 * MIB, "europe": 8 * MIB, "asia": 9 * MIB}
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


async def test_no_tariff_for_the_service_in_the_zone_is_rating_failed(
    client: httpx.AsyncClient, db: Database
) -> None:
    await load_tariffs_only(db, TARIFFS)
    t = await make_line(db, money=1000, catalog=False)
    api = await nchf(client, db)
    r = await api.create(
        body(t.supi, 0, [rg(VOICE, requested={"time": 60}), rg(SMS, requested={})])
    )
    assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    assert unit_info(r, SMS) == {"ratingGroup": SMS, "resultCode": "RATING_FAILED"}
    doc = body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})])
    doc["nfConsumerIdentification"]["nFPLMNID"] = plmn("208")
    r = await api.create(doc)
    assert unit_info(r, DATA) == {"ratingGroup": DATA, "resultCode": "RATING_FAILED"}
    wallet = (await balances(db, t.line)).wallet
    assert wallet.reserved == 10  # the voice quota at home only: its minimum
    assert await open_reservations(db) == 1


async def test_usage_is_rated_at_the_tariff_its_quota_was_granted_at(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await load_tariffs_only(db, TARIFFS)
    t = await make_line(db, money=1000, catalog=False)
    old = await make_line(db, money=1000, catalog=False)
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 600})]))
    assert (await balances(db, t.line)).wallet.reserved == 50  # 10 minutes at 0.05
    ref = ref_of(r)
    r = await api.create(body(old.supi, 0, [rg(VOICE, requested={"time": 600})]))
    old_ref = ref_of(r)

    async def granted_before_groups_kept_their_tariff(s: AsyncSession) -> None:
        cs = await s.get(ChargingSession, uuid.UUID(old_ref))
        assert cs is not None
        cs.groups = {k: {f: v for f, v in g.items() if f != "rate"} for k, g in cs.groups.items()}

    await db.run(granted_before_groups_kept_their_tariff)
    # Voice at home is taken out of the catalog during the calls.
    voice_at_home = "[[tariffs]]" + TARIFFS.split("[[tariffs]]")[1]
    await load_tariffs_only(db, TARIFFS.replace(voice_at_home, ""))
    async with restarted(api, db, settings) as later:
        r = await later.update(
            ref, body(t.supi, 1, [rg(VOICE, used=[{"time": 120}], requested={"time": 60})])
        )
        assert unit_info(r, VOICE)["resultCode"] == "RATING_FAILED"  # no new quota
        r = await later.release(ref, body(t.supi, 2, [rg(VOICE, used=[{"time": 30}])]))
        assert r.status_code == 204
        r = await later.release(old_ref, body(old.supi, 1, [rg(VOICE, used=[{"time": 60}])]))
        assert r.status_code == 204
    # The 2 minutes used of the quota are charged at its tariff; the 30 s used beyond it (no
    # quota stood) are unbilled. The old session knows no tariff at all: all it used is unbilled.
    found = await records(db)

    def charged(line_id: uuid.UUID) -> list[tuple[int, int, int, int]]:
        return [(r.quantity, r.rated, r.charge, r.unbilled) for r in found if r.line_id == line_id]

    assert charged(t.line.id) == [(120, 120, 10, 0), (30, 30, 0, 30)]
    assert charged(old.line.id) == [(60, 60, 0, 60)]
    for line, available in ((t.line, 990), (old.line, 1000)):
        wallet = (await balances(db, line)).wallet
        assert (wallet.available, wallet.reserved) == (available, 0)
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


async def test_a_minimum_charge_end_to_end(client: httpx.AsyncClient, db: Database) -> None:
    await load_tariffs_only(db, TARIFFS)
    t = await make_line(db, money=100, catalog=False)
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 60})]))
    assert unit_info(r, VOICE)["grantedUnit"] == {"time": 60}
    ref = ref_of(r)
    # 10 s cost ceil(10 × 5 / 60) = 1 cent: the minimum, 10, is charged.
    r = await api.update(
        ref, body(t.supi, 1, [rg(VOICE, requested={"time": 60}, used=[{"time": 10}])])
    )
    wallet = (await balances(db, t.line)).wallet
    assert (wallet.available, wallet.reserved) == (90, 0)
    # Costs are cumulative in a call: 20 s in all still cost the minimum, nothing more.
    await api.release(ref, body(t.supi, 2, [rg(VOICE, used=[{"time": 10}])]))
    wallet = (await balances(db, t.line)).wallet
    assert (wallet.available, wallet.reserved) == (90, 0)
    assert [(r.quantity, r.charge) for r in await records(db)] == [(10, 10), (10, 0)]
    # A wallet below the minimum cannot pay for any call.
    poor = await make_line(db, money=9, catalog=False)
    r = await api.create(body(poor.supi, 0, [rg(VOICE, requested={"time": 60})]))
    assert unit_info(r, VOICE)["resultCode"] == "QUOTA_LIMIT_REACHED"
    await assert_ledger_balanced(db)


async def test_sms_as_a_session_reserves_then_charges(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, money=100, grants=[UnitGrant("SMS", 1, 30)])
    api = await nchf(client, db)
    sms = {"sMSChargingInformation": {"userLocationinfo": eutra_location("208")}}
    r = await api.create(
        body(
            t.supi,
            0,
            [rg(SMS, requested={"serviceSpecificUnits": 2})],
            **sms,
        )
    )
    info = unit_info(r, SMS)
    assert info["grantedUnit"] == {"serviceSpecificUnits": 2}
    assert info["validityTime"] == 3600
    # Reserved, not charged: the bucket's message, then 0.15 (Europe) from the wallet.
    view = await balances(db, t.line)
    assert (view.units[0].reserved, view.wallet.reserved) == (1, 15)
    async with db.read() as s:
        cs = (await s.execute(select(ChargingSession))).scalar_one()
    assert cs.state == SessionState.open.value
    # One message was delivered: the bucket pays it, the wallet's reservation is released.
    r = await api.release(
        ref_of(r), body(t.supi, 1, [rg(SMS, used=[{"serviceSpecificUnits": 1}])], **sms)
    )
    assert r.status_code == 204
    view = await balances(db, t.line)
    assert sum(u.remaining + u.reserved for u in view.units) == 0  # the bucket is used up
    assert (view.wallet.available, view.wallet.reserved) == (100, 0)
    [record] = await records(db)
    assert (record.service, record.zone, record.from_buckets, record.charge) == (
        "sms",
        "europe",
        1,
        0,
    )
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


async def test_a_post_event_is_rated_and_charged_at_once_and_closes_the_resource(
    client: httpx.AsyncClient, db: Database
) -> None:
    """PEC (post event charging, TS 32.290): the event happened; the units it used are rated
    where the subscriber is and charged in the one request — the bucket first, then the
    wallet — and the resource is closed. What the line cannot pay is recorded unbilled and the
    answer says so."""
    t = await make_line(db, money=20, grants=[UnitGrant("SMS", 1, 30)])
    api = await nchf(client, db)
    sms = {"sMSChargingInformation": {"userLocationinfo": eutra_location("208")}}

    def event(used: int, seq: int = 0) -> dict[str, Any]:
        return body(t.supi, seq, [rg(SMS, used=[{"serviceSpecificUnits": used}])],
                    oneTimeEvent=True, oneTimeEventType="PEC", **sms)

    # Two messages: the bucket's, then 0.15 (Europe) from the wallet.
    r = await api.create(event(2))
    assert r.status_code == 201, r.text
    assert unit_info(r, SMS) == {"ratingGroup": SMS, "resultCode": "SUCCESS"}
    view = await balances(db, t.line)
    assert sum(u.remaining + u.reserved for u in view.units) == 0
    assert (view.wallet.available, view.wallet.reserved) == (5, 0)
    async with db.read() as s:
        assert (await s.execute(select(ChargingSession.state))).scalar_one() == (
            SessionState.released.value)
    # Two more: 0.05 left pays for neither; both are recorded, unbilled.
    r = await api.create(event(2, seq=1))
    assert unit_info(r, SMS)["resultCode"] == "QUOTA_LIMIT_REACHED"
    assert (await balances(db, t.line)).wallet.available == 5
    first, second = sorted(await records(db), key=lambda record: record.unbilled)
    assert (first.quantity, first.from_buckets, first.charge, first.unbilled) == (2, 1, 15, 0)
    assert (second.quantity, second.charge, second.unbilled) == (2, 0, 2)
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


async def test_a_one_time_event_of_the_other_kind_is_refused_by_name(
    client: httpx.AsyncClient, db: Database
) -> None:
    """An immediate event (IEC) requests units and reports none used; a post event (PEC)
    reports the units used and requests none. The other is a 400 naming the field, and nothing
    is charged or opened."""
    t = await make_line(db, money=100, grants=[UnitGrant("SMS", 2, 30)])
    api = await nchf(client, db)
    both = rg(SMS, requested={"serviceSpecificUnits": 1}, used=[{"serviceSpecificUnits": 1}])
    for kind, param in (("IEC", "/multipleUnitUsage/0/usedUnitContainer"),
                        ("PEC", "/multipleUnitUsage/0/requestedUnit")):
        r = await api.create(body(t.supi, 0, [both], oneTimeEvent=True, oneTimeEventType=kind))
        assert (r.status_code, r.json()["cause"]) == (400, "MANDATORY_IE_INCORRECT"), r.text
        assert [p["param"] for p in r.json()["invalidParams"]] == [param]
    view = await balances(db, t.line)
    assert (view.units[0].remaining, view.wallet.available) == (2, 100)
    assert await records(db) == []
    async with db.read() as s:
        assert (await s.execute(select(ChargingSession))).first() is None


async def test_charging_information_of_another_json_type_is_a_400_naming_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    """`userInformation`, a location and its areas are objects: a string or a list there is a
    bad field, never a 500 — on a create and on an update."""
    t = await make_line(db, money=100)
    api = await nchf(client, db)
    voice = [rg(VOICE, requested={"time": 60})]
    bad = [
        ({"pDUSessionChargingInformation": {"userInformation": "msisdn-1"}},
         "/pDUSessionChargingInformation/userInformation"),
        ({"pDUSessionChargingInformation": {"userLocationinfo": {"nrLocation": {"tai": "x"}}}},
         "/pDUSessionChargingInformation/userLocationinfo/nrLocation/tai"),
        ({"sMSChargingInformation": {"userLocationinfo": {"eutraLocation": {"ecgi": [1]}}}},
         "/sMSChargingInformation/userLocationinfo/eutraLocation/ecgi"),
        ({"pDUSessionChargingInformation": []}, "/pDUSessionChargingInformation"),
    ]
    for extra, param in bad:
        r = await api.create(body(t.supi, 0, voice, **extra), validate_request=False)
        assert (r.status_code, r.json()["cause"]) == (400, "MANDATORY_IE_INCORRECT"), r.text
        assert [p["param"] for p in r.json()["invalidParams"]] == [param]
    r = await api.create(body(t.supi, 0, voice))
    assert r.status_code == 201
    ref = ref_of(r)
    for extra, _ in bad:
        r = await api.update(ref, body(t.supi, 1, voice, **extra), validate_request=False)
        assert (r.status_code, r.json()["cause"]) == (400, "MANDATORY_IE_INCORRECT"), r.text
    assert (await balances(db, t.line)).wallet.reserved > 0  # the first quota stands
    await assert_ledger_balanced(db)
