"""Opening lines, putting money and units on them, and reading what they hold."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.errors import Conflict, FieldError, NotFound, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.money import is_currency
from simcharge.kit.phone import InvalidPhoneNumber, normalize_e164
from simcharge.kit.translations import N_
from simcharge.ledger import chart
from simcharge.ledger.service import NewAccount, NewTransfer, ensure_accounts, post_transfers
from simcharge.lines.identifiers import valid_activation_code, valid_iccid, valid_imsi
from simcharge.lines.models import Line, LineFacts, LineState
from simcharge.lines.repository import LineRepository
from simcharge.lines.schemas import BucketView, LineBalances, UnitBalance, WalletView


class LineNotInService(Conflict):
    """What the line is asked cannot be done in its state (in stock, frozen, terminated): a
    top-up, transfer, reservation or adjustment (TMF654, the portal, the back office)."""

    slug = "line-not-in-service"
    title = N_("The line cannot do this in its current state.")



@dataclass(frozen=True, slots=True)
class NewLine:
    msisdn: str
    iccid: str
    currency: str
    imsi: str | None = None
    activation_code: str | None = None


@dataclass(frozen=True, slots=True)
class UnitGrant:
    """Units to put on a line: `amount` of `unit`, usable in `zones` (empty: all) until expiry."""

    unit: str
    amount: int
    validity_days: int | None
    zones: tuple[str, ...] = ()


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[FieldError] = field(default_factory=list)


INVENTORY_COLUMNS = ("msisdn", "iccid", "activation_code", "imsi", "currency")


def parse_inventory_csv(
    text: str, *, default_currency: str
) -> tuple[list[NewLine], list[FieldError]]:
    """Read the operator's SIM inventory. Columns: msisdn, iccid, activation_code[, imsi][, currency].

    Errors name the CSV line (`line 7: iccid`) and never stop the parsing of other rows."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("msisdn", "iccid") if c not in header]
    if missing:
        return [], [
            FieldError("header", "missing column(s): {columns}", {"columns": ", ".join(missing)})
        ]
    unknown = [h for h in header if h not in INVENTORY_COLUMNS]
    if unknown:
        return [], [
            FieldError("header", "unknown column(s): {columns}", {"columns": ", ".join(unknown)})
        ]
    reader.fieldnames = header
    lines: list[NewLine] = []
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for row in reader:
        n = reader.line_num

        def err(column: str, detail: str, n: int = n, **params: object) -> None:
            errors.append(FieldError(f"line {n}: {column}", detail, dict(params)))

        values = {k: (v or "").strip() for k, v in row.items() if k}
        if not any(values.values()):
            continue
        try:
            msisdn = normalize_e164(values.get("msisdn", ""))
        except InvalidPhoneNumber:
            err("msisdn", "{value} is not a valid international number", value=values.get("msisdn"))
            continue
        iccid = values.get("iccid", "").replace(" ", "")
        imsi = values.get("imsi") or None
        code = values.get("activation_code") or None
        currency = (values.get("currency") or default_currency).upper()
        ok = True
        if not valid_iccid(iccid):
            err(
                "iccid",
                "{value} is not a valid ICCID (89…, 19–22 digits, Luhn check digit)",
                value=iccid,
            )
            ok = False
        if imsi is not None and not valid_imsi(imsi):
            err("imsi", "{value} is not a valid IMSI (14–15 digits)", value=imsi)
            ok = False
        if code is not None and not valid_activation_code(code):
            err(
                "activation_code",
                "not an LPA activation code (LPA:1$<SM-DP+>$<matching id>, at most 255 characters)",
            )
            ok = False
        if not is_currency(currency):
            err("currency", "{value} is not an ISO 4217 currency", value=currency)
            ok = False
        for key in (msisdn, iccid, imsi):
            if key and key in seen:
                err(
                    "msisdn" if key == msisdn else "iccid" if key == iccid else "imsi",
                    "{value} already appears on line {other}",
                    value=key,
                    other=seen[key],
                )
                ok = False
        for key in (msisdn, iccid, imsi):
            if key:
                seen.setdefault(key, n)
        if ok:
            lines.append(NewLine(msisdn, iccid, currency, imsi, code))
    return lines, errors


async def open_line(
    session: AsyncSession,
    new: NewLine,
    *,
    account_id: uuid.UUID | None = None,
    line_id: uuid.UUID | None = None,
    state: LineState = LineState.available,
) -> Line:
    """Create a line and its wallet (a ledger account that may never go below zero)."""
    line_id = line_id or uuid7()
    wallet = NewAccount(
        unit=new.currency, code="wallet", line_id=line_id, debits_must_not_exceed_credits=True
    )
    await ensure_accounts(session, [wallet])
    line = Line(
        id=line_id,
        msisdn=new.msisdn,
        iccid=new.iccid,
        imsi=new.imsi,
        activation_code=new.activation_code,
        currency=new.currency,
        account_id=account_id,
        attached_at=utcnow() if account_id is not None else None,
        wallet_account_id=wallet.id,
        state=state.value,
    )
    session.add(line)
    await session.flush()
    return line


async def import_lines(session: AsyncSession, new_lines: Sequence[NewLine]) -> ImportReport:
    """Add inventory lines. A line already present with the same identifiers is left alone;
    one that clashes with another line's identifiers is an error, and then nothing is added."""
    report = ImportReport()
    repo = LineRepository(session)
    found = await repo.existing_identifiers(
        {n.msisdn for n in new_lines},
        {n.iccid for n in new_lines},
        {n.imsi for n in new_lines if n.imsi},
    )
    by_msisdn = {line.msisdn: line for line in found}
    by_iccid = {line.iccid: line for line in found}
    by_imsi = {line.imsi: line for line in found if line.imsi}
    to_create: list[NewLine] = []
    for new in new_lines:
        same = by_msisdn.get(new.msisdn)
        if same is not None and same.iccid == new.iccid and same.imsi == new.imsi:
            report.unchanged.append(new.msisdn)
            continue
        for name, index, key in (
            ("msisdn", by_msisdn, new.msisdn),
            ("iccid", by_iccid, new.iccid),
            ("imsi", by_imsi, new.imsi),
        ):
            if key and key in index:
                report.errors.append(
                    FieldError(
                        f"{new.msisdn}: {name}",
                        "{value} belongs to line {other}",
                        {"value": key, "other": index[key].msisdn},
                    )
                )
        to_create.append(new)
    if report.errors:
        return report
    for new in to_create:
        await open_line(session, new)
        report.created.append(new.msisdn)
    return report


async def get_line(session: AsyncSession, line_id: uuid.UUID, *, lock: bool = False) -> Line:
    line = await LineRepository(session).get(line_id, lock=lock)
    if line is None:
        raise NotFound(N_("No line with id {line_id}."), field="line_id", line_id=str(line_id))
    return line


async def find_line_by_msisdn(session: AsyncSession, raw: str) -> Line:
    try:
        msisdn = normalize_e164(raw)
    except InvalidPhoneNumber as exc:
        raise ValidationFailed(
            N_("{value} is not a valid phone number."), field="msisdn", value=raw
        ) from exc
    line = await LineRepository(session).by_msisdn(msisdn)
    if line is None:
        raise NotFound(N_("{msisdn} is not one of our lines."), field="msisdn", msisdn=msisdn)
    return line


def bucket_id(source: str, index: int) -> uuid.UUID:
    return derived_id("bucket", source, index)


async def open_buckets(
    session: AsyncSession,
    line: Line,
    grants: Sequence[UnitGrant],
    *,
    source: str,
    now: datetime,
    also: Sequence[NewAccount] = (),
    shard: int = 0,
) -> list[NewTransfer]:
    """Open the buckets of `grants` on a line (accounts and rows) and return the transfers that
    fill them from the issuance accounts — for the caller to post, with others, last in its
    transaction (issuance accounts are hot rows). Ids derive from `source`: idempotent.
    `also`: other accounts to make sure of, in the same statement; `shard`: of the issuance
    accounts (`ledger.chart`)."""
    accounts: list[NewAccount] = list(also)
    transfers: list[NewTransfer] = []
    rows: list[dict[str, Any]] = []
    for i, g in enumerate(grants):
        bid = bucket_id(source, i)
        issuance = chart.issuance(g.unit, shard)
        accounts += [
            issuance,
            NewAccount(
                unit=g.unit,
                code="bucket",
                id=bid,
                line_id=line.id,
                debits_must_not_exceed_credits=True,
            ),
        ]
        transfers.append(
            NewTransfer(
                id=derived_id("grant", source, i),
                amount=g.amount,
                unit=g.unit,
                debit_account_id=issuance.id,
                credit_account_id=bid,
                code="grant",
                reference=source,
            )
        )
        rows.append(
            {
                "id": bid,
                "line_id": line.id,
                "unit": g.unit,
                "initial_amount": g.amount,
                "zones": list(g.zones),
                "expires_at": now + timedelta(days=g.validity_days) if g.validity_days else None,
                "source": source,
                "created_at": now,
            }
        )
    if accounts:
        await ensure_accounts(session, accounts)
    if rows:
        await LineRepository(session).insert_buckets_if_absent(rows)
    return transfers


async def grant_units(
    session: AsyncSession,
    line: Line,
    grants: Sequence[UnitGrant],
    *,
    source: str,
    now: datetime | None = None,
) -> list[uuid.UUID]:
    """Put units on a line as new buckets, issued from the operator's issuance accounts.

    Bucket and transfer ids derive from `source`, so granting the same source twice is a no-op."""
    transfers = await open_buckets(session, line, grants, source=source, now=now or utcnow())
    if transfers:
        await post_transfers(session, transfers, now=now)
    return [bucket_id(source, i) for i in range(len(grants))]


def wallet_credit(
    line: Line,
    amount: int,
    *,
    source: str,
    code: str = "grant",
    from_account: NewAccount | None = None,
) -> tuple[NewAccount, NewTransfer]:
    """The transfer that puts `amount` in a line's wallet (from `funding:<CUR>` unless said
    otherwise), and the account it comes from; idempotent per `source`."""
    origin = from_account or chart.funding(line.currency)
    return origin, NewTransfer(
        id=derived_id("wallet", source),
        amount=amount,
        unit=line.currency,
        debit_account_id=origin.id,
        credit_account_id=line.wallet_account_id,
        code=code,
        reference=source,
    )


async def credit_wallet(
    session: AsyncSession,
    line: Line,
    amount: int,
    *,
    source: str,
    code: str = "grant",
    from_account: NewAccount | None = None,
) -> None:
    """Put money in a line's wallet (from `funding:<CUR>` unless said otherwise); idempotent
    per `source`."""
    origin, transfer = wallet_credit(
        line, amount, source=source, code=code, from_account=from_account
    )
    await ensure_accounts(session, [origin])
    await post_transfers(session, [transfer])


async def line_balances(
    session: AsyncSession, line: Line, *, now: datetime | None = None
) -> LineBalances:
    """Money and, per unit, what is left in buckets that have not expired, soonest expiry first."""
    wallet, rows = await LineRepository(session).wallet_and_buckets(line)
    return _balances(line, wallet, rows, now or utcnow())


@dataclass(frozen=True, slots=True)
class Holdings:
    """The balances of several lines, and which line each of their ledger accounts (wallet,
    every bucket, expired or not) belongs to."""

    balances: dict[uuid.UUID, LineBalances]
    accounts: dict[uuid.UUID, uuid.UUID]


def holdings_from(lines: Sequence[LineFacts], rows: Sequence[Any], now: datetime) -> Holdings:
    """`line_balances` of several lines (a customer's page shows them all), from the rows of
    `repository.HOLDINGS_OF_ACCOUNT` read by the caller."""
    wallets: dict[uuid.UUID, Any] = {}
    held: dict[uuid.UUID, list[Any]] = {line.id: [] for line in lines}
    accounts: dict[uuid.UUID, uuid.UUID] = {}
    for row in rows:
        if row.line_id not in held:  # a line that was not read (added since)
            continue
        accounts[row.id] = row.line_id
        if row.bucket_id is not None:
            held[row.line_id].append(row)
        else:
            wallets[row.id] = row
    balances = {}
    for line in lines:
        ordered = sorted(
            held[line.id],
            key=lambda r: (r.unit, r.expires_at is None, r.expires_at or now, r.created_at),
        )
        balances[line.id] = _balances(line, wallets[line.wallet_account_id], ordered, now)
    return Holdings(balances, accounts)


def _balances(line: LineFacts, wallet: Any, rows: Sequence[Any], now: datetime) -> LineBalances:
    units: dict[str, UnitBalance] = {}
    for row in rows:
        if row.expires_at is not None and row.expires_at <= now:
            continue
        remaining = row.credits_posted - row.debits_posted - row.debits_pending
        if remaining <= 0 and row.debits_pending == 0:
            continue
        unit = units.setdefault(
            row.unit, UnitBalance(unit=row.unit, remaining=0, reserved=0, buckets=[])
        )
        unit.remaining += remaining
        unit.reserved += row.debits_pending
        unit.buckets.append(
            BucketView(
                id=row.id,
                unit=row.unit,
                initial=row.initial_amount,
                remaining=remaining,
                reserved=row.debits_pending,
                zones=list(row.zones or []),
                expires_at=row.expires_at,
                source=row.source,
            )
        )
    for unit in units.values():
        expiries = [b.expires_at for b in unit.buckets if b.expires_at is not None]
        unit.next_expiry = min(expiries) if expiries else None
    return LineBalances(
        line_id=line.id,
        msisdn=line.msisdn,
        state=LineState(line.state),
        validity_end=line.validity_end,
        wallet=WalletView(
            currency=line.currency,
            available=wallet.credits_posted - wallet.debits_posted - wallet.debits_pending,
            reserved=wallet.debits_pending,
        ),
        units=sorted(units.values(), key=lambda u: u.unit),
    )
