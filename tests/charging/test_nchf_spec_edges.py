"""Nchf_ConvergedCharging v3 at the edges of TS 32.291 (review round 7).

What was wrong, and is right now:

- A one-time event (`oneTimeEvent: true`) is a create that closes its resource; sent in an
  update or a release of an open session it was processed as one: a post event (PEC) reserved
  and charged the units it reported and overwrote the group's reservations — the quota granted
  before stayed reserved for ever (no release nor timeout found it again). It is refused now
  (`MANDATORY_IE_INCORRECT`, `/oneTimeEvent`) and changes nothing; a `oneTimeEventType` we do
  not know is refused likewise instead of opening a session the network will never release.
- JSON of the wrong type was converted instead of refused: `true` or `"5"` as the sequence
  number, `"200"` as a rating group, units as strings, a number or a time without offset as
  `invocationTimeStamp`. The spec's schema refuses each; now so do we (400
  `MANDATORY_IE_INCORRECT` naming the field, nothing written).
- A subscriber identifier holding a NUL, in a body sent without a JSON content type (which the
  middleware's check of JSON bodies does not see), reached PostgreSQL and came back a 500; it is
  a subscriber we do not know now (404 `USER_UNKNOWN`), like any identifier that is no IMSI or
  E.164 number.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openapi_core.testing import MockRequest, MockResponse
from sqlalchemy import func, select

from simcharge.charging.models import ChargingSession, UsageRecord
from simcharge.db import Database
from simcharge.lines.service import UnitGrant
from tests.charging.helpers import (
    BASE,
    MIB,
    assert_ledger_balanced,
    balances,
    body,
    make_line,
    nchf,
    open_reservations,
    ref_of,
    rg,
    spec,
    unit_info,
)

DATA, VOICE, SMS = 200, 100, 300


async def _count(db: Database, model: type[Any]) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


def _spec_refuses(path: str, doc: dict[str, Any]) -> bool:
    request = MockRequest(
        "https://example.com",
        "post",
        BASE + path,
        data=json.dumps(doc).encode(),
        content_type="application/json",
    )
    try:
        spec().validate_request(request)
    except Exception:  # noqa: BLE001 - openapi-core raises one of several error types
        return True
    return False


@pytest.mark.parametrize(
    ("operation", "kind"), [("update", "PEC"), ("update", "IEC"), ("release", "PEC")]
)
async def test_a_one_time_event_in_an_update_or_release_is_refused_and_nothing_stays_held(
    client: httpx.AsyncClient, db: Database, operation: str, kind: str
) -> None:
    """A one-time event sent on an open session was processed: a PEC reserved and charged the
    units it reported and overwrote the group's reservations, so the 10 MiB granted at the
    create stayed reserved after the release. Now it is refused by name and changes nothing;
    the session goes on and its release frees everything."""
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})]))
    ref = ref_of(r)
    entry = (
        rg(DATA, used=[{"totalVolume": MIB}])
        if kind == "PEC"
        else rg(DATA, requested={"totalVolume": MIB})
    )
    doc = body(t.supi, 1, [entry], oneTimeEvent=True, oneTimeEventType=kind)
    post = api.update if operation == "update" else api.release
    r = await post(ref, doc)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["cause"] == "MANDATORY_IE_INCORRECT"
    assert r.json()["invalidParams"][0]["param"] == "/oneTimeEvent"
    data = (await balances(db, t.line)).units[0]
    assert (data.remaining, data.reserved) == (90 * MIB, 10 * MIB)
    assert await _count(db, UsageRecord) == 0

    # The same sequence number, as a session's request, is taken: nothing was remembered.
    r = await api.release(ref, body(t.supi, 1, [rg(DATA, used=[{"totalVolume": MIB}])]))
    assert r.status_code == 204, r.text
    assert await open_reservations(db) == 0
    data = (await balances(db, t.line)).units[0]
    assert (data.remaining, data.reserved) == (99 * MIB, 0)
    await assert_ledger_balanced(db)


async def test_a_one_time_event_of_a_type_we_do_not_know_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    """`oneTimeEvent: true` with a `oneTimeEventType` other than IEC or PEC opened a session
    and reserved quota the network, which thinks the event done, would never release. It is
    refused, naming the type, and nothing is reserved."""
    t = await make_line(db, grants=[UnitGrant("SMS", 5, 30)])
    api = await nchf(client, db)
    doc = body(
        t.supi,
        0,
        [rg(SMS, requested={"serviceSpecificUnits": 1})],
        oneTimeEvent=True,
        oneTimeEventType="SOMETHING_ELSE",
    )
    r = await api.create(doc)
    assert r.status_code == 400, r.text
    assert r.json()["cause"] == "MANDATORY_IE_INCORRECT"
    assert r.json()["invalidParams"][0]["param"] == "/oneTimeEventType"
    assert await open_reservations(db) == 0
    assert await _count(db, ChargingSession) == 0


def _with(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


WRONG_TYPES: list[tuple[tuple[Any, ...], Any, str]] = [
    (("invocationSequenceNumber",), True, "/invocationSequenceNumber"),
    (("invocationSequenceNumber",), "0", "/invocationSequenceNumber"),
    (("invocationTimeStamp",), 1_700_000_000, "/invocationTimeStamp"),
    (("invocationTimeStamp",), "2026-01-01T00:00:00", "/invocationTimeStamp"),
    (("oneTimeEvent",), "false", "/oneTimeEvent"),
    (("multipleUnitUsage", 0, "ratingGroup"), "200", "/multipleUnitUsage/0/ratingGroup"),
    (
        ("multipleUnitUsage", 0, "requestedUnit", "totalVolume"),
        "1048576",
        "/multipleUnitUsage/0/requestedUnit/totalVolume",
    ),
]


@pytest.mark.parametrize(("path", "value", "param"), WRONG_TYPES)
async def test_a_value_of_the_wrong_json_type_is_refused_not_converted(
    client: httpx.AsyncClient, db: Database, path: tuple[Any, ...], value: Any, param: str
) -> None:
    """Pydantic's lax mode turned `true` into sequence number 1, `"200"` into rating group 200,
    a Unix time or a time without offset into `invocationTimeStamp`: a request the spec refuses
    opened a session and reserved quota. Now it is a 400 naming the field, nothing written."""
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    doc = _with(body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})]), path, value)
    assert _spec_refuses("/chargingdata", doc)
    r = await api.create(doc, validate_request=False)
    assert r.status_code == 400, r.text
    assert r.json()["cause"] == "MANDATORY_IE_INCORRECT"
    assert param in {p["param"] for p in r.json()["invalidParams"]}
    assert await _count(db, ChargingSession) == 0
    assert await open_reservations(db) == 0


async def test_used_units_as_strings_in_an_update_are_refused_and_nothing_is_posted(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Used units given as JSON strings were read as numbers and charged. The spec's `Uint64`
    is a number: the update is refused naming the field, the quota stands as it was."""
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})]))
    ref = ref_of(r)
    doc = body(t.supi, 1, [rg(DATA, used=[{"totalVolume": MIB}])])
    doc["multipleUnitUsage"][0]["usedUnitContainer"][0]["totalVolume"] = str(MIB)
    assert _spec_refuses(f"/chargingdata/{ref}/update", doc)
    r = await api.update(ref, doc, validate_request=False)
    assert r.status_code == 400, r.text
    assert r.json()["cause"] == "MANDATORY_IE_INCORRECT"
    assert r.json()["invalidParams"][0]["param"] == (
        "/multipleUnitUsage/0/usedUnitContainer/0/totalVolume"
    )
    data = (await balances(db, t.line)).units[0]
    assert (data.remaining, data.reserved) == (90 * MIB, 10 * MIB)
    assert await _count(db, UsageRecord) == 0
    # The right request with the same number goes through.
    r = await api.update(ref, body(t.supi, 1, [rg(DATA, used=[{"totalVolume": MIB}])]))
    assert r.status_code == 200, r.text
    assert unit_info(r, DATA)["resultCode"] == "SUCCESS"
    await assert_ledger_balanced(db)


@pytest.mark.parametrize("subscriber", ["imsi-00101\u00000000000001", "msisdn-1555\u00000100"])
@pytest.mark.parametrize("content_type", [None, "text/plain"])
async def test_a_nul_in_the_subscriber_is_an_unknown_subscriber_not_a_500(
    client: httpx.AsyncClient, db: Database, subscriber: str, content_type: str | None
) -> None:
    """The Nchf routes read the body whatever its content type; the middleware refuses a NUL
    only in JSON-typed bodies. A NUL in `subscriberIdentifier` reached PostgreSQL's lookup of
    the line and failed there: a 500. Then an identifier that is no IMSI or E.164 number was
    not looked up: `USER_UNKNOWN`, as the spec's `Supi` allows any text. Since round 16 a
    body not sent as JSON is not read at all (415, `test_round16_nchf_conformance.py`)."""
    await make_line(db)
    api = await nchf(client, db)
    raw = json.dumps(body(subscriber, 0, [rg(DATA, requested={"totalVolume": MIB})])).encode()
    headers = dict(api.headers)
    if content_type is not None:
        headers["content-type"] = content_type
    r = await client.post(f"{BASE}/chargingdata", content=raw, headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["cause"] == "INVALID_MSG_FORMAT"
    assert await _count(db, ChargingSession) == 0


@pytest.mark.parametrize("where", ["body", "query"])
async def test_a_nul_the_middleware_refuses_is_answered_in_nchf_s_shape(
    client: httpx.AsyncClient, db: Database, where: str
) -> None:
    """A NUL in a JSON body (or the query) is refused by the middleware before the route runs;
    on an Nchf path it answered the generic problem (422 `validation-error`, no `cause`), which
    a CHF client cannot read. Now it is Nchf's 400 `MANDATORY_IE_INCORRECT` with `invalidParams`
    naming the member as a JSON pointer, valid against the spec, and nothing is written."""
    await make_line(db)
    api = await nchf(client, db)
    doc = body("imsi-001010000000001", 0, [rg(DATA, requested={"totalVolume": MIB})])
    path, param = "/chargingdata", "/subscriberIdentifier"
    if where == "body":
        doc["subscriberIdentifier"] = "imsi-0010\u00001"
    else:
        path, param = "/chargingdata?note=a%00b", "/note"
    raw = json.dumps(doc).encode()
    r = await client.post(BASE + path, content=raw,
                          headers={**api.headers, "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["cause"] == "MANDATORY_IE_INCORRECT"
    assert [p["param"] for p in problem["invalidParams"]] == [param]
    request = MockRequest("https://example.com", "post", BASE + "/chargingdata", data=raw,
                          content_type="application/json")  # fmt: skip
    spec().validate_response(
        request, MockResponse(r.content, status_code=400, content_type="application/problem+json")
    )
    assert await _count(db, ChargingSession) == 0 and await _count(db, UsageRecord) == 0
