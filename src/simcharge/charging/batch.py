"""Batch (offline) charging: usage records from a file or the API, rated and charged set-based.

Records are read as a stream and taken a chunk at a time (`SIMCHARGE_USAGE_CHUNK_SIZE`); each
chunk is one transaction with a handful of bulk statements whatever its size: the records
already charged (by id), the lines, the lines' balances (locked), then one ledger batch with
one posted transfer per bucket or wallet touched (the chunk's takings summed), the usage
records (COPY on PostgreSQL) and the lines' last activity. A bad record is reported with its
line number and left out; the others go on. A record id charged before is a duplicate and
is not charged again, so a file can be imported twice.

Usage that happened cannot be refused: what no bucket or wallet could pay is kept on the
record as `unbilled` (a bounded account is never overdrawn).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from pydantic import BaseModel, Field
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging import alerts
from simcharge.charging.consumption import LinePots, Pot, lock_pots, take
from simcharge.charging.models import UNIT_OF, Service, UsageRecord
from simcharge.charging.rating import RatingTable, load_rating_table
from simcharge.config import Settings
from simcharge.db import Database, RetryableError, dialect_name, table_of
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.phone import country_of
from simcharge.ledger import chart
from simcharge.ledger.repository import driver_in_transaction
from simcharge.ledger.service import NewTransfer, create_transfers
from simcharge.lines.models import Line

usage_table = table_of(UsageRecord)
lines_table = table_of(Line)

COLUMNS = ("id", "subscriber", "service", "quantity", "started_at", "country")
MAX_API_RECORDS = 10_000
_SLICE = 5000
_SERVICES = {s.value for s in Service}
_UNITS = {s.value: u for s, u in UNIT_OF.items()}


class UsageError(BaseModel):
    line: int = Field(description="Line of the file (1 = header), or index in `records`")
    field: str
    detail: str


class UsageReport(BaseModel):
    accepted: int = 0
    """Records rated and charged now."""
    duplicates: int = 0
    """Records charged before (same id): not charged again."""
    rejected: int = 0
    errors: list[UsageError] = []
    unbilled_records: int = 0
    """Accepted records of which some usage could not be paid (kept as `unbilled`)."""


class UsageBatch(BaseModel):
    records: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_API_RECORDS,
        description="Each: id, subscriber (msisdn-…, imsi-… or +E.164), service (voice, data, "
        "sms), quantity (seconds, bytes, messages), started_at (ISO 8601), country (ISO 3166, "
        "optional: the line's home country).",
    )

    def records_as_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return iter(enumerate(self.records))


@dataclass(slots=True)
class Parsed:
    line: int
    external_id: str
    by: str
    """`msisdn` or `imsi`."""
    subscriber: str
    service: str
    quantity: int
    started_at: datetime
    country: str | None
    id: uuid.UUID


@dataclass
class _Errors:
    items: list[UsageError] = field(default_factory=list)

    def add(self, line: int, name: str, detail: str) -> None:
        self.items.append(UsageError(line=line, field=name, detail=detail))


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ("" if value is None else str(value))


def parse_record(line: int, row: dict[str, Any], errors: _Errors) -> Parsed | None:
    ext = _text(row.get("id"))
    if not ext or len(ext) > 128:
        errors.add(line, "id", "required, at most 128 characters")
        return None
    raw = _text(row.get("subscriber"))
    if raw.startswith("msisdn-") and raw[7:].isdigit():
        by, subscriber = "msisdn", "+" + raw[7:]
    elif raw.startswith("+") and raw[1:].isdigit():
        by, subscriber = "msisdn", raw
    elif raw.startswith("imsi-") and raw[5:].isdigit():
        by, subscriber = "imsi", raw[5:]
    else:
        errors.add(
            line, "subscriber", f"{raw!r} is not msisdn-<digits>, +<digits> or imsi-<digits>"
        )
        return None
    service = _text(row.get("service")).lower()
    if service not in _SERVICES:
        errors.add(line, "service", f"{service!r} is not voice, data or sms")
        return None
    quantity_text = _text(row.get("quantity"))
    if not quantity_text.isdigit() or len(quantity_text) > 18:
        errors.add(line, "quantity", f"{quantity_text!r} is not a whole number of units")
        return None
    when = row.get("started_at")
    try:
        started_at = when if isinstance(when, datetime) else datetime.fromisoformat(_text(when))
    except ValueError:
        errors.add(line, "started_at", f"{_text(when)!r} is not an ISO 8601 time")
        return None
    if started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=UTC)
    country = _text(row.get("country")).upper() or None
    if country is not None and (len(country) != 2 or not country.isalpha()):
        errors.add(line, "country", f"{country!r} is not an ISO 3166 alpha-2 code")
        return None
    return Parsed(
        line,
        ext,
        by,
        subscriber,
        service,
        int(quantity_text),
        started_at.astimezone(UTC),
        country,
        derived_id("usage", "batch", ext),
    )


# --- reading files ----------------------------------------------------------------------------


def read_csv(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a CSV file with a header naming (at least) the columns of `COLUMNS` but
    `country`; yields (file line number, row). A bad header yields one row that says so."""
    reader = csv.reader(stream)
    header = [h.strip().lower().lstrip("\ufeff") for h in next(reader, [])]
    missing = [c for c in COLUMNS[:-1] if c not in header]
    if missing:
        yield 1, {"__header__": f"missing column(s): {', '.join(missing)}"}
        return
    index = [(name, header.index(name)) for name in COLUMNS if name in header]
    width = len(header)
    for values in reader:
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if len(values) != width:
            yield reader.line_num, {"__row__": f"{len(values)} fields, the header has {width}"}
            continue
        yield reader.line_num, {name: values[i] for name, i in index}


def read_jsonl(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            yield n, {"__row__": f"not JSON: {exc.msg}"}
            continue
        yield n, row if isinstance(row, dict) else {"__row__": "not a JSON object"}


def read_usage_file(stream: IO[str], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return read_jsonl(stream)
    return read_csv(stream)


# --- rating a chunk ---------------------------------------------------------------------------


@dataclass
class _Line:
    id: uuid.UUID
    msisdn: str
    currency: str
    account_id: uuid.UUID | None
    last_activity_at: datetime | None
    home: str | None = None
    latest: datetime | None = None


async def _existing_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    found: set[uuid.UUID] = set()
    for i in range(0, len(ids), _SLICE):
        part = ids[i : i + _SLICE]
        rows = await session.execute(select(usage_table.c.id).where(usage_table.c.id.in_(part)))
        found.update(rows.scalars())
    return found


async def _lines(
    session: AsyncSession, msisdns: set[str], imsis: set[str]
) -> tuple[dict[str, _Line], dict[str, _Line]]:
    by_msisdn: dict[str, _Line] = {}
    by_imsi: dict[str, _Line] = {}
    cols = (
        lines_table.c.id,
        lines_table.c.msisdn,
        lines_table.c.imsi,
        lines_table.c.currency,
        lines_table.c.account_id,
        lines_table.c.last_activity_at,
    )
    for column, keys in (
        (lines_table.c.msisdn, sorted(msisdns)),
        (lines_table.c.imsi, sorted(imsis)),
    ):
        for i in range(0, len(keys), _SLICE):
            for r in await session.execute(select(*cols).where(column.in_(keys[i : i + _SLICE]))):
                line = _Line(r.id, r.msisdn, r.currency, r.account_id, r.last_activity_at)
                by_msisdn[r.msisdn] = line
                if r.imsi:
                    by_imsi[r.imsi] = line
    return by_msisdn, by_imsi


async def _insert_records(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    names = [c.name for c in usage_table.columns]
    if dialect_name(session) == "postgresql":
        driver = await driver_in_transaction(session)
        if driver is not None:
            await driver.copy_records_to_table("usage_records", records=rows, columns=names)
            return
    await session.execute(usage_table.insert(), [dict(zip(names, r, strict=True)) for r in rows])


async def rate_chunk(
    session: AsyncSession,
    settings: Settings,
    table: RatingTable,
    parsed: list[Parsed],
    errors: _Errors,
    report: UsageReport,
) -> None:
    """Rate and charge one chunk in the caller's transaction."""
    now = utcnow()
    existing = await _existing_ids(session, [p.id for p in parsed])
    fresh = [p for p in parsed if p.id not in existing]
    duplicates = len(parsed) - len(fresh)
    by_msisdn, by_imsi = await _lines(
        session,
        {p.subscriber for p in fresh if p.by == "msisdn"},
        {p.subscriber for p in fresh if p.by == "imsi"},
    )
    pots: dict[uuid.UUID, LinePots] = {}
    line_ids = sorted({ln.id for ln in (*by_msisdn.values(), *by_imsi.values())})
    for i in range(0, len(line_ids), _SLICE):
        pots.update(await lock_pots(session, line_ids[i : i + _SLICE]))
    before = alerts.snapshot(p for lp in pots.values() for p in (lp.wallet, *lp.buckets))
    debits: dict[uuid.UUID, tuple[Pot, int, uuid.UUID]] = {}
    rows: list[tuple[Any, ...]] = []
    touched: dict[uuid.UUID, _Line] = {}
    accepted = unbilled_records = 0
    fresh.sort(key=lambda p: p.started_at)
    for p in fresh:
        line = (by_msisdn if p.by == "msisdn" else by_imsi).get(p.subscriber)
        if line is None or line.id not in pots:
            errors.add(p.line, "subscriber", f"{p.subscriber} is not one of our lines")
            continue
        country = p.country
        if country is None:
            if line.home is None:
                line.home = country_of(line.msisdn) or ""
            country = line.home or None
        zone = table.zone_of(country)
        rate = table.rate(p.service, zone, line.currency) if zone else None
        if rate is None:
            errors.add(
                p.line,
                "service",
                f"no tariff for {p.service} in zone {zone} in {line.currency} (rating failed)",
            )
            continue
        unit = _UNITS[p.service]
        rated = rate.rated(p.quantity)
        taking = take(pots[line.id], rate, unit, rated, p.started_at)
        shard = chart.shard_of(line.id)
        taken: list[list[Any]] = []
        for pot, n in taking.from_buckets:
            prev = debits.get(pot.account_id)
            debits[pot.account_id] = (
                pot,
                (prev[1] if prev else 0) + n,
                chart.consumption(unit, shard).id,
            )
            pot.posted_balance -= n
            taken.append([str(pot.account_id), n])
        if taking.wallet_money:
            wallet = pots[line.id].wallet
            prev = debits.get(wallet.account_id)
            debits[wallet.account_id] = (
                wallet,
                (prev[1] if prev else 0) + taking.wallet_money,
                chart.usage_revenue(line.currency, shard).id,
            )
            wallet.posted_balance -= taking.wallet_money
            taken.append([str(wallet.account_id), taking.wallet_money])
        if taking.short:
            unbilled_records += 1
        rows.append(
            (
                p.id,
                "batch",
                p.external_id,
                line.id,
                p.service,
                country,
                zone,
                p.quantity,
                rated,
                taking.bucket_units,
                taking.wallet_units,
                taking.wallet_money,
                line.currency,
                taking.short,
                json.dumps(taken),
                None,
                p.started_at,
                now,
            )
        )
        accepted += 1
        if line.latest is None or p.started_at > line.latest:
            line.latest = p.started_at
        touched[line.id] = line
    transfers = [
        NewTransfer(
            id=uuid7(),
            amount=amount,
            unit=pot.unit,
            debit_account_id=pot.account_id,
            credit_account_id=counterparty,
            code="usage",
            reference="batch",
        )
        for pot, amount, counterparty in debits.values()
        if amount > 0
    ]
    for i in range(0, len(transfers), _SLICE):
        outcomes = await create_transfers(session, transfers[i : i + _SLICE], now=now)
        refused = [o for o in outcomes if not o.ok]
        if refused:
            raise RuntimeError(f"the ledger refused a usage transfer: {refused[0].result.value}")
    if rows:
        if dialect_name(session) != "postgresql":
            rows = [(*r[:14], json.loads(r[14]), *r[15:]) for r in rows]
        await _insert_records(session, rows)
    active = [
        {"b_id": ln.id, "b_at": ln.latest}
        for ln in touched.values()
        if ln.latest is not None
        and (ln.last_activity_at is None or ln.latest > ln.last_activity_at)
    ]
    if active:
        await session.execute(
            update(lines_table)
            .where(lines_table.c.id == bindparam("b_id"))
            .values(last_activity_at=bindparam("b_at")),
            active,
        )
    jobs = []
    for ln in touched.values():
        lp = pots[ln.id]
        contact = alerts.LineContact(ln.id, ln.account_id, ln.msisdn, ln.currency)
        jobs += alerts.alerts_for(
            contact, [lp.wallet, *lp.buckets], before, low_balance=settings.charging_low_balance
        )
    await alerts.send_alerts(session, jobs)
    report.accepted += accepted
    report.duplicates += duplicates
    report.unbilled_records += unbilled_records


def _chunks(
    rows: Iterable[tuple[int, dict[str, Any]]], size: int, errors: _Errors
) -> Iterator[list[Parsed]]:
    chunk: list[Parsed] = []
    seen: dict[uuid.UUID, int] = {}
    for line, row in rows:
        if "__header__" in row:
            errors.add(line, "header", str(row["__header__"]))
            continue
        if "__row__" in row:
            errors.add(line, "row", str(row["__row__"]))
            continue
        p = parse_record(line, row, errors)
        if p is None:
            continue
        if p.id in seen:
            errors.add(line, "id", f"{p.external_id} already appears on line {seen[p.id]}")
            continue
        seen[p.id] = line
        if len(seen) > 4 * size:
            seen.clear()  # bounded memory; a later repeat is found as a duplicate instead
        chunk.append(p)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def import_usage_records(
    db: Database,
    settings: Settings,
    rows: Iterable[tuple[int, dict[str, Any]]],
    *,
    chunk_size: int | None = None,
) -> UsageReport:
    """Rate and charge usage records, a chunk per transaction. Returns what happened."""
    report = UsageReport()
    errors = _Errors()
    async with db.read() as s:
        table = await load_rating_table(s)
    for chunk in _chunks(rows, chunk_size or settings.usage_chunk_size, errors):
        mark = len(errors.items)
        counts = (report.accepted, report.duplicates, report.unbilled_records)

        async def run(
            session: AsyncSession,
            chunk: list[Parsed] = chunk,
            mark: int = mark,
            counts: tuple[int, int, int] = counts,
        ) -> None:
            # A retried chunk starts again from what was known before it.
            del errors.items[mark:]
            report.accepted, report.duplicates, report.unbilled_records = counts
            try:
                await rate_chunk(session, settings, table, chunk, errors, report)
            except IntegrityError as exc:
                # Another import charged some of these records meanwhile: look again.
                raise RetryableError("usage records inserted concurrently") from exc

        await db.run(run)
    report.errors = sorted(errors.items, key=lambda e: e.line)
    report.rejected = len({e.line for e in report.errors})
    return report


def read_usage_text(text: str, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    return read_usage_file(io.StringIO(text), name)
