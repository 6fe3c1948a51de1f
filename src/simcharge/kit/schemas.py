"""Shapes shared by every API: money, units, instants."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from simcharge.kit.money import from_minor


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is in the year 0 in UTC
        raise ValueError("the time is outside the calendar in UTC") from None


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A time with its offset (`Z`, `+08:00`), as UTC: a bare day or local time is refused (422), and
so is one that UTC cannot write (at the very edges of the calendar)."""


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Money(Schema):
    """An amount of money: integer minor units, and the same as a decimal string for display."""

    currency: str = Field(examples=["USD"])
    minor: int = Field(description="Minor units (cents, fen)", examples=[1050])
    value: str = Field(description="Decimal string in major units", examples=["10.50"])

    @classmethod
    def of(cls, minor: int, currency: str) -> Money:
        return cls(currency=currency, minor=minor, value=str(from_minor(minor, currency)))
