"""Reports for finance: top-ups and revenue per day, method and currency; conversion (orders
created → paid); failed payments; lines by lifecycle state; the ledger's trial balance — as
rows, CSV and SVG charts.

Each report is grouped in SQL by the operator's day (`Period.zone`, an IANA time zone, UTC by
default; `_local_day` says it in each database's words), so its memory follows its rows, not the
period's orders. The money reports (top-ups, the trial balance) read the ledger only, by the
times its transfers were posted: a period's figures never change once it is over. Each dated
row says its zone (`time_zone`). A period is at most `MAX_DAYS` long."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from babel.numbers import format_decimal
from markupsafe import Markup, escape
from sqlalchemy import (
    ColumnElement,
    Date,
    Uuid,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from simcharge.config import Settings
from simcharge.db import dialect_name
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import ZONE_NAME as _ZONE_NAME
from simcharge.kit.clock import operator_zone
from simcharge.kit.i18n import BABEL_LOCALES
from simcharge.kit.translations import N_, translate
from simcharge.ledger.audit import trial_balance_sums
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Line
from simcharge.orders.models import CLOSED_UNPAID, Order, Refund
from simcharge.orders.refunds import PROVIDER

MAX_DAYS = 366
UTC_ZONE = ZoneInfo("UTC")


def zone_of(settings: Settings) -> ZoneInfo:
    """The zone the settings name (`SIMCHARGE_OPERATOR_TIMEZONE`, checked at start-up)."""
    return operator_zone(settings.operator_timezone)


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date
    """Inclusive."""
    zone: ZoneInfo = dataclass_field(default=UTC_ZONE)
    """The operator's time zone: `start` and `end` are its days, each from its midnight to the
    next (23 or 25 hours across a change of daylight saving time)."""

    def midnight(self, day: date) -> datetime:
        """The UTC instant the operator's `day` starts."""
        return datetime.combine(day, time(), tzinfo=self.zone).astimezone(UTC)

    @property
    def since(self) -> datetime:
        return self.midnight(self.start)

    @property
    def until(self) -> datetime:
        return self.midnight(self.end + timedelta(days=1))

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def offsets(self) -> list[tuple[datetime, int]]:
        """The zone's UTC offsets over the period, in seconds: (from when, offset), the first
        from `since`. A change (daylight saving time, a new rule) is found to the second between
        two midnights whose offsets differ — at most one change a day, as every zone has."""
        def offset(at: datetime) -> int:
            delta = at.astimezone(self.zone).utcoffset()
            return int(delta.total_seconds()) if delta is not None else 0

        found = [(self.since, offset(self.since))]
        bounds = [self.midnight(d) for d in [*self.days(), self.end + timedelta(days=1)]]
        for before, after in pairwise(bounds):
            if offset(after) == found[-1][1]:
                continue
            # Between the midnight before (the old offset) and this one (the new), to the second.
            low, high = int(before.timestamp()), int(after.timestamp())
            while high - low > 1:
                middle = (low + high) // 2
                if offset(datetime.fromtimestamp(middle, UTC)) == found[-1][1]:
                    low = middle
                else:
                    high = middle
            changed = datetime.fromtimestamp(high, UTC)
            found.append((changed, offset(changed)))
        return found


def period(
    start: str | None, end: str | None, today: date, zone: ZoneInfo = UTC_ZONE
) -> Period:
    try:
        last = date.fromisoformat(end) if end else today
    except ValueError:
        raise ValidationFailed(N_("Use a date like 2026-11-25."), field="to") from None
    if not 2000 <= last.year <= 2999:
        raise ValidationFailed(N_("Use a date like 2026-11-25."), field="to")
    try:
        first = date.fromisoformat(start) if start else last - timedelta(days=29)
    except ValueError:
        raise ValidationFailed(N_("Use a date like 2026-11-25."), field="from") from None
    for field, day in (("from", first), ("to", last)):
        if not 2000 <= day.year <= 2999:
            raise ValidationFailed(N_("Use a date like 2026-11-25."), field=field)
    if first > last:
        raise ValidationFailed(N_("The period ends before it starts."), field="from")
    if (last - first).days >= MAX_DAYS:
        raise ValidationFailed(
            N_("A report covers at most {days} days."), field="from", days=MAX_DAYS
        )
    return Period(first, last, zone)


@dataclass(frozen=True, slots=True)
class TopupRow:
    """One day, method, provider and currency, read from the ledger: what its transfers through
    one of the providers' `clearing` accounts (`clearing:<provider>:<currency>`, and the
    `applied` ones of its orders) moved that day — so a row reconciles with one provider's
    statement, even when a method was re-pointed to another provider. Amounts of different
    currencies are never added up: a row is the currency the transfers were in."""

    day: date
    """The operator's day the ledger posted the transfers (their `created_at`), whatever day
    the provider says the payment or refund happened: a day's figures never change later."""
    method: str
    """The order's payment method (empty for a transfer that names no order)."""
    provider: str
    """The provider whose clearing account the money went through (`stripe`…): the key's middle
    part, the order's `provider` when the order was placed. For `applied`, which does not go
    through clearing, the clearing account its held money was taken into."""
    currency: str
    topups: int
    """Orders credited that day (their `topup` transfer: clearing → `revenue:sales`)."""
    amount: int
    """Money taken for them, minor units: the sale and the fee (`topup` and `fee` transfers)."""
    fees: int
    """The payment fees in it (`fee` transfers: clearing → `revenue:fees`)."""
    uncredited: int
    """Orders whose money was taken that day and not credited (a wrong amount or currency, a
    line that was gone): their `unapplied` transfer (clearing → `unapplied`), held for the payer
    until finance refunds it or puts it on the line's balance — counted here for good, whatever
    happens to it later."""
    uncredited_amount: int
    """What those `unapplied` transfers moved."""
    applied: int
    """Orders whose held money finance put on the line's balance that day (their `applied`
    transfer, `unapplied` → wallet, `orders.refunds.apply_to_wallet`), whichever day it was
    taken."""
    applied_amount: int
    """What those `applied` transfers moved: within the books, not through clearing, so not in
    `net`."""
    refunded: int
    """Refunds whose money left clearing that day (`refund`, `refund_fee`): ours once the
    provider confirmed them, those made at the provider once recorded (or once their payment
    was) — not lost disputes. The sale and the fee given back together, as `amount` holds both."""
    refunded_fees: int
    """The payment fees given back that day (`refund_fee` transfers: `revenue:fees` → clearing),
    by refunds and chargebacks alike: a part of `refunded` + `chargebacks`, as `fees` is of
    `amount`, not a sum beside them. `fees` − `refunded_fees` is the day's fee income (what
    `revenue:fees` kept)."""
    chargebacks: int
    """Disputes lost (and PayPal's reversals), recorded as refunds by the provider: the part
    of their money that was left to refund, out of clearing that day."""
    dispute_losses: int
    """What a lost dispute took beyond what was left to refund (`dispute_loss`: clearing →
    `loss:disputes`), the payer paid twice."""
    net: int
    """`amount` + `uncredited_amount` − `refunded` − `chargebacks` − `dispute_losses`: the
    movement of the provider's clearing account that day (`refunded_fees` is within `refunded`
    and `chargebacks`, so not taken off again)."""
    time_zone: str = "UTC"
    """The zone whose days `day` counts (`SIMCHARGE_OPERATOR_TIMEZONE`)."""


@dataclass(frozen=True, slots=True)
class ConversionRow:
    day: date
    created: int
    paid: int
    rate: float
    time_zone: str = "UTC"


@dataclass(frozen=True, slots=True)
class FailureRow:
    day: date
    method: str
    state: str
    orders: int
    time_zone: str = "UTC"


def _local_day(s: AsyncSession, column: Any, p: Period) -> ColumnElement[date]:
    """The operator's day of a timestamp column within `p`, in SQL, set-based.

    PostgreSQL keeps `timestamptz`: `timezone(zone, t)` is the local time by its own copy of the
    time zone database, whatever the session's time zone (which must not decide the day). The
    zone is written into the statement (a name checked by `operator_zone`), not bound: a bound
    parameter would make the `GROUP BY` expression differ from the selected one.

    SQLite keeps the UTC time as text and knows no time zones: the period's offsets are worked
    out in Python (`Period.offsets`: one, or one more per change of daylight saving time) and the
    statement shifts each timestamp by the offset in force at that instant —
    `CASE WHEN t < <change> THEN date(t, '+28800 seconds') … END`, a couple of branches for a
    year, never a row read into Python."""
    if dialect_name(s) == "postgresql":
        name = p.zone.key
        if not _ZONE_NAME.fullmatch(name):  # pragma: no cover - `operator_zone` checked it
            raise ValueError(f"bad time zone name {name!r}")
        return cast(func.timezone(literal_column(f"'{name}'"), column), Date)

    def shifted(seconds: int) -> Any:
        return func.date(column, literal_column(f"'{seconds:+d} seconds'"))

    offsets = p.offsets()
    if len(offsets) == 1:
        return type_coerce(shifted(offsets[0][1]), Date)
    branches = [
        (column < changed, shifted(seconds))
        for (_, seconds), (changed, _) in pairwise(offsets)
    ]
    return type_coerce(case(*branches, else_=shifted(offsets[-1][1])), Date)


MOVED = ("posted", "post_pending")
"""Transfers that moved money: posted at once, or a reservation's posting. A reservation still
open (a refund asked, not confirmed) is no entry yet; a voided or expired one never was."""
_UUID_TEXT = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def referenced_id(s: AsyncSession, reference: Any, prefix: str) -> ColumnElement[Any]:
    """The id a transfer's `reference` names after `prefix` (`order:<id>`, `order:<id>:dispute`,
    `refund:<id>`), as the database stores ids, to join on in SQL: PostgreSQL's `uuid` (cast
    only when the reference is one: any other reference is NULL, never an error), SQLite's 32
    hex digits. NULL, and so joined to nothing, when the reference names none."""
    text_id = func.substr(reference, len(prefix) + 1, 36)
    if dialect_name(s) == "postgresql":
        pattern: ColumnElement[str] = literal_column(f"'^{prefix}{_UUID_TEXT}'")
        return case((reference.op("~")(pattern), cast(text_id, Uuid())), else_=None)
    return case(
        (reference.like(f"{prefix}%"), func.replace(text_id, "-", "")), else_=None
    )


def _chargeback() -> ColumnElement[bool]:
    """A refund recorded for a lost dispute (`reversals.record_lost_dispute`, its key names the
    dispute) or a reversal the provider settled (PayPal's `PAYMENT.CAPTURE.REVERSED`: its reason
    says so, as `refunds.names_a_reversal` reads it)."""
    return and_(
        Refund.requested_by.startswith(PROVIDER),
        or_(
            Refund.request_key.contains(":dispute:"),
            func.lower(func.coalesce(Refund.reason, "")).contains("reversed"),
        ),
    )


def _provider_of(s: AsyncSession, key: Any) -> ColumnElement[str]:
    """The provider a clearing account's key names (`clearing:<provider>:<CUR>[#shard]`), in
    SQL, to group by. Its words are literals, not bound parameters: PostgreSQL would take two
    bound copies in the select list and the `GROUP BY` for two different expressions."""
    if dialect_name(s) == "postgresql":
        return func.split_part(key, literal_column("':'"), literal_column("2"))
    one: ColumnElement[int] = literal_column("1")
    colon: ColumnElement[str] = literal_column("':'")
    rest = func.substr(key, literal_column(str(len("clearing:") + 1)))
    return func.substr(rest, one, func.instr(rest, colon) - one)


async def topups(s: AsyncSession, p: Period) -> list[TopupRow]:
    """Per operator's day, method, provider and currency, from the ledger alone: the transfers
    through the providers' `clearing` accounts (and the `applied` ones) posted within the
    period, by their own `created_at` and code — never the provider's `paid_at` or an order's
    state today, so a period's figures never change once it is over (the ledger's rows are
    immutable and each is posted at the time it is written). Grouped in SQL: a few rows a day.

    Into clearing (debited): `topup` (a sale: `topups`, `amount`), `fee` (`amount`, `fees`),
    `unapplied` (money taken and not credited: `uncredited`, `uncredited_amount`). Out of it
    (credited): `refund`, `refund_fee` (`refunded`, or `chargebacks` for a lost dispute's or a
    reversal's refund; `refund_fee` also in `refunded_fees`), `dispute_loss`
    (`dispute_losses`). `net` is their difference: the clearing account's movement, to the
    minor unit; a transfer of another code, should one appear, counts in `amount` or `refunded`
    by its side so that `net` stays so. The method is the order's, found by the transfer's
    reference (a refund: its order's); the provider is the clearing account's (for `applied`,
    outside clearing, the order's, whose clearing account took the money)."""
    acc: dict[tuple[date, str, str, str], Counter[str]] = defaultdict(Counter)
    t = LedgerTransfer
    clearing = aliased(LedgerAccount)
    day = _local_day(s, t.created_at, p).label("day")
    provider = _provider_of(s, clearing.key).label("provider")
    in_period = (t.kind.in_(MOVED), t.created_at >= p.since, t.created_at < p.until)
    order_of = referenced_id(s, t.reference, "order:")
    money_in = await s.execute(
        select(day, Order.method_code, provider, t.unit, t.code, func.count(),
               func.sum(t.amount))
        .select_from(t)
        .join(clearing, clearing.id == t.debit_account_id)
        .outerjoin(Order, Order.id == order_of)
        .where(*in_period, clearing.code == "clearing")
        .group_by(day, Order.method_code, provider, t.unit, t.code)
    )  # fmt: skip
    for d, method, by, unit, code, n, amount in money_in:
        row = acc[(d, method or "", by or "", unit)]
        if code == "unapplied":
            row["uncredited"] += int(n)
            row["uncredited_amount"] += int(amount)
            continue
        row["amount"] += int(amount)
        if code == "topup":
            row["topups"] += int(n)
        elif code == "fee":
            row["fees"] += int(amount)
    refund = referenced_id(s, t.reference, "refund:")
    charged_back = case((_chargeback(), t.amount), else_=0)
    money_out = await s.execute(
        select(day, Order.method_code, provider, t.unit, t.code, func.sum(t.amount),
               func.sum(charged_back))
        .select_from(t)
        .join(clearing, clearing.id == t.credit_account_id)
        .outerjoin(Refund, Refund.id == refund)
        .outerjoin(Order, Order.id == func.coalesce(Refund.order_id, order_of))
        .where(*in_period, clearing.code == "clearing")
        .group_by(day, Order.method_code, provider, t.unit, t.code)
    )  # fmt: skip
    for d, method, by, unit, code, amount, chargebacks in money_out:
        row = acc[(d, method or "", by or "", unit)]
        if code == "dispute_loss":
            row["dispute_losses"] += int(amount)
            continue
        row["chargebacks"] += int(chargebacks or 0)
        row["refunded"] += int(amount) - int(chargebacks or 0)
        if code == "refund_fee":
            row["refunded_fees"] += int(amount)
    held = aliased(LedgerAccount)
    applied = await s.execute(
        select(day, Order.method_code, Order.provider, t.unit, func.count(), func.sum(t.amount))
        .select_from(t)
        .join(held, held.id == t.debit_account_id)
        .outerjoin(Order, Order.id == order_of)
        .where(*in_period, t.code == "applied", held.code == "unapplied")
        .group_by(day, Order.method_code, Order.provider, t.unit)
    )
    for d, method, by, unit, n, amount in applied:
        row = acc[(d, method or "", by or "", unit)]
        row["applied"] += int(n)
        row["applied_amount"] += int(amount)
    return [
        TopupRow(
            d,
            m,
            by,
            c,
            topups=a["topups"],
            amount=a["amount"],
            fees=a["fees"],
            uncredited=a["uncredited"],
            uncredited_amount=a["uncredited_amount"],
            applied=a["applied"],
            applied_amount=a["applied_amount"],
            refunded=a["refunded"],
            refunded_fees=a["refunded_fees"],
            chargebacks=a["chargebacks"],
            dispute_losses=a["dispute_losses"],
            net=a["amount"] + a["uncredited_amount"] - a["refunded"] - a["chargebacks"]
            - a["dispute_losses"],
            time_zone=p.zone.key,
        )
        for (d, m, by, c), a in sorted(acc.items())
    ]


TOTAL = "TOTAL"
"""The `method` of a top-ups CSV's totals rows (no method's code: codes are lower case)."""
_COUNTED = ("topups", "amount", "fees", "uncredited", "uncredited_amount", "applied",
            "applied_amount", "refunded", "refunded_fees", "chargebacks", "dispute_losses",
            "net")  # fmt: skip


def topup_totals(rows: Sequence[TopupRow]) -> list[dict[str, Any]]:
    """The period's totals per currency (never across currencies), in the top-ups report's
    columns: `method` is `TOTAL` and `day` and `provider` are empty, so that a reader of the CSV
    can tell them from the days' rows and leave them out of a sum of its own. Each currency's
    `net` is its clearing accounts' movement over the period."""
    sums: dict[str, Counter[str]] = defaultdict(Counter)
    zones: dict[str, str] = {}
    for row in rows:
        sums[row.currency].update({name: getattr(row, name) for name in _COUNTED})
        zones[row.currency] = row.time_zone
    return [
        {"day": "", "method": TOTAL, "provider": "", "currency": currency,
         **{name: total[name] for name in _COUNTED}, "time_zone": zones[currency]}
        for currency, total in sorted(sums.items())
    ]  # fmt: skip


async def conversion(s: AsyncSession, p: Period) -> list[ConversionRow]:
    day = _local_day(s, Order.created_at, p).label("day")
    rows = await s.execute(
        select(day, func.count(), func.count(Order.paid_at))
        .where(Order.created_at >= p.since, Order.created_at < p.until)
        .group_by(day)
    )
    counts = {d: (int(created), int(paid)) for d, created, paid in rows}
    return [
        ConversionRow(
            d, created, paid, round(paid / created, 4) if created else 0.0, p.zone.key
        )
        for d in p.days()
        for created, paid in [counts.get(d, (0, 0))]
    ]


async def failures(s: AsyncSession, p: Period) -> list[FailureRow]:
    day = _local_day(s, Order.created_at, p).label("day")
    rows = await s.execute(
        select(day, Order.method_code, Order.state, func.count())
        .where(
            Order.created_at >= p.since,
            Order.created_at < p.until,
            Order.state.in_([st.value for st in CLOSED_UNPAID]),
        )
        .group_by(day, Order.method_code, Order.state)
    )
    found = [FailureRow(d, m, st, int(n), p.zone.key) for d, m, st, n in rows]
    return sorted(found, key=lambda f: (f.day, f.method, f.state))


async def lines_by_state(s: AsyncSession) -> dict[str, int]:
    rows = await s.execute(select(Line.state, func.count()).group_by(Line.state))
    return {state: int(n) for state, n in sorted(rows.all())}


@dataclass(frozen=True, slots=True)
class TrialBalanceRow:
    """One account of the ledger — an operator account (its shards together) or, with no
    `account`, every line's account of a kind (`wallet`, `bucket`) — in one unit: what was
    posted to it up to the end of the day."""

    unit: str
    """A currency (minor units) or `VOICE_S`, `DATA_B`, `SMS`."""
    code: str
    """What the account is for: `clearing`, `revenue`, `funding`, `issuance`, `wallet`, …"""
    account: str | None
    """The operator account's key (`revenue:sales:USD`), or None for the lines' accounts."""
    debits: int
    credits: int
    balance: int
    """`debits` − `credits`: positive for a debit balance (what a provider owes, in
    `clearing`), negative for a credit balance (revenue, what lines hold)."""
    time_zone: str = "UTC"
    """The zone whose day ends the balance (`SIMCHARGE_OPERATOR_TIMEZONE`)."""


@dataclass(frozen=True, slots=True)
class TrialBalance:
    day: date
    """As of the end of this day (the operator's)."""
    rows: list[TrialBalanceRow]
    units: dict[str, tuple[int, int]]
    """Per unit: (debits, credits) over all its accounts — equal in a sound ledger."""

    @property
    def balanced(self) -> bool:
        return all(debits == credits for debits, credits in self.units.values())


async def trial_balance(s: AsyncSession, p: Period) -> TrialBalance:
    """The ledger's trial balance at the end of `p.end` (the operator's day): per unit and
    account, the movements posted until then (`ledger.audit.trial_balance_sums`, one pass
    grouped in SQL); each unit's debits and credits must be equal."""
    sums = await trial_balance_sums(s, p.until)
    rows = [
        TrialBalanceRow(unit, code, key, debits, credits, debits - credits, p.zone.key)
        for (unit, code, key), (debits, credits) in sorted(
            sums.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
        )
    ]
    units: dict[str, tuple[int, int]] = {}
    for row in rows:
        debits, credits = units.get(row.unit, (0, 0))
        units[row.unit] = (debits + row.debits, credits + row.credits)
    return TrialBalance(p.end, rows, units)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet will not run (OWASP "CSV Injection"): text that
    starts with `=`, `+`, `-`, `@`, a tab or a line break is prefixed with `'`. Numbers stay
    numbers (an int, a float, or text that is only a number: `-12.50`); dates are ISO."""
    if isinstance(value, date):
        return value.isoformat()
    if (
        isinstance(value, str)
        and value.startswith(_FORMULA_START)
        and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def to_csv(rows: Sequence[Any], columns: Sequence[str] | None = None) -> str:
    out = io.StringIO()
    if columns is None:
        if not rows:
            columns = []
        elif isinstance(rows[0], dict):
            columns = list(rows[0])
        else:
            columns = [f.name for f in fields(rows[0])]
    # Rows end in CRLF (RFC 4180): the writer quotes a cell holding either character, so a line
    # break in the data cannot start a row of its own.
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: csv_cell(v)
                for k, v in (asdict(row) if hasattr(row, "__dataclass_fields__") else row).items()
            }
        )
    return out.getvalue()


def bar_chart(
    points: Sequence[tuple[str, float]],
    *,
    title: str,
    value_label: Callable[[float], str] | None = None,
    language: str = "en",
    width: int = 720,
    height: int = 220,
) -> Markup:
    """A bar chart as inline SVG (presentation attributes only: no style, no script). A
    negative value (a day whose refunds exceed its payments) is a bar below the zero line."""
    if value_label is None:  # a count, in the reader's number format

        def value_label(v: float) -> str:
            return format_decimal(v, locale=BABEL_LOCALES.get(language, "en"))

    pad_left, pad_bottom, pad_top = 8, 28, 24
    inner_w, inner_h = width - 2 * pad_left, height - pad_bottom - pad_top
    top = max((v for _, v in points), default=0)
    heading = translate(language, N_("{title} — highest: {value}")).format(
        title=title, value=value_label(top)
    )
    bottom = min((v for _, v in points), default=0)
    span = (max(top, 0) - min(bottom, 0)) or 1
    zero = pad_top + inner_h * max(top, 0) / span
    n = max(len(points), 1)
    slot = inner_w / n
    bar = max(1.0, slot * 0.7)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        # One f-string: `str + Markup` escaped the markup itself (`Markup.__radd__`), and the
        # heading showed as escaped text, not as an element SVG draws.
        f'<text x="{pad_left}" y="16" font-size="13" fill="#1b2733">{escape(heading)}</text>',
        f'<line x1="{pad_left}" y1="{zero:.1f}" x2="{width - pad_left}" '
        f'y2="{zero:.1f}" stroke="#d8dee4"/>',
    ]
    every = max(1, n // 10)
    for i, (label, value) in enumerate(points):
        h = inner_h * abs(value) / span
        x = pad_left + i * slot + (slot - bar) / 2
        y = zero - h if value >= 0 else zero
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
            f'fill="{"#0b6e4f" if value >= 0 else "#b3261e"}">'
            f"<title>{escape(label)}: {escape(value_label(value))}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - 10}" font-size="10" '
                f'text-anchor="middle" fill="#5b6b7a">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it is escaped above


COLUMNS: dict[str, list[str]] = {
    "topups": [f.name for f in fields(TopupRow)],
    "conversion": [f.name for f in fields(ConversionRow)],
    "failures": [f.name for f in fields(FailureRow)],
    "lines": ["state", "lines"],
    "trial-balance": [f.name for f in fields(TrialBalanceRow)],
}


MINOR_COLUMNS: dict[str, frozenset[str]] = {
    "topups": frozenset(
        {
            "amount",
            "fees",
            "uncredited_amount",
            "applied_amount",
            "refunded",
            "refunded_fees",
            "chargebacks",
            "dispute_losses",
            "net",
        }
    ),
    "trial-balance": frozenset({"debits", "credits", "balance"}),
}
"""The columns of a report holding an amount: integers in the smallest unit of the row's
`currency` or `unit` (cents, fen, centavos; `VOICE_S`, `DATA_B`, `SMS` are their own smallest
unit). Their CSV headers say so (`amount_minor`); the JSON keeps the plain names, documented."""


def csv_header(name: str) -> dict[str, str]:
    """A report's columns and the header each has in its CSV."""
    minor = MINOR_COLUMNS.get(name, frozenset())
    return {c: f"{c}_minor" if c in minor else c for c in COLUMNS[name]}


def csv_filename(name: str, p: Period) -> str:
    """A report's CSV file name: its period's days; the trial balance, a balance *as of* the end
    of one day, is named by that day."""
    if name == "trial-balance":
        return f"trial-balance-as-of-{p.end}.csv"
    return f"{name}-{p.start}-{p.end}.csv"


def report_csv(name: str, rows: Sequence[Any], p: Period) -> tuple[str, dict[str, str]]:
    """A report as CSV and its `Content-Disposition` header (the pages and the API alike). The
    top-ups report ends with its totals rows, one per currency (`topup_totals`)."""
    header = csv_header(name)
    if name == "topups":
        rows = [*rows, *topup_totals(rows)]
    renamed = [
        {header[k]: v for k, v in (asdict(r) if hasattr(r, "__dataclass_fields__") else r).items()}
        for r in rows
    ]
    return to_csv(renamed, list(header.values())), {
        "content-disposition": f'attachment; filename="{csv_filename(name, p)}"'
    }


async def report_rows(s: AsyncSession, name: str, p: Period) -> list[Any]:
    if name == "topups":
        return await topups(s, p)
    if name == "conversion":
        return await conversion(s, p)
    if name == "failures":
        return await failures(s, p)
    if name == "lines":
        return [{"state": k, "lines": v} for k, v in (await lines_by_state(s)).items()]
    if name == "trial-balance":
        return (await trial_balance(s, p)).rows
    raise ValidationFailed(N_("Unknown report."), field="name")
