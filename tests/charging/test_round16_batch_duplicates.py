"""Batch import: one duplicate rule in a file and across imports (sixteenth review round).

What was wrong, per test:

- `test_the_same_record_by_msisdn_then_imsi_or_its_home_country_is_a_duplicate_in_a_file` (and
  its API and command twins): a file's records were compared with one another as written — the
  subscriber's text, the first record's literal country — while a record charged before is
  compared by the line it resolves to and the country as stored (the line's home country when
  none was said). So the same record written once by MSISDN and once by IMSI, or its country
  left out and then given as the home country, was "the id of another record" in one file
  (rejected, exit 2; the API's answer listed it under `id`) but a duplicate across two imports.
  A record that repeats an id of the file is now charged after the id's record and compared
  with what was stored, by the same code as across imports.
- `test_a_refused_record_is_not_the_ids_record`: the file's first record of an id was
  remembered before the line was checked. A record for a line in stock (refused: "not a line in
  service") followed by the real record under the same id made the real one "the id of another
  record" — a record never charged — and sending the file again repeated it: that usage was
  never charged. A refused record is not the id's record now: the next one is charged.
- `test_a_contradiction_stays_refused`: one id naming line A then line B (or another service,
  quantity, start or country) is still a bad record, named at the line of the record charged.

Every file is imported in chunks of 50, 1 and 2 records (the rule must not depend on where a
chunk ends), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from simcharge.charging.batch import UsageReport, import_usage_records, read_usage_text
from simcharge.charging.models import UsageRecord
from simcharge.cli import app as cli_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from tests.charging.helpers import assert_ledger_balanced, balances, make_line, nf_key

if TYPE_CHECKING:
    from tests.charging.helpers import TestLine

HEADER = "id,subscriber,service,quantity,started_at,country\n"
SOON = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=1)
CHUNK_SIZES = (50, 1, 2)
SMS = 5
"""What an SMS at home costs in the demo catalog (US cents)."""


def soon(minutes: int = 0) -> str:
    return (SOON + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def import_after_the_usage() -> None:
    clock.freeze(SOON + timedelta(days=1))


async def charge(db: Database, settings: Settings, rows: list[str], size: int) -> UsageReport:
    text = HEADER + "".join(f"{r}\n" for r in rows)
    return await import_usage_records(db, settings, read_usage_text(text, "u.csv"), chunk_size=size)


def counts(report: UsageReport) -> tuple[int, int, int]:
    return report.accepted, report.duplicates, report.rejected


def errors(report: UsageReport) -> list[tuple[int | None, str, str]]:
    return [(e.line, e.field, e.detail) for e in report.errors]


async def stored(db: Database, prefix: str) -> list[tuple[str, str, int, str]]:
    async with db.read() as s:
        rows = await s.execute(
            select(UsageRecord.external_id, UsageRecord.service, UsageRecord.quantity,
                   UsageRecord.country)
            .where(UsageRecord.external_id.like(f"{prefix}%"))
            .order_by(UsageRecord.external_id)
        )  # fmt: skip
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_the_same_record_by_msisdn_then_imsi_or_its_home_country_is_a_duplicate_in_a_file(
    db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=1000)  # a US number: its home country is US
    import_after_the_usage()
    for size in CHUNK_SIZES:
        p = f"s{size}-"
        rows = [
            f"{p}b1,{t.line.msisdn},sms,1,{soon(0)},US",  # line 2
            f"{p}b1,{t.supi},sms,1,{soon(0)},US",  # by its IMSI
            f"{p}b1,{t.gpsi},sms,1,{soon(0)},",  # msisdn-…, its country left out
            f"{p}b2,{t.line.msisdn},sms,1,{soon(1)},",  # line 5: no country (stored: US)
            f"{p}b2,{t.supi},sms,1,{soon(1)},US",  # the home country given
            f"{p}b2,{t.supi},sms,1,{soon(1)},US",  # and again, exactly
            f"{p}b3,{t.supi},sms,1,{soon(2)},US",  # line 8
            f"{p}b3,{t.line.msisdn},sms,1,{soon(2)},",
            f"{p}b3,{t.supi},sms,1,{soon(2)},US",  # the first again, exactly, after another
        ]
        before = (await balances(db, t.line)).wallet.available
        report = await charge(db, settings, rows, size)
        assert counts(report) == (3, 6, 0), (size, report)
        assert (await balances(db, t.line)).wallet.available == before - 3 * SMS
        assert await stored(db, p) == [(f"{p}b1", "sms", 1, "US"), (f"{p}b2", "sms", 1, "US"),
                                       (f"{p}b3", "sms", 1, "US")]  # fmt: skip
        # Across imports the rule is the same: every record is a duplicate now.
        again = await charge(db, settings, rows, size)
        assert counts(again) == (0, 9, 0), (size, again)
        # And each record alone, in files of their own, is what it was in the one file.
        for row in rows:
            alone = await charge(db, settings, [row], size)
            assert counts(alone) == (0, 1, 0), (size, row, alone)
        assert (await balances(db, t.line)).wallet.available == before - 3 * SMS
    await assert_ledger_balanced(db)


async def test_a_contradiction_stays_refused(db: Database, settings: Settings) -> None:
    t = await make_line(db, money=1000)
    other = await make_line(db, money=1000, catalog=False)
    import_after_the_usage()
    for size in CHUNK_SIZES:
        p = f"c{size}-"
        rows = [
            f"{p}c1,{t.line.msisdn},sms,1,{soon(0)},",  # line 2: charged (stored: US)
            f"{p}c1,{other.supi},sms,1,{soon(0)},",  # line B under line A's id
            f"{p}c1,{t.supi},sms,1,{soon(0)},DE",  # a country other than the stored one
            f"{p}c1,{t.supi},sms,2,{soon(0)},",  # another quantity
            f"{p}c1,{t.supi},voice,1,{soon(0)},",  # another service
            f"{p}c1,{t.supi},sms,1,{soon(1)},",  # another start
            f"{p}c1,{t.supi},sms,1,{soon(0)},US",  # the same record: a duplicate
        ]
        report = await charge(db, settings, rows, size)
        assert counts(report) == (1, 1, 5), (size, report)
        assert errors(report) == [
            (n, "id", f"{p}c1 is the id of another record, at line 2") for n in range(3, 8)
        ], size
        # Imported again, the first is a duplicate and the others were charged before for
        # another record — here too, the record charged is the file's line 2.
        again = await charge(db, settings, rows, size)
        assert counts(again) == (0, 2, 5), (size, again)
        assert errors(again) == errors(report), size
    assert (await balances(db, other.line)).wallet.available == 1000
    async with db.read() as s:
        assert (await s.execute(select(func.count()).select_from(UsageRecord))).scalar_one() == 3
    await assert_ledger_balanced(db)


async def test_a_refused_record_is_not_the_ids_record(db: Database, settings: Settings) -> None:
    t = await make_line(db, money=1000)
    stock = await make_line(db, state="available", catalog=False)
    import_after_the_usage()
    for size in CHUNK_SIZES:
        p = f"r{size}-"
        rows = [
            f"{p}u2,{stock.line.msisdn},sms,1,{soon(0)},",  # line 2: a line in stock
            f"{p}u2,{t.gpsi},sms,1,{soon(0)},",  # line 3: the real record, charged
            f"{p}u2,{t.supi},sms,1,{soon(0)},",  # the same by its IMSI: a duplicate
            f"{p}u2,{t.supi},sms,2,{soon(0)},",  # another record than line 3's
            f"{p}u3,msisdn-19995550000,sms,1,{soon(1)},",  # line 6: not one of our lines
            f"{p}u3,{t.gpsi},sms,1,{soon(1)},",  # line 7: charged
            f"{p}u4,{stock.supi},sms,1,{soon(2)},",  # line 8: in stock
            f"{p}u4,{stock.supi},sms,1,{soon(2)},",  # exactly again: refused again, the same
        ]
        before = (await balances(db, t.line)).wallet.available
        report = await charge(db, settings, rows, size)
        in_stock = "is not a line in service (in stock or terminated)"
        assert errors(report) == [
            (2, "subscriber", f"{stock.line.msisdn} {in_stock}"),
            (5, "id", f"{p}u2 is the id of another record, at line 3"),
            (6, "subscriber", "+19995550000 is not one of our lines"),
            (8, "subscriber", f"{stock.imsi} {in_stock}"),
            (9, "subscriber", f"{stock.imsi} {in_stock}"),
        ], size
        assert counts(report) == (2, 1, 5), (size, report)
        assert await stored(db, p) == [(f"{p}u2", "sms", 1, "US"), (f"{p}u3", "sms", 1, "US")]
        assert (await balances(db, t.line)).wallet.available == before - 2 * SMS
        # Sent again: the records charged are duplicates, nothing is charged twice.
        again = await charge(db, settings, rows, size)
        assert (again.accepted, again.duplicates) == (0, 3), (size, again)
        assert [e.line for e in again.errors] == [2, 5, 6, 8, 9], size
        assert (await balances(db, t.line)).wallet.available == before - 2 * SMS
    assert (await balances(db, stock.line)).wallet.available == 0
    await assert_ledger_balanced(db)


async def test_the_api(client: httpx.AsyncClient, db: Database) -> None:
    """The reviewer's requests: records[0] by +MSISDN, records[1] by imsi-… (was a 422-like
    error under `id`); records[2] for a line in stock, records[3] the real record under its
    id (was refused as the id of another record)."""
    t = await make_line(db, money=1000)
    other = await make_line(db, money=1000, catalog=False)
    stock = await make_line(db, state="available", catalog=False)
    headers = await nf_key(db, ("usage:write",))
    import_after_the_usage()

    def record(ext: str, who: TestLine, *, by: str = "supi", **extra: object) -> dict[str, object]:
        subscriber = who.line.msisdn if by == "msisdn" else who.supi
        return {"id": ext, "subscriber": subscriber, "service": "sms", "quantity": 1,
                "started_at": soon(0), **extra}  # fmt: skip

    records = [
        record("a1", t, by="msisdn", country="US"),
        record("a1", t, country=None),
        record("u2", stock),
        record("u2", t),
        record("a1", other),  # a contradiction: line B under line A's id
        record("a1", t, country="US"),
    ]
    r = await client.post("/api/v1/usage", json={"records": records}, headers=headers)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (2, 2, 2), answer
    assert answer["errors"] == [
        {"record": 2, "field": "subscriber",
         "detail": f"{stock.imsi} is not a line in service (in stock or terminated)"},
        {"record": 4, "field": "id", "detail": "a1 is the id of another record, at records[0]"},
    ]  # fmt: skip
    assert (await balances(db, t.line)).wallet.available == 1000 - 2 * SMS
    r = await client.post("/api/v1/usage", json={"records": records}, headers=headers)
    answer = r.json()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (0, 4, 2), answer
    assert (await balances(db, t.line)).wallet.available == 1000 - 2 * SMS
    assert (await balances(db, other.line)).wallet.available == 1000
    await assert_ledger_balanced(db)


# --- the command, on the demo's lines ---------------------------------------------------------

AN_HOUR_AGO = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def at(minutes: int) -> str:
    return (AN_HOUR_AGO + timedelta(minutes=minutes)).isoformat()


def usage_import(path: Path, rows: list[str]) -> Result:
    path.write_text(HEADER + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    return CliRunner().invoke(cli_app, ["usage", "import", str(path)])


@pytest.mark.usefixtures("cli_db")
def test_the_command(tmp_path: Path) -> None:
    assert CliRunner().invoke(cli_app, ["demo"]).exit_code == 0
    path = tmp_path / "usage.csv"
    same = [
        f"b1,+14155550101,voice,65,{at(0)},US",
        f"b1,imsi-310150155550101,voice,65,{at(0)},US",
        f"b2,+14155550101,voice,65,{at(10)},US",
        f"b2,+14155550101,voice,65,{at(10)},",
        f"b3,msisdn-14155550101,sms,1,{at(20)},",
        f"b3,+14155550101,sms,1,{at(20)},US",
    ]
    result = usage_import(path, same)
    assert result.exit_code == 0, result.output
    assert "3 record(s) charged, 3 already charged, 0 rejected" in result.output
    result = usage_import(path, same)
    assert result.exit_code == 0, result.output
    assert "0 record(s) charged, 6 already charged, 0 rejected" in result.output

    refused_first = [
        f"u2,+14155550200,sms,1,{at(30)},",  # a spare number of the demo: in stock
        f"u2,+14155550101,sms,1,{at(30)},",
    ]
    result = usage_import(path, refused_first)
    assert result.exit_code == 2, result.output
    assert "1 record(s) charged, 0 already charged, 1 rejected" in result.output
    assert "line 2: subscriber: +14155550200 is not a line in service" in result.output
    result = usage_import(path, refused_first)
    assert "0 record(s) charged, 1 already charged, 1 rejected" in result.output

    contradiction = [f"c1,+14155550101,sms,1,{at(40)},", f"c1,+14155550102,sms,1,{at(40)},"]
    result = usage_import(path, contradiction)
    assert result.exit_code == 2, result.output
    assert "1 record(s) charged, 0 already charged, 1 rejected" in result.output
    assert "line 3: id: c1 is the id of another record, at line 2" in result.output


async def test_the_rule_does_not_depend_on_where_chunks_end(
    db: Database, settings: Settings
) -> None:
    """Many repeats of a few ids, near and far, by MSISDN or IMSI, with or without a country,
    some for a line in stock: each chunk size gives what charging the records one by one, in
    file order, against what was charged gives (the model below) — the same counts and the same
    lines refused."""
    t = await make_line(db, money=10_000)
    stock = await make_line(db, state="available", catalog=False)
    import_after_the_usage()
    whos = [("t", t.line.msisdn), ("t", t.supi), ("t", t.gpsi), ("stock", stock.supi)]
    variants = [
        (who, country, quantity)
        for who in whos
        for country in ("", "US", "DE")
        for quantity in (1, 2)
    ]
    picks = [(i * 7 + 3) % len(variants) for i in range(60)]
    for size in (1, 2, 3, 50):
        p = f"m{size}-"
        rows, model = [], []
        charged: dict[str, tuple[str, str, int]] = {}
        for n, pick in enumerate(picks):
            (line, who), country, quantity = variants[pick]
            ext = f"{p}x{n % 5}"
            rows.append(f"{ext},{who},sms,{quantity},{soon(0)},{country}")
            found = charged.get(ext)
            if found is not None:
                same = found[0] == line and found[2] == quantity and country in ("", found[1])
                model.append("duplicate" if same else "rejected")
            elif line == "stock":
                model.append("rejected")
            else:
                charged[ext] = (line, country or "US", quantity)
                model.append("accepted")
        report = await charge(db, settings, rows, size)
        assert counts(report) == (
            model.count("accepted"), model.count("duplicate"), model.count("rejected")
        ), size
        assert [e.line for e in report.errors] == [
            n + 2 for n, outcome in enumerate(model) if outcome == "rejected"
        ], size
        assert await stored(db, p) == sorted(
            (ext, "sms", quantity, country) for ext, (_, country, quantity) in charged.items()
        ), size
    await assert_ledger_balanced(db)


async def test_a_record_whose_detail_was_swept_is_still_a_duplicate(
    db: Database, settings: Settings
) -> None:
    """The privacy sweep takes a usage record's detail away after
    `SIMCHARGE_RETENTION_USAGE_DETAIL_DAYS` (no country, the start cut to its UTC day): the
    same file imported again later is counted as duplicates — not refused as "charged before
    for another record" — and another record under one of its ids is still refused."""
    from simcharge.accounts.retention import sweep

    t = await make_line(db, money=1000)
    import_after_the_usage()
    rows = [f"old1,{t.line.msisdn},sms,1,{soon(0)},US", f"old2,{t.supi},sms,1,{soon(5)},"]
    first = await charge(db, settings, rows, 50)
    assert counts(first) == (2, 0, 0), errors(first)
    later = SOON + timedelta(days=settings.retention_usage_detail_days + 30)
    assert (await sweep(db, settings, now=later)).changed["usage_records.detail"] == 2
    async with db.read() as s:
        kept = (await s.execute(select(UsageRecord.zone, UsageRecord.country))).all()
    assert set(kept) == {("", None)}

    clock.freeze(later)
    again = await charge(db, settings, rows, 50)
    assert counts(again) == (0, 2, 0), errors(again)
    other = await charge(db, settings, [f"old1,{t.line.msisdn},sms,2,{soon(0)},US"], 50)
    assert counts(other) == (0, 0, 1)
    assert errors(other) == [(2, "id", "old1 was charged before for another record")]
    assert (await balances(db, t.line)).wallet.available == 1000 - 2 * SMS
    await assert_ledger_balanced(db)
