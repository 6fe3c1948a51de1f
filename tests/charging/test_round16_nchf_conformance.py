"""Nchf_ConvergedCharging v3 against TS 32.291 / 32.290 / 29.500 (review round 16).

What was wrong, and is right now:

- Usage reported without a reservation (`quotaManagementIndicator` `OFFLINE_CHARGING`, or
  `QUOTA_MANAGEMENT_SUSPENDED`: the SMF went on while the CHF was out of reach) was recorded
  unbilled on a group with no quota, although the line held buckets and money. It is charged at
  once, as a post event's units are (buckets in scope, then the wallet; the rest unbilled), once.
  Usage under online charging beyond the grant stays unbilled.
- A retransmission (`retransmissionIndicator: true`, the same sequence number) stamped anew
  was not recognised: a create opened a second session (a second reservation), an update was
  refused as "answered already, for another request". It gets the kept answer now; a request
  without the indicator is still matched exactly (two SMS alike are two events).
- A body sent as XML, text or without a type was charged: 415 now, with `cause`, nothing done;
  `POST /api/v1/usage` likewise (without a type it read the body as JSON).
- `subscriberIdentifier` and `servedGPSI` naming two lines charged the first; an update naming
  another subscriber than its session's was answered. Both are refused by name, nothing changed.
- A path under `/nchf-convergedcharging/` of another version answered 404 without `cause`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from simcharge.charging.models import ChargingSession, UsageRecord
from simcharge.db import Database
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant
from tests.charging.helpers import (
    BASE,
    MIB,
    assert_ledger_balanced,
    balances,
    body,
    make_line,
    nchf,
    nf_key,
    open_reservations,
    ref_of,
    rg,
    unit_info,
    validate_exchange,
)

VOICE, DATA, SMS = 100, 200, 300
LATER = "2026-12-11T10:00:00.123Z"


async def _count(db: Database, model: type[Any]) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def _records(db: Database) -> list[UsageRecord]:
    async with db.read() as s:
        found = (await s.execute(select(UsageRecord).order_by(UsageRecord.external_id))).scalars()
        return list(found)


def _voice_used(
    seconds: int, indicator: str | None, *, requested: int | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"localSequenceNumber": 1, "time": seconds}
    if indicator is not None:
        container["quotaManagementIndicator"] = indicator
    entry: dict[str, Any] = {"ratingGroup": VOICE, "usedUnitContainer": [container]}
    if requested is not None:
        entry["requestedUnit"] = {"time": requested}
    return entry


async def _voice(db: Database, line: Any) -> tuple[int, int]:
    view = await balances(db, line)
    return view.units[0].remaining, view.units[0].reserved


# --- 1. usage without a quota --------------------------------------------------------------


@pytest.mark.parametrize("indicator", ["OFFLINE_CHARGING", "QUOTA_MANAGEMENT_SUSPENDED"])
async def test_usage_without_a_quota_is_charged_at_once_and_once(
    client: httpx.AsyncClient, db: Database, indicator: str
) -> None:
    """The reviewer's case: 120 s reported on a group no quota was granted to. They come from
    the voice bucket now (recorded unbilled before), and the same update sent again charges
    nothing more."""
    t = await make_line(db, money=1000, grants=[UnitGrant("VOICE_S", 3600, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})]))
    ref = ref_of(r)
    doc = body(t.supi, 1, [_voice_used(120, indicator)])
    r = await api.update(ref, doc)
    assert r.status_code == 200, r.text
    assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    assert await _voice(db, t.line) == (3480, 0)
    assert (await balances(db, t.line)).wallet.available == 1000 - 2  # 1 MiB of data reserved
    again = await api.update(ref, doc)
    assert again.json() == r.json()
    assert await _voice(db, t.line) == (3480, 0)
    [voice] = await _records(db)
    assert voice.quantity == 120
    assert (voice.from_buckets, voice.from_wallet, voice.charge, voice.unbilled) == (120, 0, 0, 0)
    assert voice.external_id.endswith("/1/100/offline")
    r = await api.release(ref, body(t.supi, 2, []))
    assert r.status_code == 204
    assert await open_reservations(db) == 0
    assert await _voice(db, t.line) == (3480, 0)
    await assert_ledger_balanced(db)


async def test_usage_without_a_quota_takes_the_wallet_after_the_buckets_then_is_unbilled(
    client: httpx.AsyncClient, db: Database
) -> None:
    """As the batch import charges a record: buckets in scope, then the wallet at the tariff
    (home: 0.05 USD a minute, 60/1), and what nothing can pay is unbilled — the group says
    `QUOTA_LIMIT_REACHED` then."""
    t = await make_line(db, money=1000, grants=[UnitGrant("VOICE_S", 60, 30)])
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [])))
    r = await api.update(ref, body(t.supi, 1, [_voice_used(120, "OFFLINE_CHARGING")]))
    assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    assert (await balances(db, t.line)).wallet.available == 1000 - 5
    [record] = await _records(db)
    assert (record.from_buckets, record.from_wallet, record.charge, record.unbilled) == (
        60, 60, 5, 0,
    )

    poor = await make_line(db)
    ref = ref_of(await api.create(body(poor.supi, 0, [])))
    r = await api.update(ref, body(poor.supi, 1, [_voice_used(120, "OFFLINE_CHARGING")]))
    assert unit_info(r, VOICE)["resultCode"] == "QUOTA_LIMIT_REACHED"
    unpaid = [x for x in await _records(db) if x.line_id == poor.line.id]
    assert [(x.quantity, x.charge, x.unbilled) for x in unpaid] == [(120, 0, 120)]
    await assert_ledger_balanced(db)


async def test_a_frozen_line_s_usage_without_a_quota_is_unbilled_and_said_so(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, money=1000, grants=[UnitGrant("VOICE_S", 600, 30)])
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [])))

    async def freeze(s: Any) -> None:
        line = await s.get(Line, t.line.id)
        line.state = "frozen"

    await db.run(freeze)
    r = await api.update(ref, body(t.supi, 1, [_voice_used(30, "OFFLINE_CHARGING")]))
    assert unit_info(r, VOICE)["resultCode"] == "END_USER_SERVICE_DENIED"
    assert await _voice(db, t.line) == (600, 0)
    [record] = await _records(db)
    # Rated (60/1: a first minute) and unbilled in rated units, as a post event's are.
    assert (record.quantity, record.rated, record.unbilled) == (30, 60, 60)


async def test_online_and_offline_usage_of_one_group_in_one_update(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Used from the quota: posted against its reservation (the rest released); used without:
    charged at once; then the new quota. Two records, one request, nothing twice."""
    t = await make_line(db, grants=[UnitGrant("VOICE_S", 3600, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 300})]))
    ref = ref_of(r)
    assert await _voice(db, t.line) == (3300, 300)
    entry = _voice_used(100, None, requested=300)
    entry["usedUnitContainer"].append(
        {"localSequenceNumber": 2, "time": 50, "quotaManagementIndicator": "OFFLINE_CHARGING"}
    )
    r = await api.update(ref, body(t.supi, 1, [entry]))
    assert unit_info(r, VOICE)["grantedUnit"] == {"time": 300}
    # 3600 − 100 − 50 used, 300 reserved anew.
    assert await _voice(db, t.line) == (3150, 300)
    records = await _records(db)
    assert [(x.external_id.split("/", 2)[2], x.from_buckets, x.unbilled) for x in records] == [
        ("100", 100, 0),
        ("100/offline", 50, 0),
    ]
    r = await api.release(ref, body(t.supi, 2, [rg(VOICE, used=[{"time": 10}])]))
    assert r.status_code == 204
    assert await _voice(db, t.line) == (3600 - 100 - 50 - 10, 0)
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


@pytest.mark.parametrize("indicator", [None, "ONLINE_CHARGING", "SOMETHING_NEW"])
async def test_online_usage_beyond_the_grant_stays_unbilled(
    client: httpx.AsyncClient, db: Database, indicator: str | None
) -> None:
    """Under online charging usage never takes more than was granted (README): a group with no
    quota reporting units records them unbilled — also under an indicator we do not know."""
    t = await make_line(db, money=1000, grants=[UnitGrant("VOICE_S", 3600, 30)])
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [])))
    r = await api.update(ref, body(t.supi, 1, [_voice_used(120, indicator)]))
    assert unit_info(r, VOICE)["resultCode"] == "SUCCESS"
    assert await _voice(db, t.line) == (3600, 0)
    [record] = await _records(db)
    assert (record.charge, record.unbilled) == (0, 120)


async def test_a_release_charges_its_offline_usage(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("VOICE_S", 3600, 30)])
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 60})])))
    doc = body(t.supi, 1, [_voice_used(200, "QUOTA_MANAGEMENT_SUSPENDED")])
    r = await api.release(ref, doc)
    assert r.status_code == 204
    assert await _voice(db, t.line) == (3400, 0)  # the 60 s reserved released, 200 s charged
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)


# --- 2. retransmissions stamped anew -------------------------------------------------------


def _resent(doc: dict[str, Any], *, indicator: bool = True) -> dict[str, Any]:
    again = copy.deepcopy(doc)
    again["invocationTimeStamp"] = LATER
    if indicator:
        again["retransmissionIndicator"] = True
    return again


async def test_a_create_retransmitted_with_a_new_time_stamp_finds_its_resource(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    doc = body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})])
    first = await api.create(doc)
    again = await api.create(_resent(doc))
    assert again.status_code == 201
    assert again.headers["location"] == first.headers["location"]
    assert again.json() == first.json()
    assert await _count(db, ChargingSession) == 1
    assert (await balances(db, t.line)).units[0].reserved == 10 * MIB
    # Another body under the indicator is another create.
    other = _resent(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 5 * MIB})]))
    r = await api.create(other)
    assert r.headers["location"] != first.headers["location"]
    assert await _count(db, ChargingSession) == 2


async def test_a_resent_create_is_not_another_events_beyond_the_window(
    client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round's code review: SMS A (IEC) charged; SMS B of the same content, its first
    transmission lost, arrives retransmitted (indicator, its own time stamp) from the same
    network function. Within `RESENT_WITHIN` of A it cannot be told from A's retransmission;
    beyond it, it is another event: charged, with its own resource."""
    from datetime import timedelta

    from simcharge.charging import nchf as nchf_module
    from simcharge.kit.clock import utcnow

    t = await make_line(db, grants=[UnitGrant("SMS", 5, 30)])
    api = await nchf(client, db)
    sms_a = body(t.supi, 0, [rg(SMS, requested={"serviceSpecificUnits": 1})],
                 oneTimeEvent=True, oneTimeEventType="IEC")  # fmt: skip
    sms_a["nfConsumerIdentification"] = {
        "nodeFunctionality": "SMF", "nFName": "8b0f6a4e-1111-4c2b-9d3e-000000000001",
    }  # fmt: skip
    a = await api.create(sms_a)
    assert a.status_code == 201, a.text
    assert (await balances(db, t.line)).units[0].remaining == 4

    # A minute later (the window past): SMS B, retransmitted.
    later = utcnow() + nchf_module.RESENT_WITHIN + timedelta(seconds=30)
    monkeypatch.setattr(nchf_module, "utcnow", lambda: later)
    b = await api.create(_resent(sms_a))
    assert b.status_code == 201, b.text
    assert b.headers["location"] != a.headers["location"]
    assert await _count(db, ChargingSession) == 2
    assert (await balances(db, t.line)).units[0].remaining == 3
    await assert_ledger_balanced(db)


async def test_two_creates_alike_without_the_indicator_are_two_events(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Two SMS of identical content at two times: two sessions, two reservations."""
    t = await make_line(db, grants=[UnitGrant("SMS", 5, 30)])
    api = await nchf(client, db)
    doc = body(t.supi, 0, [rg(SMS, requested={"serviceSpecificUnits": 1})])
    first = await api.create(doc)
    second = await api.create(_resent(doc, indicator=False))
    assert second.headers["location"] != first.headers["location"]
    assert await _count(db, ChargingSession) == 2
    assert (await balances(db, t.line)).units[0].reserved == 2


async def test_an_update_and_a_release_retransmitted_with_a_new_time_stamp_get_their_answer(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})])))
    doc = body(t.supi, 1, [rg(DATA, requested={"totalVolume": MIB}, used=[{"totalVolume": MIB}])])
    first = await api.update(ref, doc)
    assert first.status_code == 200
    again = await api.update(ref, _resent(doc))
    assert (again.status_code, again.json()) == (200, first.json())
    # Without the indicator, a request stamped anew under an answered number is another one.
    r = await api.update(ref, _resent(doc, indicator=False))
    assert r.status_code == 400
    assert r.json()["cause"] == "CHARGING_FAILED"
    # And with it, other content is too.
    changed = _resent(doc)
    changed["multipleUnitUsage"][0]["usedUnitContainer"][0]["totalVolume"] = 2 * MIB
    r = await api.update(ref, changed)
    assert r.status_code == 400
    assert r.json()["cause"] == "CHARGING_FAILED"
    view = (await balances(db, t.line)).units[0]
    assert (view.remaining, view.reserved) == (98 * MIB, MIB)

    end = body(t.supi, 2, [rg(DATA, used=[{"totalVolume": MIB}])])
    assert (await api.release(ref, end)).status_code == 204
    assert (await api.release(ref, _resent(end))).status_code == 204
    view = (await balances(db, t.line)).units[0]
    assert (view.remaining, view.reserved) == (98 * MIB, 0)
    assert len(await _records(db)) == 2
    await assert_ledger_balanced(db)


# --- 3. content type -------------------------------------------------------------------------


BAD_TYPES = ["application/xml", "text/plain", None, "application/x-www-form-urlencoded"]


@pytest.mark.parametrize("content_type", BAD_TYPES)
async def test_a_body_not_sent_as_json_is_415_and_charges_nothing(
    client: httpx.AsyncClient, db: Database, content_type: str | None
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    doc = body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})])
    raw = json.dumps(doc).encode()
    headers = dict(api.headers)
    if content_type is not None:
        headers["content-type"] = content_type
    r = await client.post(f"{BASE}/chargingdata", content=raw, headers=headers)
    assert r.status_code == 415, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["accept-post"] == "application/json"
    assert r.json()["cause"] == "INVALID_MSG_FORMAT"
    assert r.json()["invalidParams"][0]["param"] == "Content-Type"
    validate_exchange("/chargingdata", raw, 415, r.json())
    assert await _count(db, ChargingSession) == 0
    assert await open_reservations(db) == 0

    ref = ref_of(await api.create(doc))
    update = json.dumps(body(t.supi, 1, [rg(DATA, used=[{"totalVolume": MIB}])])).encode()
    for op in ("update", "release"):
        r = await client.post(f"{BASE}/chargingdata/{ref}/{op}", content=update, headers=headers)
        assert r.status_code == 415, r.text
        assert r.json()["cause"] == "INVALID_MSG_FORMAT"
    view = (await balances(db, t.line)).units[0]
    assert (view.remaining, view.reserved) == (99 * MIB, MIB)
    assert await _count(db, UsageRecord) == 0


async def test_json_with_parameters_is_json(client: httpx.AsyncClient, db: Database) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    raw = json.dumps(body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})])).encode()
    headers = {**api.headers, "content-type": "Application/JSON; charset=utf-8"}
    r = await client.post(f"{BASE}/chargingdata", content=raw, headers=headers)
    assert r.status_code == 201, r.text


async def test_a_415_needs_the_key_first(client: httpx.AsyncClient, db: Database) -> None:
    """The API key is checked before the body, as for every other problem."""
    r = await client.post(
        f"{BASE}/chargingdata", content=b"<xml/>", headers={"content-type": "application/xml"}
    )
    assert r.status_code == 401
    assert r.json()["cause"] == "ACCESS_TOKEN_DENIED"


@pytest.mark.parametrize("content_type", BAD_TYPES)
async def test_the_usage_api_wants_json_too(
    client: httpx.AsyncClient, db: Database, content_type: str | None
) -> None:
    t = await make_line(db, money=100)
    headers = await nf_key(db, ("usage:write",))
    record = {
        "id": "u1", "subscriber": t.supi, "service": "sms", "quantity": 1,
        "started_at": "2026-11-25T10:00:00Z",
    }  # fmt: skip
    raw = json.dumps({"records": [record]}).encode()
    sent = {**headers, **({"content-type": content_type} if content_type else {})}
    r = await client.post("/api/v1/usage", content=raw, headers=sent)
    assert r.status_code == 415, r.text
    assert r.json()["type"].endswith("/unsupported-media-type")
    assert r.json()["field"] == "Content-Type"
    assert r.headers["accept-post"] == "application/json"
    assert (await balances(db, t.line)).wallet.available == 100
    assert await _count(db, UsageRecord) == 0
    sent["content-type"] = "application/json"
    r = await client.post("/api/v1/usage", content=raw, headers=sent)
    assert r.status_code == 200, r.text
    assert (await balances(db, t.line)).wallet.available == 95


# --- 4. identities ---------------------------------------------------------------------------


def _served(doc: dict[str, Any], gpsi: str) -> dict[str, Any]:
    doc["pDUSessionChargingInformation"] = {"userInformation": {"servedGPSI": gpsi}}
    return doc


async def test_a_create_naming_two_lines_is_refused_and_charges_neither(
    client: httpx.AsyncClient, db: Database
) -> None:
    a = await make_line(db, money=1000)
    b = await make_line(db, money=1000)
    api = await nchf(client, db)
    doc = _served(body(a.supi, 0, [rg(VOICE, requested={"time": 60})]), b.gpsi)
    r = await api.create(doc)
    assert r.status_code == 400, r.text
    assert r.json()["cause"] == "MANDATORY_IE_INCORRECT"
    assert r.json()["invalidParams"][0]["param"] == (
        "/pDUSessionChargingInformation/userInformation/servedGPSI"
    )
    assert await _count(db, ChargingSession) == 0
    assert await open_reservations(db) == 0
    # The same line both ways, or another kind of GPSI, is fine.
    r = await api.create(_served(body(a.supi, 0, [rg(VOICE, requested={"time": 60})]), a.gpsi))
    assert r.status_code == 201, r.text
    r = await api.create(
        _served(body(a.supi, 1, [rg(VOICE, requested={"time": 60})]), "extid-smf@example.com")
    )
    assert r.status_code == 201, r.text
    assert (await balances(db, b.line)).wallet.available == 1000


@pytest.mark.parametrize("where", ["subscriberIdentifier", "servedGPSI"])
async def test_an_update_naming_another_subscriber_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, db: Database, where: str
) -> None:
    a = await make_line(db, grants=[UnitGrant("VOICE_S", 600, 30)])
    b = await make_line(db, grants=[UnitGrant("VOICE_S", 600, 30)])
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(a.supi, 0, [rg(VOICE, requested={"time": 60})])))
    entry = rg(VOICE, requested={"time": 60}, used=[{"time": 30}])
    doc = (
        body(b.supi, 1, [entry]) if where == "subscriberIdentifier"
        else _served(body(None, 1, [entry]), b.gpsi)
    )  # fmt: skip
    r = await api.update(ref, doc)
    assert r.status_code == 400, r.text
    assert r.json()["cause"] == "MANDATORY_IE_INCORRECT"
    pointer = r.json()["invalidParams"][0]["param"]
    assert pointer.endswith(where)
    assert await _voice(db, a.line) == (540, 60)
    assert await _voice(db, b.line) == (600, 0)
    # The number was not taken: the session's own subscriber goes on with it.
    r = await api.update(ref, body(a.gpsi, 1, [entry]))
    assert r.status_code == 200, r.text
    # 30 s rated as the first minute (60/1), then 30 s more reserved for the next 60.
    assert await _voice(db, a.line) == (510, 30)


# --- 5. a path of another version --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/nchf-convergedcharging/v2/chargingdata", "/nchf-convergedcharging/v3/nothing",
     "/nchf-convergedcharging/"],
)
async def test_a_path_under_nchf_that_no_route_has_is_404_with_its_cause(
    client: httpx.AsyncClient, db: Database, path: str
) -> None:
    api = await nchf(client, db)
    headers = {**api.headers, "content-type": "application/json"}
    r = await client.post(path, content=b"{}", headers=headers)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["cause"] == "RESOURCE_URI_STRUCTURE_NOT_FOUND"
