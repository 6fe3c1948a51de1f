"""Nchf_ConvergedCharging: the loose ends of the sixteenth review (round 17).

- A create retransmitted with a new time stamp while the first transmission was still being
  answered opened a second session (its reservation held until the timeout): the second found
  no committed session to answer with. Creates of one content now queue (an advisory lock on
  PostgreSQL); the retransmission gets the first's answer.
- `requestedUnit` of 0 was granted the default quota (`0 or default`): it asks for none now.
- A tariff changed mid-session: the session's costs summed over the call mixed the two tariffs
  (the units charged at the old one were charged again at the new one's price, with the next
  quota or with units used without a quota), and units used without a quota were rated at the
  new tariff although they followed a rating at the old one. The group's rating starts again
  with the new tariff now, as when the subscriber moves zone.
- `triggers`: none is returned (README) — checked here on a quota with validity time and final
  unit indication.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from simcharge.charging.models import ChargingSession, UsageRecord
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.service import UnitGrant
from tests.charging.helpers import (
    MIB,
    Nchf,
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
from tests.locks import app_client, until_waiting

VOICE, DATA, SMS = 100, 200, 300
LATER = "2026-12-11T10:00:00.123Z"


async def _count(db: Database, model: type[Any]) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


def _resent(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` retransmitted as a network function does: the indicator, a new time stamp."""
    again = copy.deepcopy(doc)
    again["invocationTimeStamp"] = LATER
    again["retransmissionIndicator"] = True
    return again


# --- 1. a create retransmitted stamped anew while the first is in flight ----------------------


async def _pots_held(db: Database, line_id: Any, holding: asyncio.Event,
                     release: asyncio.Event) -> None:
    """A third transaction holding the line's pots, so that the first create is still being
    answered when its retransmission arrives."""
    from sqlalchemy import text

    async with db.transaction() as s:
        await s.execute(
            text("SELECT id FROM ledger_accounts WHERE line_id = :l FOR UPDATE"), {"l": line_id}
        )
        holding.set()
        await release.wait()


async def _assert_one_session(db: Database, r1: httpx.Response, r2: httpx.Response,
                              line: Any) -> None:
    assert (r1.status_code, r2.status_code) == (201, 201), (r1.text, r2.text)
    assert r1.headers["location"] == r2.headers["location"]
    assert r1.json() == r2.json()
    assert await _count(db, ChargingSession) == 1
    assert await open_reservations(db) == 1
    view = await balances(db, line)
    assert (view.units[0].remaining, view.units[0].reserved) == (90 * MIB, 10 * MIB)
    await assert_ledger_balanced(db)


@pytest.mark.postgres_only
async def test_a_create_resent_stamped_anew_while_the_first_is_answered_opens_one_session(
    fresh_db: Database, settings: Settings
) -> None:
    """The first create waits for the line's pots (another transaction holds them); its
    retransmission, stamped anew, arrives meanwhile. Before, it found no session committed and
    opened a second one, its 10 MiB held until the timeout."""
    db = fresh_db
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    holding, release = asyncio.Event(), asyncio.Event()
    async with app_client(db, settings) as client:
        api = await nchf(client, db)
        first = body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})])
        held = asyncio.create_task(_pots_held(db, t.line.id, holding, release))
        await holding.wait()
        both = asyncio.gather(api.create(first), api.create(_resent(first)))
        await until_waiting(db, 2)  # the first on the pots, the second on the first
        release.set()
        await held
        r1, r2 = await both
    await _assert_one_session(db, r1, r2, t.line)


async def test_a_create_and_its_retransmission_sent_at_once_open_one_session(
    fresh_db: Database, settings: Settings
) -> None:
    """Both databases, real connections: the two posted at once, in either order of arrival."""
    db = fresh_db
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    async with app_client(db, settings) as client:
        api: Nchf = await nchf(client, db)
        first = body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})])
        r1, r2 = await asyncio.gather(api.create(first), api.create(_resent(first)))
    await _assert_one_session(db, r1, r2, t.line)


async def test_the_first_transmission_arriving_after_its_retransmission_is_answered_again(
    client: httpx.AsyncClient, db: Database
) -> None:
    """The retransmission (indicator, a new time stamp) overtook the first transmission: the
    first finds the session the retransmission opened — a create, and an update alike (before,
    a second session, and a 400 "answered already, for another request")."""
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    first = body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})])
    resent = await api.create(_resent(first))
    late = await api.create(first)
    assert late.status_code == 201, late.text
    assert late.headers["location"] == resent.headers["location"]
    assert late.json() == resent.json()
    assert await _count(db, ChargingSession) == 1
    ref = ref_of(resent)
    update = body(t.supi, 1, [rg(DATA, requested={"totalVolume": 10 * MIB},
                                 used=[{"totalVolume": 4 * MIB}])])  # fmt: skip
    r = await api.update(ref, _resent(update))
    late = await api.update(ref, update)
    assert late.status_code == 200, late.text
    assert late.json() == r.json()
    view = await balances(db, t.line)
    assert (view.units[0].remaining, view.units[0].reserved) == (86 * MIB, 10 * MIB)
    assert await _count(db, UsageRecord) == 1
    # Without the indicator on either, two creates alike stay two events.
    other = body(t.supi, 0, [rg(DATA, requested={"totalVolume": 1 * MIB})])
    await api.create(other)
    await api.create({**other, "invocationTimeStamp": LATER})
    assert await _count(db, ChargingSession) == 3
    await assert_ledger_balanced(db)


# --- 2. requestedUnit of 0 ---------------------------------------------------------------------


async def test_a_request_for_no_units_is_granted_none(
    client: httpx.AsyncClient, db: Database
) -> None:
    """0 units asked: no quota (no `grantedUnit`), nothing reserved, `SUCCESS`; the usage the
    group reports is charged and its quota released as without a `requestedUnit`. Before, 0
    was taken for "no amount" and granted the default (an hour of voice)."""
    t = await make_line(db, grants=[UnitGrant("VOICE_S", 3600, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 0})]))
    assert r.status_code == 201, r.text
    assert unit_info(r, VOICE) == {"ratingGroup": VOICE, "resultCode": "SUCCESS"}
    assert (await balances(db, t.line)).units[0].reserved == 0
    ref = ref_of(r)
    r = await api.update(ref, body(t.supi, 1, [rg(VOICE, requested={"time": 300})]))
    assert unit_info(r, VOICE)["grantedUnit"] == {"time": 300}
    r = await api.update(
        ref, body(t.supi, 2, [rg(VOICE, requested={"time": 0}, used=[{"time": 100}])])
    )
    assert unit_info(r, VOICE) == {"ratingGroup": VOICE, "resultCode": "SUCCESS"}
    view = await balances(db, t.line)
    assert (view.units[0].remaining, view.units[0].reserved) == (3500, 0)
    assert await open_reservations(db) == 0
    # Several entries of the group: their amounts add up (0 + 0 is none, 0 + 60 is 60).
    zero = rg(VOICE, requested={"time": 0})
    r = await api.update(ref, body(t.supi, 3, [zero, zero]))
    assert "grantedUnit" not in unit_info(r, VOICE)
    r = await api.update(ref, body(t.supi, 4, [zero, rg(VOICE, requested={"time": 60})]))
    assert unit_info(r, VOICE)["grantedUnit"] == {"time": 60}
    # A requestedUnit without an amount still leaves the amount to us: the default.
    r = await api.update(ref, body(t.supi, 5, [rg(VOICE, requested={})]))
    assert unit_info(r, VOICE)["grantedUnit"]["time"] > 0
    await assert_ledger_balanced(db)


async def test_an_immediate_event_of_no_units_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    """An IEC asking for 0 messages was charged the default, one; answered "granted none" it
    would be an event given away (the network goes on with it): it is refused by name, and
    nothing is charged or opened."""
    t = await make_line(db, grants=[UnitGrant("SMS", 5, 30)])
    api = await nchf(client, db)
    doc = body(t.supi, 0, [rg(SMS, requested={"serviceSpecificUnits": 0})],
               oneTimeEvent=True, oneTimeEventType="IEC")  # fmt: skip
    r = await api.create(doc)
    assert r.status_code == 400, r.text
    assert r.json()["cause"] == "MANDATORY_IE_INCORRECT"
    assert [p["param"] for p in r.json()["invalidParams"]] == [
        "/multipleUnitUsage/0/requestedUnit"]
    assert (await balances(db, t.line)).units[0].remaining == 5
    assert await _count(db, UsageRecord) == 0
    assert await _count(db, ChargingSession) == 0
    # Without a requestedUnit an IEC is still one message (the default).
    r = await api.create(body(t.supi, 0, [rg(SMS)], oneTimeEvent=True, oneTimeEventType="IEC"))
    assert unit_info(r, SMS)["grantedUnit"] == {"serviceSpecificUnits": 1}
    assert (await balances(db, t.line)).units[0].remaining == 4


async def test_a_new_event_alike_after_a_retransmission_is_charged(
    client: httpx.AsyncClient, db: Database
) -> None:
    """An event's first transmission lost, its retransmission (indicator, stamped anew) opened
    the session; a second event alike, stamped after that retransmission and without the
    indicator, is a new event — charged, not answered with the first's answer."""
    t = await make_line(db, grants=[UnitGrant("SMS", 5, 30)])
    api = await nchf(client, db)
    first = body(t.supi, 0, [rg(SMS, requested={"serviceSpecificUnits": 1})],
                 oneTimeEvent=True, oneTimeEventType="IEC")  # fmt: skip
    resent = await api.create(_resent(first))
    assert resent.status_code == 201, resent.text
    second = {**first, "invocationTimeStamp": "2026-12-11T10:00:10.000Z"}  # after LATER
    again = await api.create(second)
    assert again.status_code == 201, again.text
    assert again.headers["location"] != resent.headers["location"]
    assert (await balances(db, t.line)).units[0].remaining == 3
    assert await _count(db, ChargingSession) == 2
    # Its own first transmission, stamped before the retransmission, is still the same event.
    late = await api.create(first)
    assert late.headers["location"] == resent.headers["location"]
    assert (await balances(db, t.line)).units[0].remaining == 3
    await assert_ledger_balanced(db)


async def test_a_frozen_line_asking_no_units_is_refused_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Nothing asked, nothing refused: `SUCCESS`, as a group reporting usage only."""
    t = await make_line(db, money=1000, state="frozen")
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 0})]))
    assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 1})]))
    assert unit_info(r, VOICE)["resultCode"] == "END_USER_SERVICE_DENIED"


# --- 3. a tariff changed mid-session -----------------------------------------------------------

# Voice at home by the second, no minimum: 0.06 a minute (a cent per 10 s), then 0.12.
CHEAP = """
[[tariffs]]
service = "voice"
zone = "home"
currency = "USD"
price = "0.06"
per = "minute"
rounding = "1/1"
"""
DEAR = CHEAP.replace('"0.06"', '"0.12"')


def _voice(seconds: int, *, offline: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"time": seconds}
    if offline:
        container["quotaManagementIndicator"] = "QUOTA_MANAGEMENT_SUSPENDED"
    return container


async def _charges(db: Database, line_id: Any) -> list[tuple[str, int, int]]:
    """(request/group[/tag], quantity, charge) of the line's records, in order."""
    async with db.read() as s:
        rows = (
            await s.execute(
                select(UsageRecord)
                .where(UsageRecord.line_id == line_id)
                .order_by(UsageRecord.external_id)
            )
        ).scalars()
        return [(r.external_id.split("/", 1)[1], r.quantity, r.charge) for r in rows]


async def _wallet(db: Database, line: Any) -> tuple[int, int]:
    wallet = (await balances(db, line)).wallet
    return wallet.available, wallet.reserved


async def test_a_new_quota_after_a_tariff_change_is_priced_at_the_new_tariff_alone(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """10 minutes granted and used at 0.06, the tariff doubled, 10 more granted: 1.20, not the
    1.80 the new tariff's price of the whole call (20 minutes, 2.40) less the 0.60 paid made."""
    await load_tariffs_only(db, CHEAP)
    t = await make_line(db, money=1000, catalog=False)
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 600})])))
    assert await _wallet(db, t.line) == (940, 60)
    await load_tariffs_only(db, DEAR)
    async with restarted(api, db, settings) as later:
        r = await later.update(
            ref, body(t.supi, 1, [rg(VOICE, used=[_voice(600)], requested={"time": 600})])
        )
        assert unit_info(r, VOICE)["grantedUnit"] == {"time": 600}
        assert await _wallet(db, t.line) == (1000 - 60 - 120, 120)
        r = await later.release(ref, body(t.supi, 2, [rg(VOICE, used=[_voice(300)])]))
        assert r.status_code == 204
    assert await _charges(db, t.line.id) == [("1/100", 600, 60), ("2/100", 300, 60)]
    assert await _wallet(db, t.line) == (1000 - 60 - 60, 0)
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


async def test_units_used_without_a_quota_across_a_tariff_change(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The suspicion, proven: units used without a quota (the SMF went on while the CHF was out
    of reach) after a rating at 0.06 were charged at 0.12 — and at 0.12 for the whole call so
    far, less what it had paid: 0.72 for a minute. They follow a rating at the old tariff, as
    the units of a quota granted then do: 0.06; what is used after this request, at 0.12."""
    await load_tariffs_only(db, CHEAP)
    t = await make_line(db, money=1000, catalog=False)
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 600})])))
    await load_tariffs_only(db, DEAR)
    async with restarted(api, db, settings) as later:
        entry = rg(VOICE, used=[_voice(600), _voice(60, offline=True)], requested={"time": 600})
        r = await later.update(ref, body(t.supi, 1, [entry]))
        assert unit_info(r, VOICE)["grantedUnit"] == {"time": 600}
        assert await _wallet(db, t.line) == (1000 - 60 - 6 - 120, 120)
        r = await later.release(ref, body(t.supi, 2, [rg(VOICE, used=[_voice(600)])]))
        assert r.status_code == 204
    assert await _charges(db, t.line.id) == [
        ("1/100", 600, 60), ("1/100/offline", 60, 6), ("2/100", 600, 120),
    ]  # fmt: skip
    assert await _wallet(db, t.line) == (1000 - 186, 0)
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


async def test_a_session_without_quotas_across_a_tariff_change(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Offline all along: each report's units at the tariff of the group's last rating (the
    first at the tariff in force), so a change reaches the units used after the report that
    saw it. Before, the second report paid 0.18 for a minute (0.12's price of two, less 0.06)."""
    await load_tariffs_only(db, CHEAP)
    t = await make_line(db, money=1000, catalog=False)
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [])))
    r = await api.update(ref, body(t.supi, 1, [rg(VOICE, used=[_voice(60, offline=True)])]))
    assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    await load_tariffs_only(db, DEAR)
    async with restarted(api, db, settings) as later:
        for seq in (2, 3):
            r = await later.update(
                ref, body(t.supi, seq, [rg(VOICE, used=[_voice(60, offline=True)])])
            )
            assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    assert await _charges(db, t.line.id) == [
        ("1/100/offline", 60, 6), ("2/100/offline", 60, 6), ("3/100/offline", 60, 12),
    ]  # fmt: skip
    assert await _wallet(db, t.line) == (1000 - 24, 0)
    await assert_ledger_balanced(db)


async def test_units_without_a_quota_after_their_tariff_was_removed(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Voice at home taken out of the catalog mid-session: the units used since the group was
    rated at 0.06 are charged at 0.06 (as a quota granted then would be), those used after the
    request that saw the removal are not rated (`RATING_FAILED`, unbilled)."""
    await load_tariffs_only(db, CHEAP)
    t = await make_line(db, money=1000, catalog=False)
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [])))
    await api.update(ref, body(t.supi, 1, [rg(VOICE, used=[_voice(60, offline=True)])]))
    await load_tariffs_only(db, "")
    async with restarted(api, db, settings) as later:
        codes = []
        for seq in (2, 3):
            r = await later.update(
                ref, body(t.supi, seq, [rg(VOICE, used=[_voice(60, offline=True)])])
            )
            codes.append(unit_info(r, VOICE)["resultCode"])
    assert codes == ["SUCCESS", "RATING_FAILED"]
    assert await _charges(db, t.line.id) == [
        ("1/100/offline", 60, 6), ("2/100/offline", 60, 6), ("3/100/offline", 60, 0),
    ]  # fmt: skip
    async with db.read() as s:
        unbilled = await s.scalar(
            select(UsageRecord.unbilled).where(UsageRecord.external_id.endswith("/3/100/offline"))
        )
    assert unbilled == 60
    assert await _wallet(db, t.line) == (1000 - 12, 0)
    await assert_ledger_balanced(db)


async def test_a_tariff_unchanged_keeps_the_sum_over_the_call(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Without a tariff change the cost is still summed over the call: 5 s, then 5 s more, at
    a cent per 10 s cost 1 cent (half a cent, rounded up), then nothing (the call's 10 s cost 1)."""
    await load_tariffs_only(db, CHEAP)
    t = await make_line(db, money=1000, catalog=False)
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 60})])))
    await api.update(ref, body(t.supi, 1, [rg(VOICE, used=[_voice(5)], requested={"time": 60})]))
    await api.release(ref, body(t.supi, 2, [rg(VOICE, used=[_voice(5)])]))
    assert [c for _, _, c in await _charges(db, t.line.id)] == [1, 0]


# --- 4. triggers -------------------------------------------------------------------------------


async def test_no_triggers_with_validity_time_or_final_unit_indication(
    client: httpx.AsyncClient, db: Database
) -> None:
    """`validityTime` and `finalUnitIndication` arm the network function's own reporting
    (VALIDITY_TIME, FINAL); the CHF adds no `triggers` to them (README)."""
    t = await make_line(db, grants=[UnitGrant("DATA_B", MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})]))
    info = unit_info(r, DATA)
    assert info["validityTime"] > 0 and info["finalUnitIndication"] == {
        "finalUnitAction": "TERMINATE"
    }
    assert "triggers" not in info and "triggers" not in r.json()
