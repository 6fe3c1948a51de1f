"""Batch import: files as a real network's mediation delivers them (eighth review round).

What was wrong, per test:

- `test_a_last_line_cut_off_is_not_charged_and_the_complete_file_charges_it`: a CSV file read
  while it was still being written ended in a line cut short (`…,600` cut to `…,6`): that line
  was a valid record and was charged as a 6-second call; importing the complete file later then
  refused the real record as "charged before for another record" — the call was never charged
  right. A last line without a line end is now a bad row (it says the file looks cut off), not
  charged; the complete file charges it.
- `test_a_jsonl_file_with_a_byte_order_mark_loses_no_record`: a UTF-8 byte order mark (as
  Windows tools write it) made the first JSON line "not JSON: Unexpected UTF-8 BOM": its record
  was rejected. Before a quoted CSV header (`<BOM>"id",…`) it made the whole file "missing
  column(s): id". The mark is dropped when the file is opened.
- `test_a_gzip_file_is_read_as_a_stream`: a gzip-compressed file (mediation usually compresses
  what it delivers) was read as text: its header was garbage, the whole file refused. It is
  decompressed as a stream now, told by its first bytes (whatever its name), memory bounded.
- `test_a_gzip_file_cut_off_stops_the_import_cleanly_and_charges_nothing_twice`: (new with the
  gzip support) a compressed file cut off must end the command with one line saying so, not a
  traceback, and leave no half-charged chunk: importing the complete file charges every record
  once.
- `test_rows_of_empty_fields_and_blank_lines_are_not_records`: a spreadsheet's export ends with
  rows of empty fields (`,,,,,`); each was rejected as a record without an id (exit code 2 for a
  good file). They are skipped like blank lines now. A JSON object without any of the fields is
  still a bad record.
- `test_an_empty_file_says_so_and_a_header_only_file_is_no_records`: an empty CSV file was
  reported as "missing column(s): id, subscriber, …"; it now says the file is empty.
- `test_absurd_values`: a call lasting longer than the time since it started (10^12 s) was
  charged — the whole wallet, the rest unbilled; a record dated 1970 (a clock reset in the
  network) was charged from today's wallet; a record of 0 s moved the line's last activity (a
  call of 0 s is no usage: Nchf does not count it either, and it kept an unused line from
  freezing). The first two are bad records now (`quantity`, `started_at`), the third is recorded
  at no charge without being activity. 10^12 bytes of data and a time with an offset are
  charged as they should be.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from simcharge.charging.batch import (
    import_usage_records,
    open_usage_file,
    read_usage_file,
    read_usage_text,
)
from simcharge.charging.models import UsageRecord
from simcharge.cli import app as cli_app
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.lines.models import Line
from tests.charging.helpers import balances, make_line

DEMO_GPSI = "msisdn-14155550101"
"""A line the demo creates (with money)."""
AN_HOUR_AGO = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def at(minutes: int) -> str:
    return (AN_HOUR_AGO + timedelta(minutes=minutes)).isoformat()



def usage_import(path: Path) -> Result:
    return CliRunner().invoke(cli_app, ["usage", "import", str(path)])


def load_demo() -> None:
    """The demo's catalog and lines (from a test, not the async fixture: the command runs its
    own event loop)."""
    assert CliRunner().invoke(cli_app, ["demo"]).exit_code == 0


def test_a_last_line_cut_off_is_not_charged_and_the_complete_file_charges_it(
    cli_db: str, tmp_path: Path
) -> None:
    load_demo()
    path = tmp_path / "usage.csv"
    # The quantity is the last column: a cut in it leaves a valid, shorter, record.
    complete = (
        "id,subscriber,service,started_at,quantity\r\n"
        f"k1,{DEMO_GPSI},sms,{at(0)},1\r\n"
        f"k2,{DEMO_GPSI},voice,{at(1)},600\r\n"
    )
    path.write_text(complete[: complete.index(",600") + 2], encoding="utf-8", newline="")
    result = usage_import(path)
    assert result.exit_code == 2, result.output
    assert "1 record(s) charged, 0 already charged, 1 rejected" in result.output
    assert "line 3: row: the file's last line has no line end: cut off" in result.output

    path.write_text(complete, encoding="utf-8", newline="")
    result = usage_import(path)
    assert result.exit_code == 0, result.output
    assert "1 record(s) charged, 1 already charged, 0 rejected" in result.output


async def test_a_cut_off_last_line_is_reported_in_json_lines_and_a_whole_one_is_charged(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    """JSON lines are self-delimiting: a last object without a line end is whole, and charged;
    one cut off is not JSON, and the error says the file looks cut off."""
    t = await make_line(db, money=100)
    one = {"id": "j1", "subscriber": t.supi, "service": "sms", "quantity": 1, "started_at": at(0)}
    two = {**one, "id": "j2"}
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps(one) + "\n" + json.dumps(two), encoding="utf-8")
    with open_usage_file(path) as f:
        report = await import_usage_records(db, settings, read_usage_file(f, path.name))
    assert (report.accepted, report.rejected) == (2, 0)
    path.write_text(json.dumps({**one, "id": "j3"}) + "\n" + json.dumps(two)[:-3])
    with open_usage_file(path) as f:
        report = await import_usage_records(db, settings, read_usage_file(f, path.name))
    assert (report.accepted, report.rejected) == (1, 1)
    assert report.errors[0].line == 2 and "cut off" in report.errors[0].detail
    assert (await balances(db, t.line)).wallet.available == 100 - 3 * 5


def test_a_jsonl_file_with_a_byte_order_mark_loses_no_record(cli_db: str, tmp_path: Path) -> None:
    load_demo()
    record = {"subscriber": DEMO_GPSI, "service": "sms", "quantity": 1, "started_at": at(0)}
    path = tmp_path / "usage.jsonl"
    lines = [json.dumps({"id": f"b{i}", **record}) for i in range(3)]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    result = usage_import(path)
    assert result.exit_code == 0, result.output
    assert "3 record(s) charged, 0 already charged, 0 rejected" in result.output

    path = tmp_path / "usage.csv"
    path.write_bytes(
        b'\xef\xbb\xbf"id","subscriber","service","quantity","started_at"\r\n'
        + f'"q1","{DEMO_GPSI}","sms","1","{at(1)}"\r\n'.encode()
    )
    result = usage_import(path)
    assert result.exit_code == 0, result.output
    assert "1 record(s) charged, 0 already charged, 0 rejected" in result.output


def _records(prefix: str, count: int) -> str:
    return "".join(f"{prefix}{i},{DEMO_GPSI},sms,1,{at(i % 50)},US\r\n" for i in range(count))


def test_a_gzip_file_is_read_as_a_stream(cli_db: str, tmp_path: Path) -> None:
    load_demo()
    text = "\ufeffid,subscriber,service,quantity,started_at,country\r\n" + _records("z", 5)
    path = tmp_path / "usage.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    result = usage_import(path)
    assert result.exit_code == 0, result.output
    assert "5 record(s) charged, 0 already charged, 0 rejected" in result.output
    # Told by its bytes, not its name; JSON lines too, by the name under `.gz`.
    plain = tmp_path / "usage.csv"
    plain.write_bytes(gzip.compress(text.encode()))
    assert "0 record(s) charged, 5 already charged" in usage_import(plain).output
    rows = tmp_path / "usage.jsonl.gz"
    doc = {"id": "zj", "subscriber": DEMO_GPSI, "service": "sms", "quantity": 1,
           "started_at": at(0)}  # fmt: skip
    rows.write_bytes(gzip.compress((json.dumps(doc) + "\n").encode()))
    assert "1 record(s) charged, 0 already charged" in usage_import(rows).output


def test_a_gzip_file_cut_off_stops_the_import_cleanly_and_charges_nothing_twice(
    cli_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_demo()
    monkeypatch.setenv("SIMCHARGE_USAGE_CHUNK_SIZE", "100")
    get_settings.cache_clear()
    text = "id,subscriber,service,quantity,started_at,country\n" + _records("g", 3000)
    whole = gzip.compress(text.encode(), compresslevel=1)
    path = tmp_path / "usage.csv.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    result = usage_import(path)
    assert result.exit_code == 1, result.output
    assert "the compressed file is cut off or damaged" in result.output
    assert "import the same file again when it is complete" in result.output
    assert "Traceback" not in result.output
    path.write_bytes(whole)
    result = usage_import(path)
    assert result.exit_code == 0, result.output
    charged, already = (int(w) for w in result.output.split()[0:5:3])
    assert charged + already == 3000 and already > 0, result.output


def test_rows_of_empty_fields_and_blank_lines_are_not_records(
    cli_db: str, tmp_path: Path
) -> None:
    load_demo()
    path = tmp_path / "usage.csv"
    path.write_text(
        "id,subscriber,service,quantity,started_at,country\n"
        + _records("e", 2).replace("\r\n", "\n")
        + ",,,,,\n , , ,,,\n\n   \n",
        encoding="utf-8",
    )
    result = usage_import(path)
    assert result.exit_code == 0, result.output
    assert "2 record(s) charged, 0 already charged, 0 rejected" in result.output
    # A row with a field but no id is still a bad record.
    path.write_text(
        "id,subscriber,service,quantity,started_at,country\n,,sms,,,\n", encoding="utf-8"
    )
    result = usage_import(path)
    assert result.exit_code == 2 and "line 2: id: required" in result.output


async def test_a_json_object_without_the_fields_is_a_bad_record(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text('{}\n{"ID": "x", "Subscriber": "+1"}\n', encoding="utf-8")
    with open_usage_file(path) as f:
        report = await import_usage_records(db, settings, read_usage_file(f, path.name))
    assert [(e.line, e.field) for e in report.errors] == [(1, "id"), (2, "id")]


def test_an_empty_file_says_so_and_a_header_only_file_is_no_records(
    cli_db: str, tmp_path: Path
) -> None:
    load_demo()
    path = tmp_path / "usage.csv"
    path.write_bytes(b"")
    result = usage_import(path)
    assert result.exit_code == 2
    assert "line 1: header: the file is empty: no header" in result.output
    path.write_text("id,subscriber,service,quantity,started_at\r\n\r\n", encoding="utf-8")
    result = usage_import(path)
    assert result.exit_code == 0, result.output
    assert "0 record(s) charged, 0 already charged, 0 rejected" in result.output


async def test_absurd_values(db: Database, settings: Settings) -> None:
    t = await make_line(db, money=500)
    india = timezone(timedelta(hours=5, minutes=30))
    in_india = (AN_HOUR_AGO + timedelta(minutes=2)).astimezone(india).isoformat()
    header = "id,subscriber,service,quantity,started_at,country\n"
    text = header + "".join(
        [
            f"long,{t.gpsi},voice,{10**12},{at(0)},\n",  # 31,700 years of a call started at 0
            f"epoch,{t.gpsi},sms,1,1970-01-01T00:00:00Z,\n",
            f"neg,{t.gpsi},voice,-60,{at(1)},\n",
            f"zero,{t.gpsi},voice,0,{at(50)},\n",  # the latest record: not activity
            f"tz,{t.gpsi},sms,1,{in_india},\n",
            f"tb,{t.gpsi},data,{10**12},{at(3)},\n",  # 1 TB: as much as the wallet pays
            f"ok,{t.gpsi},voice,60,{at(1)},\n",
        ]
    )
    report = await import_usage_records(db, settings, read_usage_text(text, "u.csv"))
    assert [(e.line, e.field) for e in report.errors] == [
        (2, "quantity"), (3, "started_at"), (4, "quantity")
    ]  # fmt: skip
    assert "would end after now" in report.errors[0].detail
    assert "1970-01-01T00:00:00+00:00 is before 2000" in report.errors[1].detail
    assert (report.accepted, report.unbilled_records) == (4, 1)
    async with db.read() as s:
        rows = {r.external_id: r for r in (await s.execute(select(UsageRecord))).scalars()}
        line = await s.get(Line, t.line.id)
    assert rows["zero"].charge == 0 and rows["zero"].rated == 0
    assert rows["tz"].started_at.replace(tzinfo=UTC) == AN_HOUR_AGO + timedelta(minutes=2)
    big = rows["tb"]
    assert big.unbilled > 0 and big.charge > 0 and big.quantity == 10**12
    assert rows["ok"].charge == 5 and rows["tz"].charge == 5
    assert (await balances(db, t.line)).wallet.available == 500 - 5 - 5 - big.charge
    # The latest usage is the data at minute 3, not the call of 0 s at minute 50.
    assert line is not None and line.last_activity_at is not None
    assert line.last_activity_at.replace(tzinfo=UTC) == AN_HOUR_AGO + timedelta(minutes=3)
