"""The benchmark harness itself: what results.json and the table say, and a tiny real run on
PostgreSQL (when `SIMCHARGE_TEST_POSTGRES_URL` is set). Speed is `make bench`'s business: nothing
here asserts a figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from bench.__main__ import baselines_needed
from bench.driver import Measurement
from bench.entries import ENTRIES, ONCE, Entry, OnceEntry, at_least, below
from bench.report import Driven, build_document, render_table
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, RUN_TAG

ROOT = Path(__file__).resolve().parents[1]


def by_name(name: str) -> Entry:
    return next(e for e in ENTRIES if e.name == name)


def once(name: str) -> OnceEntry:
    return next(e for e in ONCE if e.name == name)


def measured(ops_per_s: float, latencies: list[float], errors: int = 0) -> Measurement:
    return Measurement("x", int(ops_per_s * 10), 10.0, latencies, errors)


def assert_issue_shape(document: dict[str, Any]) -> None:
    """The shape the foundation issue fixed (extra keys allowed)."""
    assert set(document["baselines"]) >= {"db_baseline", "http_baseline"}
    for b in document["baselines"].values():
        assert isinstance(b["ops_per_s"], int | float)
    for r in document["results"]:
        assert {"name", "baseline", "ops_per_s", "p50_ms", "p99_ms", "ratio"} <= set(r)
        assert r["baseline"] in document["baselines"]
        assert isinstance(r["ratio"], int | float)


def test_each_entry_carries_the_target_its_issue_set() -> None:
    assert by_name("ledger_transfer").targets == (at_least("ratio", 0.6),)
    assert by_name("topup_fulfil_webhook").targets == (at_least("ratio", 0.35),)
    assert by_name("nchf_update").targets == (at_least("ratio", 0.5),)
    assert by_name("portal_dashboard").targets == (below("p95_ms", 50),)
    assert by_name("portal_dashboard").concurrency == 32
    assert once("cdr_rating").targets == (
        at_least("records_per_s", 20_000),
        below("peak_mb", 300),
    )


def test_both_baselines_are_measured_and_each_at_every_entrys_concurrency() -> None:
    assert baselines_needed([("db_baseline", 16)], 16) == [
        ("db_baseline", 16),
        ("http_baseline", 16),
    ]
    # --only portal_dashboard: http_baseline at 32 as well, and still both at 16.
    assert baselines_needed([("http_baseline", 32)], 16) == [
        ("db_baseline", 16),
        ("http_baseline", 16),
        ("http_baseline", 32),
    ]


def document() -> dict[str, Any]:
    return build_document(
        baselines={
            ("db_baseline", 16): 2000.0,
            ("http_baseline", 16): 1000.0,
            ("http_baseline", 32): 800.0,
        },
        driven=[
            Driven(by_name("ledger_transfer"), 16, measured(1300.0, [10.0] * 90 + [20.0] * 10)),
            Driven(by_name("portal_dashboard"), 32, measured(400.0, [30.0] * 94 + [70.0] * 6)),
            Driven(by_name("nchf_update"), 16, measured(450.0, [5.0] * 100, errors=3)),
        ],
        once=[
            (once("cdr_rating"), {"records": 100_000, "records_per_s": 25_000.0, "peak_mb": 310.5}),
            (once("topup_journey"), {"steps": 4}),
        ],
        concurrency=16,
        settings={"concurrency": 16, "duration_s": 10.0, "warmup_s": 2.0},
    )


def test_results_keep_the_issue_shape_and_compare_at_the_entrys_concurrency() -> None:
    doc = document()
    assert_issue_shape(doc)
    assert doc["baselines"]["db_baseline"] == {
        "ops_per_s": 2000.0, "concurrency": 16, "by_concurrency": {"16": 2000.0}
    }
    assert doc["baselines"]["http_baseline"]["by_concurrency"] == {"16": 1000.0, "32": 800.0}
    ledger, portal, nchf = doc["results"]
    assert (ledger["ratio"], ledger["baseline_ops_per_s"], ledger["concurrency"]) == (
        0.65, 2000.0, 16
    )
    # portal_dashboard runs with 32 workers: compared with http_baseline at 32, not at 16.
    assert (portal["ratio"], portal["baseline_ops_per_s"], portal["concurrency"]) == (
        0.5, 800.0, 32
    )
    assert nchf["ratio"] == 0.45


def test_every_target_and_whether_it_was_met() -> None:
    doc = document()
    ledger, portal, nchf = doc["results"]
    assert ledger["targets"] == [
        {"metric": "ratio", "op": ">=", "value": 0.6, "actual": 0.65, "met": True}
    ]
    assert ledger["meets_target"] is True
    assert portal["p95_ms"] == 70.0
    assert portal["targets"][0]["met"] is False and portal["meets_target"] is False
    # A run with failed calls does not meet its target, whatever its figures.
    assert nchf["errors"] == 3 and nchf["meets_target"] is False
    cdr = doc["once"]["cdr_rating"]
    assert [t["met"] for t in cdr["targets"]] == [True, False]
    assert cdr["meets_target"] is False
    assert doc["once"]["topup_journey"]["meets_target"] is None
    assert doc["all_targets_met"] is False
    table = render_table(doc)
    assert "ledger_transfer" in table and "ratio ≥ 0.6" in table
    assert "http_baseline@32" in table and "p95_ms < 50" in table
    assert "records_per_s ≥ 20000, peak_mb < 300: NO" in table
    assert "targets missed: portal_dashboard, nchf_update, cdr_rating" in table


def test_a_result_without_its_baseline_at_its_concurrency_is_refused() -> None:
    with pytest.raises(ValueError, match="http_baseline not measured at 32"):
        build_document(
            baselines={("db_baseline", 16): 1.0, ("http_baseline", 16): 1.0},
            driven=[Driven(by_name("portal_dashboard"), 32, measured(1.0, [1.0]))],
            once=[],
            concurrency=16,
            settings={},
        )
    with pytest.raises(ValueError, match="http_baseline was not measured"):
        build_document(
            baselines={("db_baseline", 16): 1.0},
            driven=[],
            once=[],
            concurrency=16,
            settings={},
        )


@pytest.mark.skipif(not PG_URL, reason="needs SIMCHARGE_TEST_POSTGRES_URL")
def test_a_tiny_real_run_writes_results_in_the_issue_shape(tmp_path: Path) -> None:
    """`python -m bench --only ledger_transfer` for a fraction of a second, on a bench database
    of its own: both baselines are still written, and the result carries its target."""
    assert PG_URL
    database = f"simcharge_bench_{RUN_TAG}"
    output = tmp_path / "results.json"
    env = {
        **os.environ,
        "SIMCHARGE_BENCH_POSTGRES_URL": PG_URL,
        "SIMCHARGE_BENCH_DATABASE": database,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench", "--duration", "0.3", "--warmup", "0",
             "--concurrency", "4", "--only", "ledger_transfer", "--output", str(output)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )
    finally:
        _drop(database)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(output.read_text(encoding="utf-8"))
    assert_issue_shape(doc)
    [result] = doc["results"]
    assert result["name"] == "ledger_transfer" and result["concurrency"] == 4
    assert result["errors"] == 0 and result["ops_per_s"] > 0
    assert result["targets"][0]["metric"] == "ratio"
    assert doc["baselines"]["http_baseline"]["by_concurrency"].keys() == {"4"}
    assert "ledger_transfer" in done.stdout and "ratio ≥ 0.6" in done.stdout


def _drop(database: str) -> None:
    import asyncio

    async def drop() -> None:
        assert PG_URL
        dsn = make_url(PG_URL).set(drivername="postgresql", database="postgres")
        conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_cdr_rating_usage_is_dated_before_the_import_runs() -> None:
    """The import refuses usage dated ahead of its clock: the bench's million records all start
    in the past (within a month), after the buckets they use were granted."""
    from datetime import UTC, datetime, timedelta

    from bench.charging import CDR_SPACING, cdr_start

    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    start = cdr_start(1_000_000, now)
    assert start + 999_999 * CDR_SPACING < now
    assert now - start < timedelta(days=30)
