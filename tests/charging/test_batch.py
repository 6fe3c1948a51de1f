"""Batch (offline) charging: files and the API, idempotent, bad rows reported by line."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from simcharge.charging.batch import (
    CLOCK_SKEW,
    MAX_LISTED_ERRORS,
    import_usage_records,
    read_usage_text,
)
from simcharge.charging.models import UsageRecord
from simcharge.cli import app as cli_app
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant
from simcharge.worker.models import OutboxJob
from tests.charging.helpers import MIB, assert_ledger_balanced, balances, make_line, nf_key

HEADER = "id,subscriber,service,quantity,started_at,country\n"


# Usage after the tests' grants: a bucket counts only from when it was granted.
SOON = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=1)


def soon(minutes: int = 0, *, z: bool = True) -> str:
    at = SOON + timedelta(minutes=minutes)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if z else at.isoformat()


def import_after_the_usage() -> None:
    """The clock a day past `SOON`: usage is imported after it happened (a record dated ahead of
    the clock is bad)."""
    clock.freeze(SOON + timedelta(days=1))


async def test_csv_rates_buckets_then_wallet_and_reports_bad_rows(
    db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=500, grants=[UnitGrant("VOICE_S", 120, 30)])
    other = await make_line(db, money=0, catalog=False)
    text = HEADER + "\n".join(
        [
            f"c1,{t.gpsi},voice,90,{soon(0)},",  # 60/1 at home: 90 s from the bucket
            f"c2,{t.supi},voice,61,{soon(5, z=False)},FR",  # Europe 60/60: 120 s
            f"c3,{t.line.msisdn},sms,1,{soon(6)},JP",  # Asia SMS 0.15
            f"c4,msisdn-19999999999,data,100,{soon(7)},",  # unknown line
            f"c5,{t.supi},fax,1,{soon(8)},",  # bad service
            f"c6,{t.supi},data,-1,{soon(9)},",  # bad quantity
            f"c7,{t.supi},data,1,yesterday,",  # bad time
            f"c1,{t.supi},data,1,{soon(10)},",  # the same id twice
            f"c8,{other.supi},data,{MIB},{soon(11)},DE",  # no money: unbilled
            "c9,too,few",
        ]
    )
    import_after_the_usage()
    report = await import_usage_records(
        db, settings, read_usage_text(text, "usage.csv"), chunk_size=3
    )
    assert report.accepted == 4 and report.duplicates == 0
    assert [(e.line, e.field) for e in report.errors] == [
        (5, "subscriber"),
        (6, "service"),
        (7, "quantity"),
        (8, "started_at"),
        (9, "id"),
        (11, "row"),
    ]
    assert report.rejected == 6 and report.unbilled_records == 1
    view = await balances(db, t.line)
    # Bucket: 120 − 90 = 30 s; then 120 s rated in France: 30 s from the bucket, 90 s from the
    # wallet at 0.20/min = 30 cents; the SMS in Japan 15 cents.
    assert view.units == []
    assert view.wallet.available == 500 - 30 - 15
    async with db.read() as s:
        rows = {r.external_id: r for r in (await s.execute(select(UsageRecord))).scalars()}
        line = await s.get(Line, t.line.id)
    assert rows["c2"].zone == "europe" and rows["c2"].rated == 120
    assert (rows["c2"].from_buckets, rows["c2"].from_wallet, rows["c2"].charge) == (30, 90, 30)
    assert rows["c8"].unbilled == MIB and rows["c8"].charge == 0
    assert line is not None and line.last_activity_at is not None
    assert line.last_activity_at == datetime.fromisoformat(soon(6))
    await assert_ledger_balanced(db)

    again = await import_usage_records(db, settings, read_usage_text(text, "usage.csv"))
    assert again.accepted == 0 and again.duplicates == 4
    assert (await balances(db, t.line)).wallet.available == 455
    await assert_ledger_balanced(db)


async def test_an_id_charged_before_for_another_record_is_a_bad_record_not_a_duplicate(
    db: Database, settings: Settings
) -> None:
    """Ids name records: the same id again is a duplicate only when it is the same record
    (the subscriber may be spelt another way). Another subscriber, service, quantity, start or
    country under a charged id is reported on its line, field `id`, and charges nothing."""
    t = await make_line(db, money=500)
    other = await make_line(db, money=500, catalog=False)
    import_after_the_usage()
    first = HEADER + "\n".join([f"r1,{t.gpsi},voice,60,{soon(0)},",
                                 f"r2,{t.supi},sms,1,{soon(1)},FR",
                                 f"n1,{t.supi},sms,1,{soon(3)},"])
    report = await import_usage_records(db, settings, read_usage_text(first, "a.csv"))
    assert (report.accepted, report.rejected) == (3, 0)
    wallet = (await balances(db, t.line)).wallet.available
    same = [
        f"r1,{t.supi},voice,60,{soon(0)},",  # the same record, by its IMSI
        f"r2,{t.line.msisdn},sms,1,{soon(1)},FR",
    ]
    report = await import_usage_records(db, settings, read_usage_text(
        HEADER + "\n".join(same), "b.csv"))
    assert (report.accepted, report.duplicates, report.rejected) == (0, 2, 0), report
    others = [
        f"r1,{t.supi},voice,600,{soon(0)},",  # ten minutes, not one
        f"r1,{other.supi},voice,60,{soon(0)},",  # another line
        f"r1,{t.supi},data,60,{soon(0)},",  # another service
        f"r2,{t.supi},sms,1,{soon(2)},FR",  # another time
        f"r2,{t.supi},sms,1,{soon(1)},JP",  # another country
    ]
    for row in others:
        for chunk_size in (50, 1):
            text = HEADER + f"n1,{t.supi},sms,1,{soon(3)},\n{row}"
            report = await import_usage_records(
                db, settings, read_usage_text(text, "c.csv"), chunk_size=chunk_size
            )
            assert (report.accepted, report.duplicates, report.rejected) == (0, 1, 1), (
                row, report)
            [error] = report.errors
            assert (error.line, error.field) == (3, "id"), row
            assert "charged before for another record" in error.detail, row
    assert (await balances(db, t.line)).wallet.available == wallet
    assert (await balances(db, other.line)).wallet.available == 500
    async with db.read() as s:
        assert len((await s.execute(select(UsageRecord))).scalars().all()) == 3
    await assert_ledger_balanced(db)


async def test_json_lines(db: Database, settings: Settings) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 10 * MIB, 30)])
    lines = [
        json.dumps(
            {
                "id": "j1",
                "subscriber": t.supi,
                "service": "data",
                "quantity": 9 * MIB,
                "started_at": soon(0),
            }
        ),
        "not json",
        json.dumps([1]),
        "",
        json.dumps(
            {
                "id": "j2",
                "subscriber": t.supi,
                "service": "data",
                "quantity": 2 * MIB,
                "started_at": soon(1),
            }
        ),
    ]
    import_after_the_usage()
    report = await import_usage_records(db, settings, read_usage_text("\n".join(lines), "u.jsonl"))
    assert report.accepted == 2
    assert [(e.line, e.field) for e in report.errors] == [(2, "row"), (3, "row")]
    assert report.unbilled_records == 1  # 1 MB beyond the bucket, no money
    async with db.read() as s:
        jobs = (
            (await s.execute(select(OutboxJob).where(OutboxJob.dedupe_key.like("usage:%"))))
            .scalars()
            .all()
        )
    assert sorted(j.payload["template"] for j in jobs) == ["bucket.used_up"]


async def test_a_bad_header_is_one_error(db: Database, settings: Settings) -> None:
    report = await import_usage_records(db, settings, read_usage_text("id,who\n1,2\n", "u.csv"))
    assert report.accepted == 0
    assert report.errors[0].field == "header" and "subscriber" in report.errors[0].detail


async def test_the_api(client: httpx.AsyncClient, db: Database) -> None:
    t = await make_line(db, money=100)
    headers = await nf_key(db, ("usage:write",))
    records = [
        {
            "id": "a1",
            "subscriber": t.supi,
            "service": "sms",
            "quantity": 1,
            "started_at": "2026-11-25T10:00:00Z",
        },
        {
            "id": "a2",
            "subscriber": t.supi,
            "service": "sms",
            "quantity": "x",
            "started_at": "2026-11-25T10:00:00Z",
        },
    ]
    r = await client.post("/api/v1/usage", json={"records": records}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    # Numbered by index in `records` (from 0), under `record`: a file's numbers are lines.
    assert r.json()["errors"] == [
        {"record": 1, "field": "quantity",
         "detail": '"x" is not a whole number of units (a JSON number)'}
    ]  # fmt: skip
    r = await client.post("/api/v1/usage", json={"records": records[:1]}, headers=headers)
    assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 1)
    assert (await balances(db, t.line)).wallet.available == 95
    r = await client.post("/api/v1/usage", json={"records": []}, headers=headers)
    assert r.status_code == 422
    r = await client.post("/api/v1/usage", json={"records": records}, headers=await nf_key(db))
    assert r.status_code == 403
    r = await client.post("/api/v1/usage", json={"records": records})
    assert r.status_code == 401



def test_the_command(cli_db: str, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli_app, ["demo"]).exit_code == 0
    path = tmp_path / "usage.csv"
    path.write_text(
        HEADER
        + "u1,msisdn-14155550101,voice,60,2026-11-25T10:00:00Z,\n"
        + "u2,msisdn-14155550101,voice,oops,2026-11-25T10:00:00Z,\n",
        encoding="utf-8",
    )
    result = runner.invoke(cli_app, ["usage", "import", str(path)])
    assert result.exit_code == 2, result.output
    assert "1 record(s) charged" in result.output
    assert "line 3: quantity" in result.output
    result = runner.invoke(cli_app, ["usage", "import", str(path)])
    assert "0 record(s) charged, 1 already charged" in result.output
    result = runner.invoke(cli_app, ["usage", "import", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1


async def test_odd_values_are_bad_records_not_failures(db: Database, settings: Settings) -> None:
    t = await make_line(db, money=100)
    good = {"id": "ok", "subscriber": t.supi, "service": "SMS", "quantity": 1,
            "started_at": soon(0)}  # fmt: skip
    odd = [
        {"id": "tab\there"},  # not printable
        {"id": "nul\u0000"},
        {"id": "lone \udcff"},  # a lone surrogate (JSON allows it; UTF-8 does not)
        {"id": "q1", "quantity": "\u0661\u0662"},  # Arabic-Indic digits
        {"id": "q2", "quantity": "\u00b2"},  # a superscript two: a digit, not a number
        {"id": "s1", "subscriber": "msisdn-\u0661\u0662\u0663"},
        {"id": "s2", "subscriber": "msisdn-1234567890123456"},  # 16 digits
        {"id": "s3", "subscriber": ["msisdn-1"]},
        {"id": "c1", "country": "\u00c4\u00d6"},
        {"id": "t1", "started_at": None},
        {"id": "t2", "started_at": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
        {"id": "t3", "started_at": "9999-12-31T23:59:59-01:00"},  # after year 9999 in UTC
    ]
    text = "\n".join(json.dumps({**good, **o}) for o in [*odd, {}])
    import_after_the_usage()
    report = await import_usage_records(db, settings, read_usage_text(text, "u.jsonl"))
    assert report.accepted == 1
    assert [(e.line, e.field) for e in report.errors] == [
        (1, "id"), (2, "id"), (3, "id"), (4, "quantity"), (5, "quantity"), (6, "subscriber"),
        (7, "subscriber"), (8, "subscriber"), (9, "country"), (10, "started_at"),
        (11, "started_at"), (12, "started_at"),
    ]  # fmt: skip
    # A CSV field past the csv module's limit is one bad row; the reader goes on after it.
    text = HEADER + "x" * 200_000 + f",{t.supi},sms,1,{soon(1)},\nok2,{t.supi},sms,1,{soon(2)},\n"
    report = await import_usage_records(db, settings, read_usage_text(text, "u.csv"))
    assert report.accepted == 1 and [(e.line, e.field) for e in report.errors] == [(2, "row")]


async def test_a_record_twice_in_a_file_is_a_duplicate_however_far_apart(
    db: Database, settings: Settings
) -> None:
    """One rule whatever the distance: the same record again is a duplicate (charged once,
    exit 0); another record under the same id is rejected."""
    t = await make_line(db, money=1000)
    rows = [f"r{i},{t.gpsi},sms,1,{soon(i)},\n" for i in range(1, 13)]
    # Chunks of 2; the import forgets the file's ids once it holds more than 8. r9 comes again
    # right after itself (line 11, in r9's chunk, where the ninth id is held); r1 again at the
    # end (line 15), after they were forgotten: found charged already. r2 comes back as another
    # record (2 messages) twice: next to itself and far from it.
    other = f"r2,{t.gpsi},sms,2,{soon(2)},\n"
    text = (
        HEADER + "".join(rows[:9]) + rows[8] + "".join(rows[9:]) + rows[0] + rows[1] + other
    )
    import_after_the_usage()
    report = await import_usage_records(db, settings, read_usage_text(text, "u.csv"), chunk_size=2)
    assert (report.accepted, report.duplicates, report.rejected) == (12, 3, 1)
    assert [(e.line, e.field, e.detail) for e in report.errors] == [
        (17, "id", "r2 is the id of another record, at line 16")  # r2 again on line 16
    ]
    assert (await balances(db, t.line)).wallet.available == 1000 - 12 * 5  # each SMS once
    near = HEADER + rows[0] + rows[0] + f"r1,{t.gpsi},sms,3,{soon(1)},\n"
    report = await import_usage_records(db, settings, read_usage_text(near, "n.csv"))
    assert (report.accepted, report.duplicates, report.rejected) == (0, 2, 1)
    assert [(e.line, e.detail) for e in report.errors] == [
        (4, "r1 is the id of another record, at line 2")
    ]
    fresh = HEADER + f"n1,{t.gpsi},sms,1,{soon(0)},\n" * 2 + f"n1,{t.gpsi},sms,4,{soon(0)},\n"
    report = await import_usage_records(db, settings, read_usage_text(fresh, "f.csv"))
    assert (report.accepted, report.duplicates, report.rejected) == (1, 1, 1)
    assert [(e.line, e.detail) for e in report.errors] == [
        (4, "n1 is the id of another record, at line 2")
    ]
    again = await import_usage_records(db, settings, read_usage_text(text, "u.csv"), chunk_size=2)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 15, 1)
    assert (await balances(db, t.line)).wallet.available == 1000 - 13 * 5
    await assert_ledger_balanced(db)


async def test_a_record_twice_in_a_file_is_compared_field_by_field(
    db: Database, settings: Settings
) -> None:
    """The import keeps a compact form of each record it has seen (not the record): the rule
    it applies is still the record's. The same start written with another offset, the country
    left out, the number spelt `+…` or `msisdn-…`: the same record (a duplicate). Another
    quantity (even by a digit past 32 bits), start (by a microsecond), service or country, or
    a country said where the first said none: another record, reported at the first's line."""
    t = await make_line(db, money=1000)
    at = datetime.fromisoformat(soon(1))
    same_instant = at.astimezone(timezone(timedelta(hours=-5))).isoformat()
    later = (at + timedelta(microseconds=1)).isoformat()
    m = t.line.msisdn
    rows = [
        f"a,{t.gpsi},sms,1,{soon(1)},FR",  # line 2
        f"a,{m},sms,1,{same_instant},FR",  # the same record
        f"a,{m},sms,1,{soon(1)},",  # the same record, its country left out
        f"a,{m},sms,1,{soon(1)},JP",  # another country
        f"a,{m},sms,{1 + 2**32},{soon(1)},FR",  # another quantity
        f"a,{m},sms,1,{later},FR",  # another start
        f"a,{m},data,1,{soon(1)},FR",  # another service
        f"b,{m},sms,1,{soon(2)},",  # line 9
        f"b,{m},sms,1,{soon(2)},",  # the same record
        f"b,{m},sms,1,{soon(2)},DE",  # a country where the first said none
    ]
    import_after_the_usage()
    report = await import_usage_records(
        db, settings, read_usage_text(HEADER + "\n".join(rows) + "\n", "s.csv")
    )
    assert (report.accepted, report.duplicates, report.rejected) == (2, 3, 5), report
    assert [(e.line, e.field, e.detail) for e in report.errors] == [
        (n, "id", f"{ext} is the id of another record, at line {first}")
        for n, ext, first in [(5, "a", 2), (6, "a", 2), (7, "a", 2), (8, "a", 2), (11, "b", 9)]
    ]
    async with db.read() as s:
        stored = (await s.execute(select(UsageRecord))).scalars().all()
    assert sorted((r.quantity, r.started_at.replace(tzinfo=UTC)) for r in stored) == [
        (1, at), (1, at + timedelta(minutes=1))
    ]
    await assert_ledger_balanced(db)


async def test_a_record_dated_ahead_of_the_clock_is_bad_and_changes_nothing(
    db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=100)
    now = datetime.now(UTC).replace(microsecond=0)
    clock.freeze(now)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    text = HEADER + "".join(
        [
            f"f1,{t.gpsi},sms,1,2099-01-01T00:00:00Z,\n",
            f"f2,{t.gpsi},sms,1,{(now + CLOCK_SKEW + timedelta(seconds=1)).strftime(stamp)},\n",
            f"ok,{t.gpsi},sms,1,{(now + CLOCK_SKEW).strftime(stamp)},\n",  # clocks differ a little
        ]
    )
    report = await import_usage_records(db, settings, read_usage_text(text, "u.csv"))
    assert (report.accepted, report.rejected) == (1, 2)
    assert [(e.line, e.field) for e in report.errors] == [(2, "started_at"), (3, "started_at")]
    assert report.errors[0].detail == (
        "2099-01-01T00:00:00+00:00 is in the future (more than 5 minutes ahead of our clock)"
    )
    async with db.read() as s:
        charged = [r.external_id for r in (await s.execute(select(UsageRecord))).scalars()]
        line = await s.get(Line, t.line.id)
    assert charged == ["ok"]
    assert (await balances(db, t.line)).wallet.available == 95
    assert line is not None and line.last_activity_at == now + CLOCK_SKEW


def test_the_command_reports_bytes_that_are_not_utf8_and_lists_so_many_errors(
    cli_db: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    assert runner.invoke(cli_app, ["demo"]).exit_code == 0
    path = tmp_path / "usage.csv"
    bad = [f"x{i},nobody,sms,1,{soon(0)},\n" for i in range(MAX_LISTED_ERRORS + 4)]
    path.write_bytes(
        HEADER.encode()
        + f"g1,msisdn-14155550101,sms,1,{soon(0)},\n".encode()
        + f"g\xff2,msisdn-14155550101,sms,1,{soon(0)},\n".encode("latin-1")
        + "".join(bad).encode()
    )
    import_after_the_usage()
    result = runner.invoke(cli_app, ["usage", "import", str(path)])
    assert result.exit_code == 2, result.output[-500:]
    assert "line 3: id: not UTF-8 (0xFF)" in result.output
    assert "line 4: subscriber" in result.output
    assert "5 more bad record(s) not listed" in result.output
    assert f"1 record(s) charged, 0 already charged, {MAX_LISTED_ERRORS + 5} rejected" in (
        result.output
    )


def test_the_command_says_so_when_the_database_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMCHARGE_DATABASE_URL", "postgresql+asyncpg://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("SIMCHARGE_ENV", "test")
    get_settings.cache_clear()
    path = tmp_path / "usage.csv"
    path.write_text(HEADER + f"u1,msisdn-14155550101,sms,1,{soon(0)},\n", encoding="utf-8")
    try:
        result = CliRunner().invoke(cli_app, ["usage", "import", str(path)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "the import stopped: the database failed" in result.output
    assert "run the same import again" in result.output
    assert "Traceback" not in result.output


async def test_a_bucket_counts_only_while_valid_and_in_its_zones(
    db: Database, settings: Settings
) -> None:
    from datetime import UTC, datetime, timedelta

    t = await make_line(
        db,
        money=1000,
        grants=[UnitGrant("SMS", 5, 30), UnitGrant("SMS", 5, 60, ("asia",))],
    )
    soon = datetime.now(UTC) + timedelta(days=1)
    late = datetime.now(UTC) + timedelta(days=45)
    rows = [
        (
            2,
            {
                "id": "v1",
                "subscriber": t.supi,
                "service": "sms",
                "quantity": 1,
                "started_at": soon.isoformat(),
            },
        ),
        (
            3,
            {
                "id": "v2",
                "subscriber": t.supi,
                "service": "sms",
                "quantity": 1,
                "started_at": late.isoformat(),
            },
        ),
        (
            4,
            {
                "id": "v3",
                "subscriber": t.supi,
                "service": "sms",
                "quantity": 1,
                "started_at": late.isoformat(),
                "country": "PH",
            },
        ),
    ]
    clock.freeze(late + timedelta(days=1))  # imported after the usage
    report = await import_usage_records(db, settings, iter(rows))
    assert report.accepted == 3
    async with db.read() as s:
        found = {r.external_id: r for r in (await s.execute(select(UsageRecord))).scalars()}
    assert (found["v1"].from_buckets, found["v1"].charge) == (1, 0)
    # 45 days on, the 30-day bucket has expired and the Asia bucket is out of scope at home.
    assert (found["v2"].from_buckets, found["v2"].charge, found["v2"].zone) == (0, 5, "home")
    assert (found["v3"].from_buckets, found["v3"].zone) == (1, "asia")
    await assert_ledger_balanced(db)


def test_record_ids_are_derived_ids() -> None:
    from simcharge.charging.batch import record_id_of
    from simcharge.kit.ids import derived_id

    for external in ("a", "cdr-00000001", "é" * 60):
        made = uuid.UUID(hex=record_id_of(external))
        assert made == derived_id("usage", "batch", external)
        assert made.version == 5
