"""Editing the catalog from the back office: one plan, payment method or tariff at a time, in
the catalog file's own form (README, "The catalog file"), validated with the whole catalog
exactly as `simcharge catalog load` validates a file, and stored by the same loader — so a
changed entry gets a new `version`: an order keeps the plan as it was sold (its snapshot), a
usage record the tariff version in force when it was rated (`tariff_versions`).

A tariff's code is `<service>.<zone>.<currency>` (`voice.europe.EUR`): the three fields that
make it one tariff, which an edit cannot change.

Edits are serialised (`catalog.service.lock_catalog`, taken before the catalog is read): two
admins saving two entries at once each keep their change. An entry is shown with its `version`;
an edit that carries one is refused (`catalog-entry-changed`, 409) if the entry is at another
version by then, so that an edit made from an older read does not undo a newer one."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.catalog.models import PaymentMethod, Plan
from simcharge.catalog.repository import CatalogRepository
from simcharge.catalog.schemas import MIB, PER_UNITS
from simcharge.catalog.service import (
    CatalogInvalid,
    LoadReport,
    load_catalog,
    lock_catalog,
    validate_catalog,
)
from simcharge.charging.models import Tariff, TariffVersion
from simcharge.errors import NotFound
from simcharge.kit.money import from_minor
from simcharge.kit.translations import N_

KINDS = {"plans": "plan", "payment_methods": "method", "tariffs": "tariff"}
TARIFF_KEY = ("service", "zone", "currency")


class CatalogEntryNotFound(NotFound):
    slug = "catalog-entry-not-found"
    title = N_("There is no such plan, payment method or tariff.")


class CatalogEntryChanged(CatalogInvalid):
    """The edit names the version it was made from, and the entry has another by now (someone
    saved it meanwhile): nothing is stored. A `CatalogInvalid`, so that the page shows it with
    the edit kept, as it shows any problem."""

    status = 409
    slug = "catalog-entry-changed"
    title = N_("Someone else changed this entry since you read it: nothing was saved.")


def tariff_code(entry: dict[str, Any] | Tariff | TariffVersion) -> str:
    if isinstance(entry, dict):
        return ".".join(str(entry.get(k, "")) for k in TARIFF_KEY)
    return f"{entry.service}.{entry.zone}.{entry.currency}"


def _code_of(kind: str, entry: dict[str, Any]) -> Any:
    return tariff_code(entry) if kind == "tariffs" else entry.get("code")


def _money(amounts: dict[str, Any]) -> dict[str, str]:
    return {c: str(from_minor(int(a), c)) for c, a in amounts.items()}


def _bucket(grant: dict[str, Any]) -> dict[str, Any]:
    unit, amount = grant["unit"], int(grant["amount"])
    out: dict[str, Any]
    if unit == "VOICE_S":
        out = {"minutes": amount // 60}
    elif unit == "DATA_B" and amount % (1024 * MIB) == 0:
        out = {"gigabytes": amount // (1024 * MIB)}
    elif unit == "DATA_B":
        out = {"megabytes": amount // MIB}
    else:
        out = {"sms": amount}
    if grant.get("validity_days"):
        out["validity_days"] = grant["validity_days"]
    if grant.get("zones"):
        out["zones"] = list(grant["zones"])
    return out


def _plan(plan: Plan, prices: dict[str, int]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "code": plan.code,
        "version": plan.version,
        "names": dict(plan.names),
        "descriptions": dict(plan.descriptions),
        "prices": _money(prices),
        "validity_days": plan.validity_days,
        "buckets": [_bucket(b) for b in plan.buckets],
        "methods": list(plan.methods),
        "active": plan.active,
    }
    if plan.wallet_credit:
        entry["wallet_credit"] = _money(plan.wallet_credit)
    return entry


def _method(m: PaymentMethod) -> dict[str, Any]:
    limits: dict[str, dict[str, str]] = {}
    for cur, amount in m.min_amount.items():
        limits.setdefault(cur, {})["min"] = str(from_minor(int(amount), cur))
    for cur, amount in m.max_amount.items():
        limits.setdefault(cur, {})["max"] = str(from_minor(int(amount), cur))
    return {
        "code": m.code,
        "version": m.version,
        "provider": m.provider,
        "currencies": list(m.currencies),
        "names": dict(m.names),
        "descriptions": dict(m.descriptions),
        "fee_percent": str(Decimal(m.fee_percent_bp) / 100),
        "fee_fixed": _money(m.fee_fixed),
        "limits": limits,
        "enabled": m.enabled,
    }


def _tariff(t: Tariff) -> dict[str, Any]:
    """A tariff as the file writes it (increments in seconds or bytes)."""
    per = next(name for name, n in PER_UNITS[t.service].items() if n == t.per_units)
    entry: dict[str, Any] = {
        "service": t.service,
        "zone": t.zone,
        "currency": t.currency,
        "version": t.version,
        "price": str(from_minor(t.price, t.currency)),
        "per": per,
        "minimum": str(from_minor(t.minimum, t.currency)),
    }
    if t.service != "sms":
        suffix = "s" if t.service == "voice" else "B"
        entry["rounding"] = f"{t.first_increment}{suffix}/{t.next_increment}{suffix}"
    return entry


async def export_catalog(s: AsyncSession) -> dict[str, Any]:
    """The catalog as it stands, in the file's form (retired entries included, marked so), each
    plan, method and tariff with its `version` (not a field of the file: `as_file`)."""
    repo = CatalogRepository(s)
    prices = await repo.prices_by_plan()
    return {
        "zones": [
            {
                "code": z.code,
                "names": dict(z.names),
                "countries": list(z.countries),
                "default": z.is_default,
            }
            for z in await repo.zones()
        ],
        "payment_methods": [_method(m) for m in await repo.methods(enabled_only=False)],
        "plans": [_plan(p, prices.get(p.id, {})) for p in await repo.plans(active_only=False)],
        "tariffs": [
            _tariff(t)
            for t in (
                await s.execute(
                    select(Tariff).order_by(Tariff.service, Tariff.zone, Tariff.currency)
                )
            ).scalars()
        ],
    }


def as_file(catalog: dict[str, Any]) -> dict[str, Any]:
    """An exported catalog in the file's form: without the entries' versions."""
    return {
        kind: [{k: v for k, v in e.items() if k != "version"} for e in entries]
        for kind, entries in catalog.items()
    }


def find_entry(catalog: dict[str, Any], kind: str, code: str) -> dict[str, Any] | None:
    if kind not in KINDS:
        raise CatalogEntryNotFound(field="kind")
    return next((e for e in catalog[kind] if _code_of(kind, e) == code), None)


def blank_entry(kind: str, code: str) -> dict[str, Any]:
    """What a new entry starts from: its code (for a tariff, the fields the code names)."""
    if kind == "tariffs":
        return dict(zip(TARIFF_KEY, [*code.split("."), "", ""][:3], strict=True))
    return {"code": code}


async def tariff_versions(s: AsyncSession, code: str) -> list[TariffVersion]:
    """Every version of a tariff, newest first, with when each was in force."""
    service, _, rest = code.partition(".")
    zone, _, currency = rest.partition(".")
    rows = await s.execute(
        select(TariffVersion)
        .where(
            TariffVersion.service == service,
            TariffVersion.zone == zone,
            TariffVersion.currency == currency,
        )
        .order_by(TariffVersion.version.desc())
    )
    return list(rows.scalars())


async def save_entry(
    s: AsyncSession, actor: Actor, kind: str, code: str, text: str
) -> tuple[LoadReport, dict[str, Any]]:
    """Replace (or add, for a new code) one entry with `text` (JSON in the file's form, with the
    `version` it was read at if it has one) and load the catalog; nothing is stored if anything
    in it is invalid, or if the entry is at another version than the one given."""
    if kind not in KINDS:
        raise CatalogEntryNotFound(field="kind")
    source = f"{KINDS[kind]} {code}"
    if "\x00" in text or "\\u0000" in text:
        raise CatalogInvalid(source, ["a text contains a NUL character"])
    try:
        entry = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of thousands of digits
        raise CatalogInvalid(source, [f"not valid JSON: {exc}"]) from exc
    except RecursionError:  # nested deeper than Python's stack allows
        raise CatalogInvalid(source, ["not valid JSON: nested too deeply"]) from None
    if not isinstance(entry, dict):
        raise CatalogInvalid(source, ["an entry is a JSON object"])
    read_at = entry.pop("version", None)
    if read_at is not None and (isinstance(read_at, bool) or not isinstance(read_at, int)):
        raise CatalogInvalid(source, ["version: the version the entry was read at, a number"])
    if kind == "tariffs":
        for k, v in blank_entry(kind, code).items():
            entry.setdefault(k, v)
        if tariff_code(entry) != code:
            raise CatalogInvalid(
                source, ["service, zone, currency: they are the tariff's code and cannot change"]
            )
    else:
        entry.setdefault("code", code)
        if entry["code"] != code:
            raise CatalogInvalid(source, ["code: the code of an entry cannot change"])
    # From here until the commit no other change of the catalog runs: what is read is what the
    # load replaces.
    await lock_catalog(s)
    catalog = await export_catalog(s)
    before = find_entry(catalog, kind, code)
    file = as_file(catalog)
    if before is None:
        file[kind].append(entry)
    else:
        file[kind][catalog[kind].index(before)] = entry
    checked = validate_catalog(file, source=source)
    # A new code has no version to compare (one copied along from another entry is ignored).
    if read_at is not None and before is not None and read_at != before["version"]:
        raise CatalogEntryChanged(
            source,
            [f"version: read at {read_at}, it is at {before['version']} now; read it again"],
        )
    report = await load_catalog(s, checked)
    after = find_entry(await export_catalog(s), kind, code)
    if report.created or report.updated or report.retired:
        await audit.record(
            s,
            actor,
            "catalog.edit",
            target_type=KINDS[kind],
            target_id=code,
            before=before,
            after=after,
            details={
                "created": report.created,
                "updated": report.updated,
                "retired": report.retired,
                "version": await _version(s, kind, code),
            },
        )
    return report, after or {}


async def _version(s: AsyncSession, kind: str, code: str) -> int | None:
    if kind == "tariffs":
        found = await tariff_versions(s, code)
        return found[0].version if found else None
    model: type[Plan] | type[PaymentMethod] = Plan if kind == "plans" else PaymentMethod
    version = await s.execute(select(model.version).where(model.code == code))
    return version.scalar_one_or_none()


def as_text(entry: dict[str, Any] | None) -> str:
    return json.dumps(entry or {}, ensure_ascii=False, indent=2)
