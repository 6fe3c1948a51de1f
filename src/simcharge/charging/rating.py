"""Rating: which zone a country is in, which tariff applies, and what usage costs.

Pure functions over a `RatingTable` (zones and tariffs as loaded with the catalog), which a
process keeps for a few seconds (`RatingCache`) instead of reading it for every request."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.catalog.models import Zone
from simcharge.charging.models import Tariff


@dataclass(frozen=True, slots=True)
class Rate:
    service: str
    zone: str
    currency: str
    price: int
    per_units: int
    first_increment: int
    next_increment: int
    minimum: int

    def stored(self) -> list[str | int]:
        """The tariff as a charging session keeps it in its JSON (the service and currency are
        the session's own): the zone, then the numbers in this order, which sessions already in
        the database hold."""
        return [self.zone, self.price, self.per_units, self.first_increment,
                self.next_increment, self.minimum]  # fmt: skip

    @classmethod
    def from_stored(cls, service: str, currency: str, kept: Sequence[Any]) -> Rate:
        """The tariff `stored` kept, for `service` in `currency`."""
        zone, price, per_units, first_increment, next_increment, minimum = kept
        return cls(service, zone, currency, price, per_units, first_increment, next_increment,
                   minimum)  # fmt: skip

    def rated(self, quantity: int) -> int:
        """`quantity` rounded up to the first increment, then to whole next increments."""
        if quantity <= 0:
            return 0
        if quantity <= self.first_increment:
            return self.first_increment
        rest = quantity - self.first_increment
        return self.first_increment + -(-rest // self.next_increment) * self.next_increment

    def cost(self, units: int) -> int:
        """What `units` (already rated) cost from the wallet: price pro rata, rounded up to the
        minor unit, at least the minimum. Cumulative: the cost of more units is never less."""
        if units <= 0:
            return 0
        return max(self.minimum, -(-units * self.price // self.per_units))


@dataclass
class RatingTable:
    country_zone: dict[str, str] = field(default_factory=dict)
    default_zone: str | None = None
    rates: dict[tuple[str, str, str], Rate] = field(default_factory=dict)

    def zone_of(self, country: str | None) -> str | None:
        if country and country in self.country_zone:
            return self.country_zone[country]
        return self.default_zone

    def rate(self, service: str, zone: str, currency: str) -> Rate | None:
        return self.rates.get((service, zone, currency))


async def load_rating_table(session: AsyncSession) -> RatingTable:
    table = RatingTable()
    for zone in (await session.execute(select(Zone))).scalars():
        for country in zone.countries:
            table.country_zone[country] = zone.code
        if zone.is_default:
            table.default_zone = zone.code
    for t in (await session.execute(select(Tariff))).scalars():
        table.rates[(t.service, t.zone, t.currency)] = Rate(
            t.service,
            t.zone,
            t.currency,
            t.price,
            t.per_units,
            t.first_increment,
            t.next_increment,
            t.minimum,
        )
    return table


class RatingCache:
    """The rating table, read again at most every `ttl` seconds (0: every time)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._table: RatingTable | None = None
        self._at = 0.0

    async def get(self, session: AsyncSession) -> RatingTable:
        now = time.monotonic()
        if self._table is None or self.ttl <= 0 or now - self._at > self.ttl:
            self._table = await load_rating_table(session)
            self._at = now
        return self._table


# Mobile country codes (ITU-T E.212) of the countries an operator of travellers meets most;
# an MCC not listed is rated in the catalog's default zone.
MCC_COUNTRY: dict[str, str] = {
    **dict.fromkeys(("310", "311", "312", "313", "314", "315", "316"), "US"),
    "302": "CA", "334": "MX", "724": "BR", "722": "AR", "730": "CL", "732": "CO", "716": "PE",
    "234": "GB", "235": "GB", "272": "IE", "208": "FR", "262": "DE", "214": "ES", "268": "PT",
    "222": "IT", "204": "NL", "206": "BE", "228": "CH", "232": "AT", "240": "SE", "242": "NO",
    "238": "DK", "244": "FI", "260": "PL", "202": "GR", "230": "CZ", "216": "HU", "226": "RO",
    "460": "CN", "461": "CN", "454": "HK", "455": "MO", "466": "TW", "515": "PH", "440": "JP",
    "441": "JP", "450": "KR", "525": "SG", "520": "TH", "452": "VN", "502": "MY", "510": "ID",
    "404": "IN", "405": "IN", "505": "AU", "530": "NZ", "250": "RU", "286": "TR", "424": "AE",
    "420": "SA", "425": "IL", "602": "EG", "655": "ZA", "621": "NG", "639": "KE",
}  # fmt: skip


def country_of_mcc(mcc: str | None) -> str | None:
    return MCC_COUNTRY.get(mcc or "")
