"""What integrators found driving Nchf and the usage import (the twenty-first review): lines not
in service, the `Location` header, countries, JSON types, error texts, repeated records, the
sequence number's detail, `cause`, and the OpenAPI document."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from simcharge.charging.batch import ISO_COUNTRIES, import_usage_records, read_usage_text
from simcharge.charging.models import ChargingSession, UsageRecord
from simcharge.cli import app as cli_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from simcharge.lines.models import Line
from tests.charging.helpers import (
    BASE,
    MIB,
    TestLine,
    balances,
    body,
    make_line,
    nchf,
    nf_key,
    ref_of,
    rg,
    unit_info,
)

DATA, VOICE, SMS = 200, 100, 300
HEADER = "id,subscriber,service,quantity,started_at,country\n"
SOON = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=1)


def soon(minutes: int = 0) -> str:
    return (SOON + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(autouse=True)
def _after_the_usage() -> Iterator[None]:
    """Imported a day after the usage (a record dated ahead of the clock is bad)."""
    clock.freeze(SOON + timedelta(days=1))
    yield
    clock.unfreeze()


async def _written(db: Database, line: Line) -> tuple[int, int, datetime | None]:
    """Usage records and charging sessions of `line`, and its last activity."""
    async with db.read() as s:
        records = await s.scalar(
            select(func.count()).select_from(UsageRecord).where(UsageRecord.line_id == line.id)
        )
        sessions = await s.scalar(
            select(func.count())
            .select_from(ChargingSession)
            .where(ChargingSession.line_id == line.id)
        )
        fresh = await s.get(Line, line.id)
    assert fresh is not None
    return records or 0, sessions or 0, fresh.last_activity_at


async def _not_in_service(db: Database) -> list[TestLine]:
    """A line in stock (no account, as the inventory holds it) and a terminated one."""
    return [
        await make_line(db, money=500, state="available", with_account=False),
        await make_line(db, money=500, state="terminated"),
    ]


# --- 1. lines not in service ------------------------------------------------------------------


async def test_nchf_answers_a_line_not_in_service_as_an_unknown_subscriber(
    client: httpx.AsyncClient, db: Database
) -> None:
    api = await nchf(client, db)
    for t in await _not_in_service(db):
        for who in (t.supi, t.gpsi):
            session = body(who, 0, [rg(VOICE, requested={"time": 60})])
            post_event = body(
                who, 0, [rg(SMS, used=[{"serviceSpecificUnits": 1}])],
                oneTimeEvent=True, oneTimeEventType="PEC",
            )  # fmt: skip
            for doc in (session, post_event):
                r = await api.create(doc)
                assert r.status_code == 404, r.text
                assert r.json()["cause"] == "USER_UNKNOWN"
                assert r.json()["detail"] == f"The subscriber {who} is not known."
        assert await _written(db, t.line) == (0, 0, None)
        assert (await balances(db, t.line)).wallet.available == 500


async def test_frozen_and_grace_lines_are_still_subscribers_denied_per_rating_group(
    client: httpx.AsyncClient, db: Database
) -> None:
    api = await nchf(client, db)
    for state in ("frozen", "grace"):
        t = await make_line(db, money=500, state=state)
        r = await api.create(body(t.gpsi, 0, [rg(DATA, requested={"totalVolume": MIB})]))
        assert r.status_code == 201
        assert unit_info(r, DATA)["resultCode"] == "END_USER_SERVICE_DENIED"


async def test_the_import_refuses_records_of_lines_not_in_service(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    stock, gone = await _not_in_service(db)
    frozen = await make_line(db, money=500, state="frozen")
    grace = await make_line(db, money=500, state="grace")
    text = HEADER + "".join(
        f"n{i},{who},sms,1,{soon(i)},\n"
        for i, who in enumerate(
            [stock.gpsi, stock.supi, gone.gpsi, f"+{gone.line.msisdn[1:]}", frozen.gpsi, grace.supi]
        )
    )
    report = await import_usage_records(db, settings, read_usage_text(text, "u.csv"))
    assert (report.accepted, report.rejected) == (2, 4)
    assert [(e.line, e.field) for e in report.errors] == [
        (2, "subscriber"), (3, "subscriber"), (4, "subscriber"), (5, "subscriber"),
    ]  # fmt: skip
    assert all("is not a line in service" in e.detail for e in report.errors)
    for t in (stock, gone):
        assert await _written(db, t.line) == (0, 0, None)
        assert (await balances(db, t.line)).wallet.available == 500
    # Usage that happened on a subscriber's line (a late record): charged.
    for t in (frozen, grace):
        assert (await _written(db, t.line))[0] == 1
        assert (await balances(db, t.line)).wallet.available == 495
    # The API alike, by index.
    r = await client.post(
        "/api/v1/usage",
        json={"records": [
            {"id": "api-stock", "subscriber": stock.gpsi, "service": "sms", "quantity": 1,
             "started_at": soon()},
        ]},
        headers=await nf_key(db, ("usage:write",)),
    )  # fmt: skip
    assert r.status_code == 200
    assert r.json()["rejected"] == 1
    assert r.json()["errors"][0]["record"] == 0 and "line" not in r.json()["errors"][0]
    assert await _written(db, stock.line) == (0, 0, None)


# --- 2. Location -------------------------------------------------------------------------------


async def test_the_location_is_our_base_url_whatever_the_host_header(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=500)
    headers = {**await nf_key(db), "Host": "attacker.example", "X-Forwarded-Host": "evil.example"}
    r = await client.post(
        BASE + "/chargingdata",
        json=body(t.supi, 0, [rg(VOICE, requested={"time": 60})]),
        headers=headers,
    )
    assert r.status_code == 201, r.text
    ref = r.json() and r.headers["location"].rsplit("/", 1)[-1]
    assert r.headers["location"] == f"{settings.base_url}{BASE}/chargingdata/{ref}"
    assert "attacker" not in r.headers["location"] and "evil" not in r.headers["location"]


# --- 3.–6. what a record may say, and how a bad one is told --------------------------------------


async def test_a_country_is_an_iso_3166_code_not_any_two_letters(
    db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=500)
    assert len(ISO_COUNTRIES) == 250 and "XK" in ISO_COUNTRIES  # 249 assigned, and Kosovo
    bad = ["XX", "ZZ", "UK", "EU", "AC", "A1", "USA"]
    good = ["gb", "AQ", "XK", " fr "]
    text = HEADER + "".join(
        f"c{i},{t.gpsi},sms,1,{soon(i)},{country}\n" for i, country in enumerate(bad + good)
    )
    report = await import_usage_records(db, settings, read_usage_text(text, "u.csv"))
    assert report.accepted == len(good)
    assert [(e.line, e.field, e.detail) for e in report.errors] == [
        (i + 2, "country", f'"{c}" is not an ISO 3166-1 alpha-2 country code')
        for i, c in enumerate(bad)
    ]
    async with db.read() as s:
        countries = set(
            await s.scalars(select(UsageRecord.country).where(UsageRecord.line_id == t.line.id))
        )
    assert countries == {"GB", "AQ", "XK", "FR"}


def _jsonl(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


async def test_json_lines_are_typed_as_nchf_types_its_members(
    db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=500)
    good = {"id": "j0", "subscriber": t.gpsi, "service": "sms", "quantity": 1,
            "started_at": soon()}  # fmt: skip
    units = "is not a whole number of units (a JSON number)"
    odd = [
        ({"id": "j1", "quantity": "1"}, "quantity", f'"1" {units}'),
        ({"id": 5}, "id", "5 is not a string (an id is text)"),
        ({"id": "j3", "quantity": True}, "quantity", f"true {units}"),
        ({"id": "j4", "quantity": 1.0}, "quantity", f"1.0 {units}"),
        ({"id": "j5", "quantity": -1}, "quantity", f"-1 {units}"),
        ({"id": "j6", "started_at": SOON.date().isoformat()}, "started_at",
         f'"{SOON.date().isoformat()}" is not a time: it is a date without a time of day'),
        ({"id": "j7", "started_at": 1767000000}, "started_at",
         "1767000000 is not an ISO 8601 time (a string)"),
        ({"id": "j8", "subscriber": 14155550101}, "subscriber",
         "14155550101 is not a string: msisdn-<digits>, +<digits> or imsi-<digits>"),
        ({"id": "j9", "country": 33}, "country",
         "33 is not an ISO 3166-1 alpha-2 code (a string, or null)"),
        ({"id": "j10", "quantity": 10**18}, "quantity",
         "1000000000000000000 is too large: at most 18 digits"),
    ]  # fmt: skip
    lower = {**good, "id": "j11", "started_at": soon(1).replace("T", "t").replace("Z", "z")}
    max_ok = {**good, "id": "j12", "service": "data", "quantity": 10**18 - 1}
    text = _jsonl(good, *({**good, **o} for o, _, _ in odd), lower, max_ok)
    report = await import_usage_records(db, settings, read_usage_text(text, "u.jsonl"))
    assert report.accepted == 3, report.errors
    assert [(e.line, e.field, e.detail) for e in report.errors] == [
        (i + 2, name, detail) for i, (_, name, detail) in enumerate(odd)
    ]


async def test_csv_is_text_quantities_are_digits_and_times_alike(
    db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=500)
    rows = [
        (f"t1,{t.gpsi},sms,True,{soon()},", "quantity", '"True" is not a whole number of units'),
        (f"t2,{t.gpsi},data,{'9' * 19},{soon()},", "quantity",
         f'"{"9" * 19}" is too large: at most 18 digits'),
        (f"t3,{t.gpsi},sms,1,{SOON.date().isoformat()},", "started_at",
         f'"{SOON.date().isoformat()}" is not a time: it is a date without a time of day'),
        (f"t4,{t.gpsi},fax,1,{soon()},", "service", '"fax" is not voice, data or sms'),
        (f"t5,who,sms,1,{soon()},", "subscriber",
         '"who" is not msisdn-<digits>, +<digits> or imsi-<digits> (at most 15 digits)'),
        (f"t6,{t.gpsi},sms,1,yesterday,", "started_at", '"yesterday" is not an ISO 8601 time'),
    ]  # fmt: skip
    ok = [
        f"t7,{t.gpsi},sms,1,{soon(2).replace('T', 't').replace('Z', 'z')},",  # RFC 3339: lower
        f"t8,{t.gpsi},data,{'0' * 5}{'9' * 18},{soon(3)},",  # leading zeros are no digits more
    ]
    text = HEADER + "".join(r + "\n" for r, _, _ in rows) + "".join(r + "\n" for r in ok)
    report = await import_usage_records(db, settings, read_usage_text(text, "u.csv"))
    assert report.accepted == 2, report.errors
    assert [(e.line, e.field, e.detail) for e in report.errors] == [
        (i + 2, name, detail) for i, (_, name, detail) in enumerate(rows)
    ]


async def test_bytes_that_are_not_utf8_are_said_so_not_shown_as_python(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    from simcharge.charging.batch import open_usage_file, read_usage_file

    t = await make_line(db, money=500)
    path = tmp_path / "u.csv"
    path.write_bytes(
        HEADER.encode()
        + f"b1,{t.gpsi}\xff,sms,1,{soon()},\n".encode("latin-1")
        + f"b2,{t.gpsi},sms,1\xe9,{soon()},\n".encode("latin-1")
        + f"b3,{t.gpsi},sms,1,{soon()},\n".encode()
    )
    with open_usage_file(path) as stream:
        report = await import_usage_records(db, settings, read_usage_file(stream, path.name))
    assert report.accepted == 1
    assert [(e.line, e.field, e.detail) for e in report.errors] == [
        (2, "subscriber", "not UTF-8 (0xFF)"),
        (3, "quantity", "not UTF-8 (0xE9)"),
    ]
    # A JSON line: a number of 5,000 digits or nesting too deep is a bad row, not a crash.
    text = '{"id": "x", "quantity": ' + "1" * 5000 + "}\n" + "[" * 100_000 + "\n"
    report = await import_usage_records(db, settings, read_usage_text(text, "u.jsonl"))
    assert [(e.line, e.field, e.detail) for e in report.errors] == [
        (1, "row", "not JSON we can read: a number of more than 4,300 digits"),
        (2, "row", "not JSON we can read: nested too deep"),
    ]


# --- the command: whole files that cannot be read ------------------------------------------------



def test_the_command_says_what_is_wrong_with_a_whole_file(cli_db: str, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli_app, ["demo"]).exit_code == 0
    record = f"u1,msisdn-14155550101,sms,1,{soon()},\n"
    utf16 = "the file is not UTF-8: it is UTF-16"
    cases = {
        "utf16le.csv": ((HEADER + record).encode("utf-16"), f"header: {utf16}"),
        "utf16be.jsonl": (b"\xfe\xff" + '{"id": "u1"}\n'.encode("utf-16-be"), f"row: {utf16}"),
        "semicolons.csv": (
            (HEADER + record).replace(",", ";").encode(),
            "header: the columns must be separated by commas, not ';'",
        ),
        "empty.csv": (b"", "header: the file is empty"),
        "empty.jsonl": (b"\n\n", "row: the file is empty"),
    }
    for name, (content, said) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = runner.invoke(cli_app, ["usage", "import", str(path)])
        assert result.exit_code == 2, (name, result.output)
        assert f"{path}: line 1: {said}" in result.output, (name, result.output)
        assert "0 record(s) charged, 0 already charged, 1 rejected" in result.output, name


# --- 7.–8. the API: records by index; a repeated record is a duplicate -----------------------


async def test_the_api_numbers_records_by_index_and_counts_a_repeat_as_a_duplicate(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, money=500)
    headers = await nf_key(db, ("usage:write",))
    first = {"id": "k1", "subscriber": t.gpsi, "service": "sms", "quantity": 1,
             "started_at": soon()}  # fmt: skip
    records = [first, dict(first), {**first, "quantity": 2}, {**first, "id": "k2", "quantity": "x"}]
    r = await client.post("/api/v1/usage", json={"records": records}, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["duplicates"], r.json()["rejected"]) == (1, 1, 2)
    assert r.json()["errors"] == [
        {"record": 2, "field": "id", "detail": "k1 is the id of another record, at records[0]"},
        {"record": 3, "field": "quantity",
         "detail": '"x" is not a whole number of units (a JSON number)'},
    ]  # fmt: skip
    assert (await balances(db, t.line)).wallet.available == 495
    # The schema says so.
    spec = (await client.get("/openapi.json")).json()
    error = spec["components"]["schemas"]["UsageError"]["properties"]
    assert "index in `records` (0 = the first)" in error["record"]["description"]


# --- 9.–10. Nchf's details ---------------------------------------------------------------------


async def test_a_number_before_the_last_and_not_kept_is_said_so(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, money=500)
    api = await nchf(client, db)
    ref = ref_of(await api.create(body(t.supi, 1, [rg(VOICE, requested={"time": 60})])))
    used = [rg(VOICE, requested={"time": 60}, used=[{"time": 10}])]
    assert (await api.update(ref, body(t.supi, 2, used))).status_code == 200
    assert (await api.update(ref, body(t.supi, 7, used))).status_code == 200
    r = await api.update(ref, body(t.supi, 5, used))  # 5 was never sent
    assert (r.status_code, r.json()["cause"]) == (400, "CHARGING_FAILED")
    assert r.json()["detail"] == (
        "invocationSequenceNumber 5 is not after the last one, 7, and no answer to it is kept: "
        "it is not answered."
    )
    assert r.json()["invalidParams"] == [
        {"param": "/invocationSequenceNumber", "reason": "not after the last one; no answer kept"}
    ]
    async with db.read() as s:
        charged = await s.scalar(
            select(func.count()).select_from(UsageRecord).where(UsageRecord.line_id == t.line.id)
        )
    assert charged == 2


async def test_the_cause_is_that_of_the_first_invalid_param(
    client: httpx.AsyncClient, db: Database
) -> None:
    api = await nchf(client, db)
    nf = {"nodeFunctionality": "SMF"}
    # Incorrect first (the timestamp a number), then missing (the sequence number).
    r = await api.create(
        {"nfConsumerIdentification": nf, "invocationTimeStamp": 5}, validate_request=False
    )
    assert (r.status_code, r.json()["cause"]) == (400, "MANDATORY_IE_INCORRECT")
    params = [p["param"] for p in r.json()["invalidParams"]]
    assert params == ["/invocationTimeStamp", "/invocationSequenceNumber"]
    # Missing first.
    r = await api.create({"invocationSequenceNumber": "x"}, validate_request=False)
    assert (r.status_code, r.json()["cause"]) == (400, "MANDATORY_IE_MISSING")
    assert r.json()["invalidParams"][0]["param"] == "/nfConsumerIdentification"


async def test_nchf_takes_a_lower_case_z_as_rfc_3339_does(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, money=500)
    api = await nchf(client, db)
    doc = body(t.supi, 0, [rg(VOICE, requested={"time": 60})])
    doc["invocationTimeStamp"] = doc["invocationTimeStamp"].replace("Z", "z")
    r = await api.create(doc, validate_request=False)  # the YAML's date-time: RFC 3339
    assert r.status_code == 201, r.text


# --- 11. the OpenAPI document ------------------------------------------------------------------


async def test_the_openapi_document_says_what_nchf_answers(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    create = paths[BASE + "/chargingdata"]["post"]["responses"]
    update = paths[BASE + "/chargingdata/{ChargingDataRef}/update"]["post"]
    release = paths[BASE + "/chargingdata/{ChargingDataRef}/release"]["post"]
    assert {"201", "400", "401", "403", "404", "500", "503"} <= set(create)
    for operation, ok in ((update, "200"), (release, "204")):
        assert "422" not in operation["responses"]
        assert {ok, "400", "401", "403", "404"} <= set(operation["responses"])
        assert operation["parameters"][0]["name"] == "ChargingDataRef"
    ref = {"$ref": "#/components/schemas/ChargingDataResponse"}
    assert create["201"]["content"]["application/json"]["schema"] == ref
    assert update["responses"]["200"]["content"]["application/json"]["schema"] == ref
    assert "Location" in create["201"]["headers"]
    answer = spec["components"]["schemas"]["ChargingDataResponse"]["properties"]
    assert {"invocationTimeStamp", "invocationSequenceNumber", "multipleUnitInformation"} <= set(
        answer
    )
    problem = create["404"]["content"]["application/problem+json"]["schema"]
    assert {"cause", "invalidParams"} <= set(problem["properties"])


async def test_an_answer_matches_the_documented_schema(
    client: httpx.AsyncClient, db: Database
) -> None:
    """The 201 body has only the members `ChargingDataResponse` declares."""
    t = await make_line(db, money=500)
    api = await nchf(client, db)
    r = await api.create(body(t.supi, 0, [rg(VOICE, requested={"time": 60})]))
    spec = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert set(r.json()) <= set(spec["ChargingDataResponse"]["properties"])
    info = r.json()["multipleUnitInformation"][0]
    assert set(info) <= set(spec["MultipleUnitInformation"]["properties"])
    assert uuid.UUID(ref_of(r))
