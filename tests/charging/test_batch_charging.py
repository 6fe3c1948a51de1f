"""Batch charging, what it takes from where: the consumption order over many records of one
line in one chunk, the ledger's aggregated transfers against the records' own `taken`, a bucket
that did not exist yet, re-imports (whole and partial, one after the other and at once), the
fixed number of statements per chunk, and the same results on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging import batch
from simcharge.charging.batch import UsageReport, import_usage_records, read_usage_text
from simcharge.charging.models import UsageRecord
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.ids import derived_id
from simcharge.ledger.audit import verify_ledger
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Bucket, Line, LineState
from simcharge.lines.service import (
    NewLine,
    UnitGrant,
    bucket_id,
    credit_wallet,
    grant_units,
    open_line,
)
from tests.charging.helpers import assert_ledger_balanced
from tests.conftest import Backend
from tests.factories import load_demo_catalog

HEADER = "id,subscriber,service,quantity,started_at,country\n"
T = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
"""When the scenarios' buckets are granted (usage is dated after it)."""


def at(days: float, hours: float = 0) -> str:
    return (T + timedelta(days=days, hours=hours)).isoformat()


async def open_test_line(
    s: AsyncSession,
    name: str,
    msisdn: str,
    *,
    money: int = 0,
    grants: Sequence[tuple[UnitGrant, datetime]] = (),
) -> Line:
    """A line whose ids derive from `name` (the same in every database), with money and buckets
    granted at the given times."""
    line = await open_line(
        s,
        NewLine(
            msisdn=msisdn,
            iccid=f"8901{int(msisdn[1:]):015d}",
            currency="USD",
            imsi=f"00101{int(msisdn[-9:]):010d}",
        ),
        line_id=derived_id("test-line", name),
        state=LineState.active,
    )
    if money:
        await credit_wallet(s, line, money, source=f"money:{name}")
    for i, (grant, when) in enumerate(grants):
        await grant_units(s, line, [grant], source=f"grant:{name}:{i}", now=when)
    return line


async def records_by_id(db: Database) -> dict[str, UsageRecord]:
    async with db.read() as s:
        rows = (await s.execute(select(UsageRecord))).scalars().all()
    return {r.external_id: r for r in rows}


async def assert_takes_are_the_transfers(db: Database) -> None:
    """What the usage records say they took from each account is what the ledger's usage
    transfers took from it, chunk by chunk (a chunk's transfers and records share their
    `created_at`); and the stored balances are their transfers (`verify_ledger`)."""
    taken: dict[tuple[str, datetime], int] = defaultdict(int)
    for record in (await records_by_id(db)).values():
        for account, amount in record.taken:
            taken[account, record.created_at] += amount
    async with db.read() as s:
        moved = {
            (str(account), created_at): int(total)
            for account, created_at, total in await s.execute(
                select(
                    LedgerTransfer.debit_account_id,
                    LedgerTransfer.created_at,
                    func.sum(LedgerTransfer.amount),
                )
                .where(LedgerTransfer.code == "usage", LedgerTransfer.reference == "batch")
                .group_by(LedgerTransfer.debit_account_id, LedgerTransfer.created_at)
            )
        }
        books = await verify_ledger(s)
    assert dict(taken) == moved
    assert books.ok, books.violations
    await assert_ledger_balanced(db)


async def test_many_records_of_one_line_in_one_chunk_take_in_the_consumption_order(
    db: Database, settings: Settings
) -> None:
    async def setup(s: AsyncSession) -> Line:
        await load_demo_catalog(s)
        return await open_test_line(
            s,
            "order",
            "+14155550301",
            money=100,
            grants=[
                (UnitGrant("VOICE_S", 100, 10), T),  # A: everywhere, until T + 10 d
                (UnitGrant("VOICE_S", 100, 20, ("europe",)), T),  # B: Europe, until T + 20 d
                (UnitGrant("VOICE_S", 50, 5), T + timedelta(days=2)),  # C: from T + 2 d to + 7 d
            ],
        )

    line = await db.run(setup)
    a, b, c = (bucket_id(f"grant:order:{i}", 0) for i in range(3))
    text = HEADER + "\n".join(
        [  # not in time order: a chunk is charged in time order
            f"r3,msisdn-14155550301,voice,200,{at(3, 3)},",  # home 60/1, 5 c/min
            f"r1,msisdn-14155550301,voice,60,{at(1)},",  # C not granted yet: A
            f"r2,msisdn-14155550301,voice,61,{at(3, 2)},FR",  # 60/60: 120 s, C then A then B
            f"r5,msisdn-14155550301,sms,1,{at(9)},",
            f"r4,msisdn-14155550301,voice,600,{at(8)},DE",  # C expired; B 70, then the wallet
            f"r6,msisdn-14155550301,voice,30,{at(12)},",  # A expired, B is Europe's only
        ]
    )
    report = await import_usage_records(db, settings, read_usage_text(text, "u.csv"))
    assert (report.accepted, report.rejected, report.unbilled_records) == (6, 0, 3)
    found = await records_by_id(db)
    wallet = str(line.wallet_account_id)

    def took(name: str) -> tuple[Any, ...]:
        r = found[name]
        return (r.rated, r.from_buckets, r.from_wallet, r.charge, r.unbilled, r.taken)

    assert took("r1") == (60, 60, 0, 0, 0, [[str(a), 60]])
    assert took("r2") == (120, 120, 0, 0, 0, [[str(c), 50], [str(a), 40], [str(b), 30]])
    # 200 s at 0.05/min = 16.67 → 17 cents.
    assert took("r3") == (200, 0, 200, 17, 0, [[wallet, 17]])
    # 530 s left at 0.20/min = 177 cents, but 83 left: 249 s for 83 cents, 281 s unbilled.
    assert took("r4") == (600, 70, 249, 83, 281, [[str(b), 70], [wallet, 83]])
    assert took("r5") == (1, 0, 0, 0, 1, [])
    assert took("r6") == (60, 0, 0, 0, 60, [])
    async with db.read() as s:
        transfers = (
            await s.execute(select(LedgerTransfer).where(LedgerTransfer.code == "usage"))
        ).scalars()
        # One transfer per account the chunk took from, each the sum of the records' takes.
        assert sorted((str(t.debit_account_id), t.amount) for t in transfers) == sorted(
            [(str(a), 100), (str(b), 100), (str(c), 50), (wallet, 100)]
        )
        fresh = await s.get(Line, line.id)
    assert fresh is not None and fresh.last_activity_at == datetime.fromisoformat(at(12))
    await assert_takes_are_the_transfers(db)


async def test_a_bucket_counts_only_from_when_it_was_granted(
    db: Database, settings: Settings
) -> None:
    async def setup(s: AsyncSession) -> Line:
        await load_demo_catalog(s)
        return await open_test_line(
            s, "later", "+14155550302", money=100, grants=[(UnitGrant("SMS", 5, 30), T)]
        )

    await db.run(setup)
    text = HEADER + (
        f"before,msisdn-14155550302,sms,1,{at(-1)},\n"  # a day before the grant: the wallet
        f"after,msisdn-14155550302,sms,1,{at(1)},\n"
    )
    await import_usage_records(db, settings, read_usage_text(text, "u.csv"))
    found = await records_by_id(db)
    assert (found["before"].from_buckets, found["before"].charge) == (0, 5)
    assert (found["after"].from_buckets, found["after"].charge) == (1, 0)
    await assert_takes_are_the_transfers(db)


def usage_file(subscribers: list[str], count: int, seed: int, first: int = 0) -> str:
    """`count` records over the subscribers, at home and abroad, some beyond what they hold."""
    rng = random.Random(seed)
    rows = []
    for i in range(first, first + count):
        service, quantity = rng.choice(
            [("voice", rng.randint(1, 900)), ("data", rng.randint(1, 5_000_000)), ("sms", 1)]
        )
        country = rng.choice(["", "", "US", "FR", "JP", "MX", "AQ"])
        when = at(rng.uniform(0, 40))
        rows.append(f"m{i:05d},{rng.choice(subscribers)},{service},{quantity},{when},{country}")
    return HEADER + "\n".join(rows) + "\n"


async def lines_with_buckets(s: AsyncSession, count: int) -> list[str]:
    """Lines with buckets of several scopes and ends, little money (some usage goes unbilled);
    their subscribers as records name them (the first line also by its IMSI)."""
    await load_demo_catalog(s)
    lines = [
        await open_test_line(
            s,
            f"l{n}",
            f"+141555{n:05d}",
            money=(300, 0, 5_000)[n % 3],
            grants=[
                (UnitGrant("VOICE_S", 600, 10), T),
                (UnitGrant("VOICE_S", 900, 30, ("europe", "asia")), T + timedelta(days=3)),
                (UnitGrant("DATA_B", 20_000_000, 15), T + timedelta(days=1)),
                (UnitGrant("DATA_B", 10_000_000, None), T + timedelta(days=20)),
                (UnitGrant("SMS", 3, 12, ("home",)), T),
            ],
        )
        for n in range(1, count + 1)
    ]
    return [f"msisdn-{ln.msisdn[1:]}" for ln in lines] + [f"imsi-{lines[0].imsi}"]


async def three_lines(s: AsyncSession) -> list[str]:
    return await lines_with_buckets(s, 3)


async def test_reimports_whole_and_partial_charge_each_record_once(
    db: Database, settings: Settings
) -> None:
    subscribers = await db.run(three_lines)
    whole = usage_file(subscribers, 60, seed=3)
    middle = HEADER + "".join(whole.splitlines(keepends=True)[21:41])
    first = await import_usage_records(db, settings, read_usage_text(middle, "u.csv"))
    assert (first.accepted, first.duplicates) == (20, 0)
    # Chunk 1 is new (so chunk 2 is not looked up first: the database finds its records
    # charged, and it runs again with the lookup); chunk 3 is looked up.
    report = await import_usage_records(
        db, settings, read_usage_text(whole, "u.csv"), chunk_size=20
    )
    assert (report.accepted, report.duplicates, report.rejected) == (40, 20, 0)
    again = await import_usage_records(db, settings, read_usage_text(whole, "u.csv"), chunk_size=7)
    assert (again.accepted, again.duplicates) == (0, 60)
    assert len(await records_by_id(db)) == 60
    await assert_takes_are_the_transfers(db)


@pytest.mark.postgres_only
async def test_the_same_file_imported_twice_at_once(fresh_db: Database, settings: Settings) -> None:
    subscribers = await fresh_db.run(three_lines)
    text = usage_file(subscribers, 300, seed=5)
    reports = await asyncio.gather(
        *(
            import_usage_records(fresh_db, settings, read_usage_text(text, "u.csv"), chunk_size=50)
            for _ in range(2)
        )
    )
    assert sorted(r.accepted for r in reports)[1] > 0
    assert sum(r.accepted for r in reports) == 300
    assert sum(r.duplicates for r in reports) == 300
    assert len(await records_by_id(fresh_db)) == 300
    await assert_takes_are_the_transfers(fresh_db)


@contextmanager
def statements_counted(db: Database, driver: Any) -> Iterator[list[str]]:
    """Every statement sent: through SQLAlchemy, and (PostgreSQL) straight to asyncpg, where
    COPY is the one kind the driver does not report."""
    sent: list[str] = []

    def through_sqlalchemy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    def through_asyncpg(query: Any) -> None:
        sent.append(query.query)

    event.listen(db.engine.sync_engine, "before_cursor_execute", through_sqlalchemy)
    if driver is not None:
        driver.add_query_logger(through_asyncpg)
    try:
        yield sent
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", through_sqlalchemy)
        if driver is not None:
            driver.remove_query_logger(through_asyncpg)


async def test_a_chunk_costs_the_same_statements_however_many_records(
    db: Database, settings: Settings, backend: Backend
) -> None:
    subscribers = await db.run(three_lines)
    driver = None
    if backend.is_postgres:
        async with db.read() as s:
            driver = (await (await s.connection()).get_raw_connection()).driver_connection
    counts = []
    for n, first in ((15, 0), (300, 1000)):
        text = usage_file(subscribers, n, seed=n, first=first)
        with statements_counted(db, driver) as sent:
            report = await import_usage_records(
                db, settings, read_usage_text(text, "u.csv"), chunk_size=1000
            )
            await asyncio.sleep(0)  # asyncpg reports its statements from the event loop
        assert report.accepted == n
        counts.append(len(sent))
    assert counts[0] == counts[1]


async def test_on_postgresql_a_chunk_locks_every_account_in_one_statement(
    db: Database, settings: Settings, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slices of a chunk's lines (or transfers) would lock the second slice's accounts after the
    first's, outside the ledger's one lock order: on PostgreSQL there are none, however many."""
    subscribers = await db.run(three_lines)
    monkeypatch.setattr(batch, "_SLICE", 1)
    pots_calls: list[int] = []
    transfer_calls: list[int] = []
    lock_pots, create_transfers = batch.lock_pots, batch.create_transfers

    async def counted_pots(session: AsyncSession, line_ids: Sequence[Any], **kw: Any) -> Any:
        pots_calls.append(len(line_ids))
        return await lock_pots(session, line_ids, **kw)

    async def counted_transfers(session: AsyncSession, new: Sequence[Any], **kw: Any) -> Any:
        transfer_calls.append(len(new))
        return await create_transfers(session, new, **kw)

    monkeypatch.setattr(batch, "lock_pots", counted_pots)
    monkeypatch.setattr(batch, "create_transfers", counted_transfers)
    report = await import_usage_records(
        db, settings, read_usage_text(usage_file(subscribers, 30, seed=3), "u.csv"),
        chunk_size=1000,
    )  # fmt: skip
    assert report.accepted == 30
    assert sum(pots_calls) == 3 and sum(transfer_calls) >= 3
    if backend.is_postgres:
        assert len(pots_calls) == 1 and len(transfer_calls) == 1
    else:
        assert set(pots_calls) == {1} and set(transfer_calls) == {1}
    await assert_ledger_balanced(db)


async def snapshot(db: Database) -> dict[str, Any]:
    """What an import left, in terms the same in every database (a wallet by its line)."""
    async with db.read() as s:
        wallets = {
            str(w): f"wallet:{m}"
            for w, m in await s.execute(select(Line.wallet_account_id, Line.msisdn))
        }
        name = lambda account: wallets.get(str(account), str(account))  # noqa: E731
        records = sorted(
            (
                r.external_id,
                name(r.line_id),
                r.service,
                r.country,
                r.zone,
                r.quantity,
                r.rated,
                r.from_buckets,
                r.from_wallet,
                r.charge,
                r.currency,
                r.unbilled,
                [[name(a), n] for a, n in r.taken],
                r.started_at,
            )
            for r in (await s.execute(select(UsageRecord))).scalars()
        )
        accounts = sorted(
            (name(a.id), a.unit, a.debits_posted, a.credits_posted, a.debits_pending)
            for a in (await s.execute(select(LedgerAccount))).scalars()
            if a.debits_posted or a.credits_posted
        )
        buckets = sorted(
            (name(b.id), b.unit, b.expires_at, b.created_at)
            for b in (await s.execute(select(Bucket))).scalars()
        )
        activity = sorted(
            (m, at) for m, at in await s.execute(select(Line.msisdn, Line.last_activity_at))
        )
    return {"records": records, "accounts": accounts, "buckets": buckets, "activity": activity}


async def test_sqlite_and_postgresql_charge_alike(
    backend: Backend, settings: Settings, tmp_path: Path
) -> None:
    if not backend.is_postgres:
        pytest.skip("compares the PostgreSQL run with a SQLite database of its own")
    sqlite = Backend("sqlite", "alike", tmp_path)
    await sqlite.prepare()
    results: list[tuple[UsageReport, dict[str, Any]]] = []
    for kind in (sqlite, backend):
        url = await kind.copy("alike" + uuid.uuid4().hex[:8])
        db = Database.from_url(url, pool_size=2)
        try:
            # 100 lines, about 95 in each chunk: PostgreSQL locks and posts for that many at
            # once with arrays.
            subscribers = await db.run(lambda s: lines_with_buckets(s, 100))
            text = usage_file(subscribers, 600, seed=11)
            # Bad rows among the good ones, and one record twice.
            text += f"bad,{subscribers[0]},voice,-3,{at(2)},\n"
            text += f"m00390,{subscribers[1]},sms,1,{at(2)},\n"
            report = await import_usage_records(
                db, settings, read_usage_text(text, "u.csv"), chunk_size=300
            )
            await assert_takes_are_the_transfers(db)
            results.append((report, await snapshot(db)))
        finally:
            await db.dispose()
            await kind.discard(url)
    (on_sqlite, seen_sqlite), (on_postgres, seen_postgres) = results
    assert on_sqlite.accepted == 600 and on_sqlite.unbilled_records > 0
    assert [(e.line, e.field) for e in on_sqlite.errors] == [(602, "quantity"), (603, "id")]
    assert on_sqlite == on_postgres
    assert seen_sqlite == seen_postgres
