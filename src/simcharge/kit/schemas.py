"""Shapes shared by every API: money, units."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from simcharge.kit.money import from_minor


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
