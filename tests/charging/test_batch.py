"""Batch (offline) charging: files and the API, idempotent, bad rows reported by line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from simcharge.charging.batch import import_usage_records, read_usage_text
from simcharge.charging.models import UsageRecord
from simcharge.cli import app as cli_app
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant
from simcharge.worker.models import OutboxJob
from tests.charging.helpers import MIB, assert_ledger_balanced, balances, make_line, nf_key
from tests.conftest import Backend

HEADER = "id,subscriber,service,quantity,started_at,country\n"


async def test_csv_rates_buckets_then_wallet_and_reports_bad_rows(
    db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=500, grants=[UnitGrant("VOICE_S", 120, 30)])
    other = await make_line(db, money=0, catalog=False)
    text = HEADER + "\n".join(
        [
            f"c1,{t.gpsi},voice,90,2026-11-25T10:00:00Z,",  # 60/1 at home: 90 s from the bucket
            f"c2,{t.supi},voice,61,2026-11-25T10:05:00+00:00,FR",  # Europe 60/60: 120 s
            f"c3,{t.line.msisdn},sms,1,2026-11-25T10:06:00Z,JP",  # Asia SMS 0.15
            "c4,msisdn-19999999999,data,100,2026-11-25T10:07:00Z,",  # unknown line
            f"c5,{t.supi},fax,1,2026-11-25T10:08:00Z,",  # bad service
            f"c6,{t.supi},data,-1,2026-11-25T10:09:00Z,",  # bad quantity
            f"c7,{t.supi},data,1,yesterday,",  # bad time
            f"c1,{t.supi},data,1,2026-11-25T10:10:00Z,",  # the same id twice
            f"c8,{other.supi},data,{MIB},2026-11-25T10:11:00Z,DE",  # no money: unbilled
            "c9,too,few",
        ]
    )
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
    assert line.last_activity_at.isoformat().startswith("2026-11-25T10:06")
    await assert_ledger_balanced(db)

    again = await import_usage_records(db, settings, read_usage_text(text, "usage.csv"))
    assert again.accepted == 0 and again.duplicates == 4
    assert (await balances(db, t.line)).wallet.available == 455
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
                "started_at": "2026-11-25T10:00:00Z",
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
                "started_at": "2026-11-25T10:01:00Z",
            }
        ),
    ]
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
    assert r.json()["errors"] == [
        {"line": 1, "field": "quantity", "detail": "'x' is not a whole number of units"}
    ]
    r = await client.post("/api/v1/usage", json={"records": records[:1]}, headers=headers)
    assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 1)
    assert (await balances(db, t.line)).wallet.available == 95
    r = await client.post("/api/v1/usage", json={"records": []}, headers=headers)
    assert r.status_code == 422
    r = await client.post("/api/v1/usage", json={"records": records}, headers=await nf_key(db))
    assert r.status_code == 403
    r = await client.post("/api/v1/usage", json={"records": records})
    assert r.status_code == 401


@pytest.fixture
async def cli_db(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = await backend.copy("usagecli")
    monkeypatch.setenv("SIMCHARGE_DATABASE_URL", url)
    monkeypatch.setenv("SIMCHARGE_ENV", "test")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    await backend.discard(url)


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
