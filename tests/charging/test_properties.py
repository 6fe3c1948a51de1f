"""Property tests of real-time charging, on both databases, through the service functions.

For random lines (money, buckets of every unit with scopes) and random sessions of one or more
rating groups — voice, data, SMS — (each request reports some of the groups: used units below,
at or beyond what was granted, with or without a new request; a release at the end), after
every request:
- no usage record took more than the quota that stood for its group before it — the quota
  granted last, or none once a report without a request released it (the rest is `unbilled`);
- per unit, every account's debits equal every account's credits, posted and pending: the
  totals are conserved; no bounded account is overdrawn;
and after the release no reservation is left. The number of examples is the Hypothesis
profile's (`HYPOTHESIS_PROFILE=thorough`: 600).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, given, settings
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
    validate_exchange,
)

SERVICES = {
    "voice": (100, "time", "VOICE_S"),
    "data": (200, "totalVolume", "DATA_B"),
    "sms": (300, "serviceSpecificUnits", "SMS"),
}
BUCKETS = {"voice": [0, 59, 600], "data": [0, 2 * MIB], "sms": [0, 1, 3]}
PLACES = {None: "home", "208": "europe", "515": "asia", "999": "world"}
REQUESTS = st.one_of(st.none(), st.integers(1, 5), st.integers(1, 900), st.integers(1, 3 * MIB))


@dataclass(frozen=True)
class Report:
    used_fraction: float
    """Used units as a share of the quota that stands (beyond 1: more than was granted)…"""
    used_more: int
    """… and a few more (used with no quota standing, say)."""
    request: int | None


steps = st.lists(
    st.dictionaries(
        st.sampled_from(sorted(SERVICES)),
        st.builds(
            Report,
            used_fraction=st.sampled_from([0.0, 0.3, 0.5, 1.0, 1.0, 1.2, 2.0]),
            used_more=st.sampled_from([0, 0, 0, 1, 61]),
            request=REQUESTS,
        ),
    ),
    min_size=1,
    max_size=4,
)


VALIDATE_EXCHANGES = 8
"""Generated exchanges checked against the official YAML, per database."""
_VALIDATED: Counter[str] = Counter()


@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    services=st.sets(st.sampled_from(sorted(SERVICES)), min_size=1),
    mcc=st.sampled_from(sorted(PLACES, key=str)),
    money=st.sampled_from([0, 7, 100, 1000]),
    buckets=st.fixed_dictionaries({s: st.sampled_from(v) for s, v in BUCKETS.items()}),
    bucket_zone=st.sampled_from([(), ("europe",), ("asia",)]),
    first=REQUESTS,
    plan=steps,
)
async def test_sessions_never_take_more_than_granted_and_leave_nothing_reserved(
    connection: AsyncConnection,
    settings: Settings,
    services: set[str],
    mcc: str | None,
    money: int,
    buckets: dict[str, int],
    bucket_zone: tuple[str, ...],
    first: int | None,
    plan: list[dict[str, Report]],
) -> None:
    savepoint = await connection.begin_nested()
    try:
        db = Database.bound_to(connection)
        grants = [
            UnitGrant(SERVICES[s][2], n, 30, bucket_zone) for s, n in buckets.items() if n
        ]
        t = await make_line(db, money=money, grants=grants)
        async with db.read() as s:
            table = await load_rating_table(s)
        rates = {s: table.rate(s, PLACES[mcc], "USD") for s in services}
        by_group = {SERVICES[s][0]: s for s in services}
        extra: dict[str, Any] = {"nFPLMNID": {"mcc": mcc, "mnc": "01"}} if mcc else {}

        def request(seq: int, reports: dict[str, tuple[int | None, int | None]]) -> bytes:
            entries = []
            for service, (used, wanted) in sorted(reports.items()):
                group, field, _ = SERVICES[service]
                entry: dict[str, Any] = {"ratingGroup": group}
                if wanted is not None:
                    entry["requestedUnit"] = {field: wanted}
                if used is not None:
                    entry["usedUnitContainer"] = [{"localSequenceNumber": seq, field: used}]
                entries.append(entry)
            doc = body(t.supi, seq, entries)
            doc["nfConsumerIdentification"].update(extra)
            return json.dumps(doc).encode()

        def granted_of(answer: Any) -> dict[str, int]:
            found = {}
            for info in answer.body.get("multipleUnitInformation", []):
                service = by_group[info["ratingGroup"]]
                found[service] = int(info.get("grantedUnit", {}).get(SERVICES[service][1], 0))
            return found

        async def call(
            seq: int,
            reports: dict[str, tuple[int | None, int | None]],
            *,
            release: bool = False,
            ref: str | None = None,
        ) -> Any:
            payload = request(seq, reports)

            async def run(s: AsyncSession) -> Any:
                if ref is None:
                    return await create_charging_data(
                        s, settings, table, client="prop", body=payload
                    )
                return await update_charging_data(
                    s, settings, table, client="prop", ref=ref, body=payload, release=release
                )

            answer = await db.run(run)
            # What the HTTP tests check of every exchange, for the first ones generated here too
            # (openapi-core takes ~0.5 s an exchange on these files: all of them would make
            # this test ten times slower).
            if _VALIDATED[connection.dialect.name] < VALIDATE_EXCHANGES:
                _VALIDATED[connection.dialect.name] += 1
                path = (
                    "/chargingdata" if ref is None
                    else f"/chargingdata/{ref}/{'release' if release else 'update'}"
                )
                validate_exchange(path, payload, answer.status, answer.body)
            return answer

        answer = await call(0, {s: (None, first) for s in services})
        ref = str(answer.ref)
        # What stands for each group now, and what it used so far (its rounding goes on).
        quota = {s: granted_of(answer).get(s, 0) if first is not None else 0 for s in services}
        used_total = dict.fromkeys(services, 0)
        limits: dict[tuple[int, str], int] = {}

        def report(seq: int, service: str, fraction: float, more: int = 0) -> int:
            rate = rates[service]
            used = int(quota[service] * fraction) + more
            if rate is not None:
                done = used_total[service]
                limits[seq, service] = rate.rated(done + quota[service]) - rate.rated(done)
            used_total[service] += used
            return used

        for seq, step in enumerate(plan, start=1):
            reports = {
                s: (report(seq, s, r.used_fraction, r.used_more), r.request)
                for s, r in step.items()
                if s in services
            }
            answer = await call(seq, reports, ref=ref)
            granted = granted_of(answer)
            for service, (_, wanted) in reports.items():
                # A report without a request gives the rest of the quota back.
                quota[service] = granted.get(service, 0) if wanted is not None else 0
            await assert_ledger_balanced(db)
        last = len(plan) + 1
        await call(last, {s: (report(last, s, 1.0), None) for s in services}, release=True, ref=ref)

        async with db.read() as s:
            records = (await s.execute(select(UsageRecord))).scalars().all()
        for record in records:
            _, seq, group = record.external_id.split("/")
            limit = limits.get((int(seq), by_group[int(group)]), 0)
            taken = record.from_buckets + record.from_wallet
            event(f"{record.service} used " + ("with no quota" if limit == 0 else "in a quota"))
            if record.unbilled:
                event("used beyond the quota")
            assert taken <= limit, (record.external_id, taken, limit)
            assert taken + record.unbilled == record.rated
        assert await open_reservations(db) == 0
        await assert_ledger_balanced(db)
    finally:
        await savepoint.rollback()
