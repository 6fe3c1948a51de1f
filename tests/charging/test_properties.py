"""Property tests of real-time charging, on both databases, through the service functions.

For random lines (money, buckets with scopes) and random sessions (requests, used units below,
at or beyond what was granted, a release at the end), after every request:
- no usage record took more than the quota granted before it (the rest is `unbilled`);
- per unit, every account's debits equal every account's credits, posted and pending: the
  totals are conserved; no bounded account is overdrawn;
and after the release no reservation is left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from simcharge.charging.models import UsageRecord
from simcharge.charging.nchf import create_charging_data, update_charging_data
from simcharge.charging.rating import load_rating_table
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.service import UnitGrant
from tests.charging.helpers import (
    MIB,
    assert_ledger_balanced,
    body,
    make_line,
    open_reservations,
)

SERVICES = {"voice": (100, "time", "VOICE_S"), "data": (200, "totalVolume", "DATA_B")}
PLACES = {None: "home", "208": "europe", "515": "asia", "999": "world"}


@dataclass(frozen=True)
class Step:
    used_fraction: float
    request: int | None


steps = st.lists(
    st.builds(
        Step,
        used_fraction=st.sampled_from([0.0, 0.3, 0.5, 1.0, 1.0, 1.2, 2.0]),
        request=st.one_of(st.none(), st.integers(1, 900), st.integers(1, 3 * MIB)),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    service=st.sampled_from(sorted(SERVICES)),
    mcc=st.sampled_from(sorted(PLACES, key=str)),
    money=st.sampled_from([0, 7, 100, 1000]),
    bucket=st.sampled_from([0, 59, 600, 2 * MIB]),
    bucket_zone=st.sampled_from([(), ("europe",), ("asia",)]),
    first=st.integers(1, 900),
    plan=steps,
)
async def test_sessions_never_take_more_than_granted_and_leave_nothing_reserved(
    connection: AsyncConnection,
    settings: Settings,
    service: str,
    mcc: str | None,
    money: int,
    bucket: int,
    bucket_zone: tuple[str, ...],
    first: int,
    plan: list[Step],
) -> None:
    group, field, unit = SERVICES[service]
    savepoint = await connection.begin_nested()
    try:
        db = Database.bound_to(connection)
        grants = [UnitGrant(unit, bucket, 30, bucket_zone)] if bucket else []
        t = await make_line(db, money=money, grants=grants)
        async with db.read() as s:
            table = await load_rating_table(s)
        rate = table.rate(service, PLACES[mcc], "USD")
        assert rate is not None
        extra: dict[str, Any] = {}
        if mcc:
            extra = {"nFPLMNID": {"mcc": mcc, "mnc": "01"}}

        def request(seq: int, used: int | None, wanted: int | None) -> bytes:
            entry: dict[str, Any] = {"ratingGroup": group}
            if wanted is not None:
                entry["requestedUnit"] = {field: wanted}
            if used is not None:
                entry["usedUnitContainer"] = [{"localSequenceNumber": 1, field: used}]
            doc = body(t.supi, seq, [entry])
            doc["nfConsumerIdentification"].update(extra)
            return json.dumps(doc).encode()

        def granted_of(answer: Any) -> int:
            infos = answer.body["multipleUnitInformation"]
            return int(infos[0].get("grantedUnit", {}).get(field, 0))

        async def call(
            seq: int,
            used: int | None,
            wanted: int | None,
            *,
            release: bool = False,
            ref: str | None = None,
        ) -> Any:
            payload = request(seq, used, wanted)

            async def run(s: AsyncSession) -> Any:
                if ref is None:
                    return await create_charging_data(
                        s, settings, table, client="prop", body=payload
                    )
                return await update_charging_data(
                    s, settings, table, client="prop", ref=ref, body=payload, release=release
                )

            return await db.run(run)

        answer = await call(0, None, first)
        ref = str(answer.ref)
        granted, used_total = granted_of(answer), 0
        limits: list[int] = []
        for seq, step in enumerate(plan, start=1):
            used = int(granted * step.used_fraction)
            limits.append(rate.rated(used_total + granted) - rate.rated(used_total))
            used_total += used
            answer = await call(seq, used, step.request, ref=ref)
            granted = granted_of(answer) if step.request is not None else granted
            await assert_ledger_balanced(db)
        used = granted
        limits.append(rate.rated(used_total + granted) - rate.rated(used_total))
        await call(len(plan) + 1, used, None, release=True, ref=ref)

        async with db.read() as s:
            records = (
                (await s.execute(select(UsageRecord).order_by(UsageRecord.external_id)))
                .scalars()
                .all()
            )
        by_seq = {int(r.external_id.split("/")[1]): r for r in records}
        for seq, limit in enumerate(limits, start=1):
            record = by_seq.get(seq)
            if record is None:
                continue
            taken = record.from_buckets + record.from_wallet
            assert taken <= limit, (seq, taken, limit)
            assert taken + record.unbilled == record.rated
        assert await open_reservations(db) == 0
        await assert_ledger_balanced(db)
    finally:
        await savepoint.rollback()
