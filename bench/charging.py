"""Charging's bench entries.

`nchf_update`: one Nchf_ConvergedCharging update — used units posted against the quota's
reservation, the rest released, the next quota reserved — POSTed to simcharge served by
uvicorn, 16 concurrent sessions on different lines (baseline `http_baseline`).

`cdr_rating`: `simcharge usage import` of 1,000,000 usage records (CSV) on PostgreSQL, run once
as its own process; reports records per second, the process's peak memory (targets:
≥ 20,000 records/s, < 300 MB) and the CPU time per record of the import and of its PostgreSQL
backends. `BENCH_CDR_RECORDS=100000` imports fewer, for quick iterations.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from bench.driver import Operation
from simcharge.auth.apikeys import create_api_key
from simcharge.catalog.service import DEMO_CATALOG, load_catalog, read_catalog_file
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import NewLine, UnitGrant, credit_wallet, grant_units, open_line

if TYPE_CHECKING:
    from bench.entries import BenchContext

MIB = 1024 * 1024
SESSIONS = 64
CDR_RECORDS = int(os.environ.get("BENCH_CDR_RECORDS", "1000000"))
CDR_LINES = 1000
SECRET = "bench-secret-key-bench-secret-key-bench-secret-key"  # noqa: S105 - the bench's own


async def _lines(
    s: AsyncSession, count: int, prefix: str, *, units: bool, granted_at: datetime | None = None
) -> list[Line]:
    """`count` active lines with money and (if `units`) large buckets, granted at `granted_at`
    (default: now)."""
    lines = []
    for i in range(count):
        line = await open_line(
            s,
            NewLine(
                msisdn=f"+1{prefix}555{i:04d}",
                iccid=f"8901{prefix}{i:011d}",
                currency="USD",
                imsi=f"00101{prefix}{i:07d}",
            ),
            state=LineState.active,
        )
        await credit_wallet(s, line, 100_000_00, source=f"bench:{line.id}")
        if units:
            await grant_units(
                s,
                line,
                [
                    UnitGrant("DATA_B", 2**40, 365),
                    UnitGrant("VOICE_S", 10**7, 365),
                    UnitGrant("SMS", 10**6, 365),
                ],
                source=f"bench-grant:{line.id}",
                now=granted_at,
            )
        lines.append(line)
    return lines


async def _seed_nchf(s: AsyncSession) -> tuple[str, list[Line]]:
    await load_catalog(s, read_catalog_file(DEMO_CATALOG))
    lines = await _lines(s, SESSIONS, "202", units=True)
    issued = await create_api_key(s, "bench-smf", ["charging"])
    return issued.token, lines


def _doc(supi: str, seq: int, units: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName": str(uuid.uuid4())},
            "invocationTimeStamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "invocationSequenceNumber": seq,
            "subscriberIdentifier": supi,
            "multipleUnitUsage": units,
        }
    ).encode()


@dataclass
class _Session:
    ref: str
    supi: str
    seq: int = 0


def server_env(ctx: BenchContext) -> dict[str, str]:
    return {
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_DATABASE_URL": ctx.sqlalchemy_url(),
        "SIMCHARGE_DB_POOL_SIZE": str(ctx.concurrency),
        "SIMCHARGE_WORKER_IN_PROCESS": "false",
        "SIMCHARGE_LOG_LEVEL": "warning",
        "SIMCHARGE_SECRET_KEY": SECRET,
        "SIMCHARGE_CHARGING_RATING_CACHE_SECONDS": "60",
        "SIMCHARGE_CHARGING_API_KEY_CACHE_SECONDS": "60",
    }


async def nchf_update(ctx: BenchContext) -> Operation:
    token, lines = await ctx.database().run(_seed_nchf)
    base = await ctx.serve("simcharge.app:serve_app", factory=True, env=server_env(ctx))
    client = ctx.client(base)
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    pool: asyncio.Queue[_Session] = asyncio.Queue()
    for line in lines:
        supi = f"imsi-{line.imsi}"
        units = [{"ratingGroup": 200, "requestedUnit": {"totalVolume": MIB}}]
        r = await client.post(
            "/nchf-convergedcharging/v3/chargingdata", content=_doc(supi, 0, units), headers=headers
        )
        if r.status_code != 201:
            raise RuntimeError(f"create answered {r.status_code}: {r.text[:200]}")
        pool.put_nowait(_Session(r.headers["location"].rsplit("/", 1)[-1], supi))

    async def op(_rng: random.Random) -> None:
        s = await pool.get()
        try:
            s.seq += 1
            units = [
                {
                    "ratingGroup": 200,
                    "requestedUnit": {"totalVolume": MIB},
                    "usedUnitContainer": [{"localSequenceNumber": s.seq, "totalVolume": MIB}],
                }
            ]
            r = await client.post(
                f"/nchf-convergedcharging/v3/chargingdata/{s.ref}/update",
                content=_doc(s.supi, s.seq, units),
                headers=headers,
            )
            if r.status_code != 200 or "grantedUnit" not in r.text:
                raise RuntimeError(f"update answered {r.status_code}: {r.text[:200]}")
        finally:
            pool.put_nowait(s)

    return op


# --- cdr_rating ---------------------------------------------------------------------------------


CDR_SPACING = timedelta(seconds=2)
"""Between one record's start and the next's."""


def cdr_start(count: int, now: datetime) -> datetime:
    """When the first of `count` records starts: the last one starts an hour before `now` (an
    import refuses usage dated ahead of its clock)."""
    return (now - count * CDR_SPACING - timedelta(hours=1)).replace(microsecond=0)


async def _seed_cdr(s: AsyncSession, start: datetime) -> list[str]:
    """The lines, their buckets granted a minute before the first record (a bucket counts from
    when it was granted)."""
    await load_catalog(s, read_catalog_file(DEMO_CATALOG))
    lines = await _lines(s, CDR_LINES, "303", units=True, granted_at=start - timedelta(minutes=1))
    return [line.msisdn for line in lines]


def write_cdrs(
    path: Path, msisdns: list[str], count: int, start: datetime, seed: int = 7
) -> None:
    """`count` records over the lines from `start` on, one every 2 s: voice, data and SMS, at
    home and abroad."""
    rng = random.Random(seed)
    countries = ["", "", "US", "FR", "DE", "JP", "MX", "BR", "ZA"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "subscriber", "service", "quantity", "started_at", "country"])
        for i in range(count):
            kind = rng.random()
            if kind < 0.45:
                service, quantity = "voice", rng.randint(1, 1800)
            elif kind < 0.9:
                service, quantity = "data", rng.randint(1, 50 * MIB)
            else:
                service, quantity = "sms", 1
            when = start + i * CDR_SPACING
            w.writerow(
                [
                    f"cdr-{i:08d}",
                    "msisdn-" + rng.choice(msisdns)[1:],
                    service,
                    quantity,
                    when.isoformat(),
                    rng.choice(countries),
                ]
            )


CDR_TARGET_RECORDS_PER_S = 20_000
CDR_TARGET_PEAK_MB = 300


def _backends_cpu(database: str) -> dict[int, float]:
    """CPU seconds so far of the local PostgreSQL backends serving `database` (by process title;
    nothing when the server is elsewhere or its processes cannot be read)."""
    found: dict[int, float] = {}
    marker = f" {database} ".encode()
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes()
            if not title.startswith(b"postgres:") or marker not in title:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(proc.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


async def _watch_backends(database: str, seen: dict[int, float]) -> None:
    """Keep `seen` up to date (pid → CPU seconds) until cancelled: a backend's figures vanish
    with it when the import disconnects."""
    while True:
        seen.update(_backends_cpu(database))
        await asyncio.sleep(0.25)


async def cdr_rating(ctx: BenchContext) -> dict[str, Any]:
    start = cdr_start(CDR_RECORDS, datetime.now(UTC))
    msisdns = await ctx.database().run(lambda s: _seed_cdr(s, start))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "usage.csv"
        write_cdrs(path, msisdns, CDR_RECORDS, start)
        script = Path(sys.executable).with_name("simcharge")
        env = {**os.environ, **server_env(ctx)}
        database = make_url(ctx.sqlalchemy_url()).database or ""
        before = _backends_cpu(database)
        seen: dict[int, float] = {}
        watcher = asyncio.create_task(_watch_backends(database, seen))
        began = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/time",
            "-f",
            "peak_kb=%M cpu_s=%U+%S",
            str(script),
            "usage",
            "import",
            str(path),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        seconds = time.perf_counter() - began
        watcher.cancel()
    text = out.decode() + err.decode()
    figures = next((line for line in text.splitlines() if line.startswith("peak_kb=")), "")
    fields = dict(part.split("=", 1) for part in figures.split())
    peak_kb = int(fields.get("peak_kb", 0))
    cpu_s = sum(float(x) for x in fields.get("cpu_s", "0").split("+"))
    db_cpu_s = sum(cpu - before.get(pid, 0.0) for pid, cpu in seen.items())
    if proc.returncode != 0 or f"{CDR_RECORDS} record(s) charged" not in text:
        raise RuntimeError(f"import failed ({proc.returncode}): {text[-500:]}")
    records_per_s = CDR_RECORDS / seconds
    peak_mb = peak_kb / 1024
    return {
        "records": CDR_RECORDS,
        "seconds": round(seconds, 1),
        "records_per_s": round(records_per_s, 1),
        "peak_mb": round(peak_mb, 1),
        # On a shared machine the import gets a fraction of a core: what it costs per record in
        # CPU time — its own, and (when the server is local) PostgreSQL's — says what free
        # cores would do.
        "cpu_s": round(cpu_s, 1),
        "cpu_us_per_record": round(cpu_s * 1e6 / CDR_RECORDS, 1),
        "db_cpu_s": round(db_cpu_s, 1),
        "db_cpu_us_per_record": round(db_cpu_s * 1e6 / CDR_RECORDS, 1),
        "target_records_per_s": CDR_TARGET_RECORDS_PER_S,
        "target_peak_mb": CDR_TARGET_PEAK_MB,
        "meets_target": records_per_s >= CDR_TARGET_RECORDS_PER_S
        and peak_mb < CDR_TARGET_PEAK_MB,
    }
