"""Loading the catalog from TOML and reading it back."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.catalog.models import PaymentMethod, Plan, PlanPrice, Zone
from simcharge.catalog.repository import CatalogRepository
from simcharge.catalog.schemas import (
    CatalogFile,
    FeeView,
    GrantView,
    LimitView,
    PaymentMethodView,
    PlanView,
    ZoneView,
)
from simcharge.catalog.steps import payable_step, round_up_to_step
from simcharge.charging.tariffs import load_tariffs
from simcharge.db import dialect_name
from simcharge.errors import NotFound, SimchargeError, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import pick_text
from simcharge.kit.ids import uuid7
from simcharge.kit.money import percent_of, to_minor
from simcharge.kit.schemas import Money
from simcharge.kit.translations import N_
from simcharge.ledger import chart
from simcharge.ledger.service import NewAccount, ensure_accounts

DEMO_CATALOG = Path(__file__).parent / "demo.toml"
log = structlog.get_logger("simcharge.catalog")


CATALOG_LOCK = int.from_bytes(b"catalog:", "big") & (2**63 - 1)
"""The key of the PostgreSQL advisory lock that a change of the catalog holds until it commits."""


async def lock_catalog(session: AsyncSession) -> None:
    """Take the catalog for this transaction: a change of the catalog (`load_catalog`, the back
    office's edit of one entry, which reads the whole catalog first) waits for another to
    commit, so that neither works from a catalog the other is changing and undoes its change.
    On PostgreSQL an advisory lock held until the transaction ends (taken again in the same
    transaction, it is already held); SQLite lets one writer in at a time anyway (`BEGIN
    IMMEDIATE`)."""
    if dialect_name(session) == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CATALOG_LOCK})


class CatalogInvalid(SimchargeError):
    status = 422
    slug = "catalog-invalid"
    title = N_("The catalog file is not valid.")

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("{source}: {count} problem(s)", source=source, count=len(problems))

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {p}" for p in self.problems)

    def extra(self) -> dict[str, Any]:
        return {"problems": self.problems}


def _describe(data: dict[str, Any], loc: Sequence[int | str]) -> str:
    if len(loc) >= 2 and isinstance(loc[1], int):
        kind, index = str(loc[0]), loc[1]
        entries = data.get(kind) or []
        code = (
            entries[index].get("code")
            if index < len(entries) and isinstance(entries[index], dict)
            else None
        )
        head = f"{kind}[{index}]" + (f" ({code})" if code else "")
        rest = _path(loc[2:])
        return f"{head}: {rest}" if rest else head
    return _path(loc) or "catalog"


def _path(parts: Sequence[int | str]) -> str:
    """`("buckets", 0, "zones")` → `buckets[0].zones`."""
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def parse_catalog(text: str, *, source: str) -> CatalogFile:
    """Validate a catalog; every problem is reported as `<file>: <entry> (<code>): <field>: …`."""
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of thousands of digits
        raise CatalogInvalid(source, [f"not valid TOML: {exc}"]) from exc
    return validate_catalog(data, source=source)


def validate_catalog(data: dict[str, Any], *, source: str) -> CatalogFile:
    """Validate a catalog already read (a file, or the back office's edit of one entry)."""
    try:
        return CatalogFile.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for e in exc.errors():
            msg = str(e["msg"]).removeprefix("Value error, ")
            where = _describe(data, e["loc"])
            if where == "catalog":
                # The whole file's checks (`CatalogFile._references`): each problem names its
                # entry already, one as several.
                problems.extend(msg.split("; "))
            else:
                problems.append(f"{where}: {msg}")
        raise CatalogInvalid(source, problems) from exc


def read_catalog_file(path: Path) -> CatalogFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogInvalid(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise CatalogInvalid(str(path), [f"line {line}: not UTF-8 (save it as UTF-8)"]) from exc
    return parse_catalog(text, source=str(path))


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)


_PLACE_ONLY = frozenset({"sort_order"})
"""Where an entry stands in the file: kept, but not a change of what it sells (its `version`,
which quotes hold to, stays)."""


def _changed(obj: object, values: dict[str, Any]) -> bool:
    return any(getattr(obj, k) != v for k, v in values.items() if k not in _PLACE_ONLY)


async def load_catalog(session: AsyncSession, catalog: CatalogFile) -> LoadReport:
    """Make the database's catalog match the file. Entries missing from the file are retired
    (plans deactivated, methods disabled), never deleted: orders keep referring to them."""
    await lock_catalog(session)
    report = LoadReport()
    repo = CatalogRepository(session)
    now = utcnow()

    zones = {z.code: z for z in await repo.zones()}
    for zf in catalog.zones:
        zone_values: dict[str, Any] = {
            "names": zf.names,
            "countries": zf.countries,
            "is_default": zf.default,
        }
        zone = zones.pop(zf.code, None)
        if zone is None:
            session.add(Zone(code=zf.code, **zone_values))
            report.created.append(f"zone {zf.code}")
        elif _changed(zone, zone_values):
            for k, v in zone_values.items():
                setattr(zone, k, v)
            report.updated.append(f"zone {zf.code}")
        else:
            report.unchanged.append(f"zone {zf.code}")
    for old_zone in zones.values():
        await session.delete(old_zone)
        report.retired.append(f"zone {old_zone.code}")

    system_accounts: list[NewAccount] = await load_tariffs(session, catalog.tariffs, report)

    methods = {m.code: m for m in await repo.methods(enabled_only=False)}
    for position, mf in enumerate(catalog.payment_methods):
        method_values: dict[str, Any] = {
            "provider": mf.provider,
            "names": mf.names,
            "descriptions": mf.descriptions,
            "currencies": mf.currencies,
            "fee_percent_bp": mf.fee_percent_bp,
            "fee_fixed": {c: to_minor(a, c) for c, a in mf.fee_fixed.items()},
            "min_amount": {
                c: to_minor(lim.min, c) for c, lim in mf.limits.items() if lim.min is not None
            },
            "max_amount": {
                c: to_minor(lim.max, c) for c, lim in mf.limits.items() if lim.max is not None
            },
            "enabled": mf.enabled,
            "sort_order": position,
        }
        _upsert(
            session,
            methods.pop(mf.code, None),
            PaymentMethod,
            mf.code,
            method_values,
            now,
            report,
            "method",
        )
        for cur in mf.currencies:
            system_accounts += [chart.clearing(mf.provider, cur), chart.sales(cur), chart.fees(cur)]
    for old_method in methods.values():
        if old_method.enabled:
            old_method.enabled = False
            old_method.version += 1
            report.retired.append(f"method {old_method.code}")

    plans = {p.code: p for p in await repo.plans(active_only=False)}
    prices = await repo.prices_by_plan()
    for i, pf in enumerate(catalog.plans):
        plan_values: dict[str, Any] = {
            "names": pf.names,
            "descriptions": pf.descriptions,
            "wallet_credit": {c: to_minor(a, c) for c, a in pf.wallet_credit.items()},
            "buckets": [b.as_grant() for b in pf.buckets],
            "validity_days": pf.validity_days,
            "methods": pf.methods,
            "active": pf.active,
            "sort_order": i,
        }
        new_prices = {c: to_minor(a, c) for c, a in pf.prices.items()}
        existing = plans.pop(pf.code, None)
        old_prices = prices.get(existing.id, {}) if existing else {}
        plan = _upsert(
            session,
            existing,
            Plan,
            pf.code,
            plan_values,
            now,
            report,
            "plan",
            force_change=existing is not None and old_prices != new_prices,
        )
        if old_prices != new_prices:
            await session.flush()
            await repo.replace_prices(
                plan.id,
                [PlanPrice(plan_id=plan.id, currency=c, amount=a) for c, a in new_prices.items()],
            )
        for cur in new_prices:
            system_accounts += [chart.sales(cur), chart.funding(cur)]
        for cur in plan_values["wallet_credit"]:
            system_accounts.append(chart.funding(cur))
        for grant in plan_values["buckets"]:
            system_accounts.append(chart.issuance(grant["unit"]))
    for old_plan in plans.values():
        if old_plan.active:
            old_plan.active = False
            old_plan.version += 1
            report.retired.append(f"plan {old_plan.code}")
    await ensure_accounts(session, {a.id: a for a in system_accounts}.values())
    await session.flush()
    return report


def _upsert(
    session: AsyncSession,
    existing: Any,
    model: Any,
    code: str,
    values: dict[str, Any],
    now: datetime,
    report: LoadReport,
    label: str,
    *,
    force_change: bool = False,
) -> Any:
    if existing is None:
        obj = model(id=uuid7(), code=code, updated_at=now, **values)
        session.add(obj)
        report.created.append(f"{label} {code}")
        return obj
    if force_change or _changed(existing, values):
        for k, v in values.items():
            setattr(existing, k, v)
        existing.version += 1
        existing.updated_at = now
        report.updated.append(f"{label} {code}")
    else:
        for k in _PLACE_ONLY & values.keys():
            setattr(existing, k, values[k])  # moved in the file: nothing it sells changed
        report.unchanged.append(f"{label} {code}")
    return existing


# ---------------------------------------------------------------------------------------------
# Reading


class MethodUnavailable(ValidationFailed):
    """The method cannot sell the plan (not offered here, not in its currency, …)."""

    slug = "payment-method-unavailable"
    title = N_("This payment method cannot be used for this package.")


class FeeUnusable(MethodUnavailable):
    """A stored fee that no payment can carry (negative, or a total of zero or less): the
    catalog refuses such a fee, so a row holding one was changed by other means. The method
    cannot sell the plan: to the payer, `MethodUnavailable`."""


def fee_for(method: PaymentMethod, price: int, currency: str) -> int:
    """The method's fee on `price`: percent (rounded half up to the minor unit) plus fixed,
    then up to what the method's provider can take (`steps.payable_step`: whole HUF and TWD at
    PayPal, KWD ending in 0 at Stripe…), so that price + fee is a total it accepts. A negative
    fee, or a total of zero or less, is refused (`FeeUnusable`), never quoted."""
    fee = percent_of(price, method.fee_percent_bp) + int(method.fee_fixed.get(currency, 0))
    step = payable_step(method.provider, currency)
    if step > 1:
        fee = round_up_to_step(price + fee, step) - price
    if fee < 0 or price + fee <= 0:
        log.warning(
            "catalog.fee_unusable", method=method.code, currency=currency, price=price, fee=fee
        )
        raise FeeUnusable(field="method")
    return fee


def plan_view(plan: Plan, prices: dict[str, int], language: str) -> PlanView:
    return PlanView(
        id=plan.id,
        code=plan.code,
        version=plan.version,
        name=pick_text(plan.names, language),
        description=pick_text(plan.descriptions, language),
        names=plan.names,
        prices=[Money.of(a, c) for c, a in sorted(prices.items())],
        wallet_credit=[Money.of(int(a), c) for c, a in sorted(plan.wallet_credit.items())],
        grants=[GrantView(**g) for g in plan.buckets],
        validity_days=plan.validity_days,
        methods=list(plan.methods),
    )


def method_view(m: PaymentMethod, language: str) -> PaymentMethodView:
    limits = [
        LimitView(
            currency=c,
            min=Money.of(int(m.min_amount[c]), c) if c in m.min_amount else None,
            max=Money.of(int(m.max_amount[c]), c) if c in m.max_amount else None,
        )
        for c in m.currencies
        if c in m.min_amount or c in m.max_amount
    ]
    return PaymentMethodView(
        code=m.code,
        provider=m.provider,
        name=pick_text(m.names, language),
        description=pick_text(m.descriptions, language) if m.descriptions else "",
        names=m.names,
        currencies=list(m.currencies),
        fee=FeeView(
            percent=str(Decimal(m.fee_percent_bp) / 100),
            fixed=[Money.of(int(a), c) for c, a in sorted(m.fee_fixed.items())],
        ),
        limits=limits,
    )


async def offered_methods(
    session: AsyncSession, served: Callable[[PaymentMethod], bool] | None = None
) -> list[PaymentMethod]:
    """Enabled methods that someone can take payments for (`served`: a provider is configured)."""
    methods = await CatalogRepository(session).methods(enabled_only=True)
    return [m for m in methods if served is None or served(m)]


async def list_plans(
    session: AsyncSession, language: str, served: Callable[[PaymentMethod], bool] | None = None
) -> list[PlanView]:
    """Plans on sale; each lists the offered methods that may sell it: named by the plan (or
    any, when it names none) and taking one of the currencies the plan has a price in."""
    repo = CatalogRepository(session)
    prices = await repo.prices_by_plan()
    offered = await offered_methods(session, served)
    views = []
    for p in await repo.plans(active_only=True):
        priced = prices.get(p.id, {})
        view = plan_view(p, priced, language)
        view.methods = [
            m.code
            for m in offered
            if (not p.methods or m.code in p.methods) and not priced.keys().isdisjoint(m.currencies)
        ]
        views.append(view)
    return views


async def list_methods(
    session: AsyncSession, language: str, served: Callable[[PaymentMethod], bool] | None = None
) -> list[PaymentMethodView]:
    return [method_view(m, language) for m in await offered_methods(session, served)]


async def list_zones(session: AsyncSession, language: str) -> list[ZoneView]:
    return [
        ZoneView(
            code=z.code,
            name=pick_text(z.names, language),
            countries=list(z.countries),
            is_default=z.is_default,
        )
        for z in await CatalogRepository(session).zones()
    ]


async def get_plan(session: AsyncSession, code: str) -> tuple[Plan, dict[str, int]]:
    repo = CatalogRepository(session)
    plan = await repo.plan_by_code(code)
    if plan is None or not plan.active:
        raise NotFound(N_("There is no plan {code}."), field="plan", code=code)
    return plan, await repo.prices_of(plan.id)
