"""The series of receipt and credit-note numbers (`R2026-000001`, `C2026-000001`), and what the
operator does with them after restoring a backup.

Each series counts gapless per year in `receipt_counters` (`receipt:<year>`,
`credit_note:<year>`: `orders.service._next_number`). A restored database brings its counters
back to the backup's values, while the numbers issued after it were e-mailed to payers and are
in the accounting: the next sale would be given a number another sale already has, a tax error.
`continue_series` moves a series past the last number issued after the backup (found in the
e-mails sent, the accounting export, the providers' settlement reports); `series_status` lists
where each series stands, to compare.

A number's year is the operator's (`SIMCHARGE_OPERATOR_TIMEZONE`, `year_of`): the year of the
date its document prints — the moment it was issued, its number taken (`service._issue`) —
written in that zone (`receipts.document_date`). A receipt issued at 16:30 UTC on 31 December
is numbered `R2027-…` in Manila, `R2026-…` in UTC; the commands' "this year" is the operator's
too."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import Database, insert_if_absent, table_of
from simcharge.kit.moments import day_in
from simcharge.orders.models import Order, ReceiptCounter, Refund

if TYPE_CHECKING:
    from simcharge.backoffice.audit import Actor

LARGEST = 999_999
"""The last number a series prints in its six digits."""


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    """As the command names it: `receipt`, `credit-note`."""
    counter_prefix: str
    """Its rows in `receipt_counters`: `<counter_prefix>:<year>`."""
    letter: str
    """What its numbers start with: `R`, `C`."""

    def counter(self, year: int) -> str:
        return f"{self.counter_prefix}:{year}"

    def number(self, year: int, value: int) -> str:
        return f"{self.letter}{year}-{value:06d}"

    @property
    def column(self) -> Any:
        """Where its numbers are kept: each order's receipt, each refund's credit note."""
        return Order.receipt_number if self.letter == "R" else Refund.credit_note_number


def year_of(when: datetime, zone: str) -> int:
    """The year of the series a receipt or credit note issued for `when` is numbered in: its
    year in the operator's time zone `zone` (`SIMCHARGE_OPERATOR_TIMEZONE`), the zone its
    document's date is written in (`receipts.document_date`) — the number and the date printed
    beside it never disagree on the year."""
    return day_in(when, zone).year


RECEIPTS = Series("receipt", "receipt", "R")
CREDIT_NOTES = Series("credit-note", "credit_note", "C")
SERIES = {s.name: s for s in (RECEIPTS, CREDIT_NOTES)}

_PRINTED = re.compile(r"([A-Za-z])(\d{4})-(\d{1,9})")


class SeriesRefused(Exception):
    """Bad input, or a move that would give a number twice: nothing was changed. `field`: the
    option at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_after(series: Series, text: str, year: int | None, this_year: int) -> tuple[int, int]:
    """`(year, value)` of a number as printed (`R2026-000006`) or plain (`6`, in `year`, else
    `this_year`). Raises `SeriesRefused` for anything else, another series' number, or a year
    that contradicts `year`."""
    text = text.strip()
    printed = _PRINTED.fullmatch(text)
    if printed is not None:
        letter, its_year, digits = printed.group(1).upper(), int(printed.group(2)), printed.group(3)
        if letter != series.letter:
            raise SeriesRefused(
                "--after",
                f"{text} is not a number of the {series.name} series "
                f"(its numbers look like {series.number(this_year, 1)})",
            )
        if year is not None and year != its_year:
            raise SeriesRefused("--year", f"--year {year} contradicts {text}")
        year, value = its_year, int(digits)
    elif text.isascii() and text.isdigit():
        year, value = year if year is not None else this_year, int(text)
    else:
        raise SeriesRefused(
            "--after",
            f"--after takes a {series.name} number as printed "
            f"({series.number(year or this_year, 6)}) or a plain number (6)",
        )
    if not 1 <= value <= LARGEST:
        raise SeriesRefused("--after", f"--after must be between 1 and {LARGEST}")
    if not 2000 <= year <= 9999:
        raise SeriesRefused("--year", "--year must be between 2000 and 9999")
    return year, value


async def highest_stored(s: AsyncSession, series: Series, year: int) -> int:
    """The highest number of `series` in `year` that an order or a refund holds (0: none)."""
    column = series.column
    found = (
        await s.execute(
            select(column)
            .where(column.like(f"{series.letter}{year}-%"))
            .order_by(func.length(column).desc(), column.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return int(found.rsplit("-", 1)[1]) if found else 0


@dataclass(frozen=True, slots=True)
class Continued:
    series: Series
    year: int
    before: int
    """The counter's value before: the last number the database had issued."""
    after: int
    changed: bool

    @property
    def next_number(self) -> str:
        return self.series.number(self.year, self.after + 1)


_counters = table_of(ReceiptCounter)


async def continue_series(
    db: Database, actor: Actor, series: Series, year: int, after: int
) -> Continued:
    """Make `after` the last number issued in `series` for `year`: the next one is `after + 1`.
    Refused (`SeriesRefused`, nothing changed) when the counter is past `after` already (a
    series never goes back) or an order or a refund of the database holds a number above it.
    The counter row is locked as issuing locks it: receipts issued meanwhile wait, and a
    number issued just before is seen. Audited (`receipts.continue`) when it moves."""
    from simcharge.backoffice import audit

    name = series.counter(year)

    async def move(s: AsyncSession) -> Continued:
        await s.execute(insert_if_absent(s, _counters, "name"), {"name": name, "value": 0})
        before = int(
            (
                await s.execute(
                    select(ReceiptCounter.value)
                    .where(ReceiptCounter.name == name)
                    .with_for_update()
                )
            ).scalar_one()
        )
        if after < before:
            raise SeriesRefused(
                "--after",
                f"the {series.name} series of {year} is at {series.number(year, before)} "
                f"already; it never goes back (that would issue "
                f"{series.number(year, after + 1)} twice)",
            )
        used = await highest_stored(s, series, year)
        if after < used:
            raise SeriesRefused(
                "--after",
                f"{series.number(year, used)} is already used in the database; the "
                f"{series.name} series of {year} can continue after it, not before",
            )
        if after == before:
            return Continued(series, year, before, after, changed=False)
        await s.execute(
            update(ReceiptCounter).where(ReceiptCounter.name == name).values(value=after)
        )
        await audit.record(
            s,
            actor,
            "receipts.continue",
            target_type="receipt_counter",
            target_id=name,
            before={"last_number": series.number(year, before) if before else None},
            after={"last_number": series.number(year, after)},
            details={
                "series": series.name,
                "year": year,
                "skipped": after - before,
                "highest_in_database": series.number(year, used) if used else None,
            },
        )
        return Continued(series, year, before, after, changed=True)

    return await db.run(move)


@dataclass(frozen=True, slots=True)
class SeriesState:
    series: Series
    year: int
    last: int
    """The counter: the last number issued (or continued after)."""
    stored: int
    """The highest number an order or refund of this database holds (0: none); below `last`
    when the series was continued past numbers issued before a restore."""


async def series_status(db: Database) -> list[SeriesState]:
    """Every series' counter, by series then year."""
    async with db.read() as s:
        rows = (await s.execute(select(ReceiptCounter.name, ReceiptCounter.value))).all()
        found: list[SeriesState] = []
        for name, value in rows:
            prefix, _, year = str(name).partition(":")
            series = next((x for x in SERIES.values() if x.counter_prefix == prefix), None)
            if series is None or not year.isdigit():
                continue
            stored = await highest_stored(s, series, int(year))
            found.append(SeriesState(series, int(year), int(value), stored))
    order = list(SERIES)
    return sorted(found, key=lambda x: (order.index(x.series.name), x.year))
