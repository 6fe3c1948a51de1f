"""Loading tariffs with the catalog (`catalog.service.load_catalog` calls `load_tariffs`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.models import UNIT_OF, Service, Tariff, TariffVersion
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import derived_id, uuid7
from simcharge.ledger import chart
from simcharge.ledger.service import NewAccount

if TYPE_CHECKING:
    from simcharge.catalog.schemas import TariffFile


def charging_accounts(currencies: Sequence[str]) -> list[NewAccount]:
    """Every shard of the accounts usage moves to: `consumption:<unit>`, `revenue:usage:<CUR>`."""
    found: list[NewAccount] = []
    for shard in range(chart.SHARDS):
        found += [chart.consumption(unit, shard) for unit in UNIT_OF.values()]
        found += [chart.usage_revenue(cur, shard) for cur in currencies]
    return found


async def load_tariffs(
    session: AsyncSession, tariffs: Sequence[TariffFile], report: Any
) -> list[NewAccount]:
    """Make the tariffs table match the file (a tariff left out is deleted: usage records keep
    what they were charged). A new or changed tariff gets a new `version`, kept with when it was
    in force in `tariff_versions`. Returns the ledger accounts charging needs."""
    existing = {
        (t.service, t.zone, t.currency): t
        for t in (await session.execute(select(Tariff))).scalars()
    }
    current_versions = {
        (v.service, v.zone, v.currency): v
        for v in (
            await session.execute(select(TariffVersion).where(TariffVersion.valid_until.is_(None)))
        ).scalars()
    }
    now = utcnow()

    async def last_version(key: tuple[str, str, str]) -> int:
        found = await session.execute(
            select(func.max(TariffVersion.version)).where(
                TariffVersion.service == key[0],
                TariffVersion.zone == key[1],
                TariffVersion.currency == key[2],
            )
        )
        return int(found.scalar_one() or 0)

    def close(key: tuple[str, str, str]) -> None:
        if (previous := current_versions.get(key)) is not None:
            previous.valid_until = now

    for tf in tariffs:
        values = tf.as_row()
        key = (tf.service, tf.zone, tf.currency)
        label = f"tariff {tf.service}/{tf.zone}/{tf.currency}"
        current = existing.pop(key, None)
        if current is None:
            # A tariff removed earlier and added again continues its numbering.
            version = await last_version(key) + 1
            session.add(
                Tariff(id=derived_id("tariff", *key), updated_at=now, version=version, **values)
            )
            report.created.append(label)
        elif any(getattr(current, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(current, k, v)
            current.updated_at = now
            current.version += 1
            version = current.version
            report.updated.append(label)
        else:
            report.unchanged.append(label)
            continue
        close(key)
        session.add(
            TariffVersion(id=uuid7(), version=version, valid_from=now, valid_until=None, **values)
        )
    for gone in existing.values():
        close((gone.service, gone.zone, gone.currency))
        await session.delete(gone)
        report.retired.append(f"tariff {gone.service}/{gone.zone}/{gone.currency}")
    assert {s.value for s in Service} >= {t.service for t in tariffs}
    return charging_accounts(sorted({t.currency for t in tariffs}))
