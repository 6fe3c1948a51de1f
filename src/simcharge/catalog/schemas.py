"""The catalog file's format (TOML), validated; and the catalog as the API shows it."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from babel import Locale
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from simcharge.catalog.steps import only_currency, payable_step, takes_currency
from simcharge.kit.i18n import LANGUAGES
from simcharge.kit.money import (
    LossyConversionError,
    Unit,
    from_minor,
    is_currency,
    minor_exponent,
    to_minor,
)
from simcharge.kit.schemas import Money, Schema

PROVIDERS = ("stripe", "paypal", "alipay", "wechatpay", "sandbox")
Code = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
MIB = 1024 * 1024
MONEY_BOUND = 10**12
"""The most any amount in the catalog may be, in minor units (a price, a fee, a limit, a wallet
credit, a tariff's price or minimum): the back office's bound on an amount
(`screens_customers.AMOUNT_BOUND`). Price + fee then stays far inside a BIGINT, and a number
such as `1e999999999` is refused for its size, never computed with."""
BUCKET_MAX = {
    "minutes": 1_000_000,
    "megabytes": 100 * 1024 * 1024,
    "gigabytes": 100 * 1024,
    "sms": 1_000_000,
}
"""The most one bucket may grant: a million minutes or messages, 100 TB of data — far beyond any
plan, and far inside what a ledger amount (64 bits) holds, even summed over many top-ups."""
_COUNTRIES = frozenset(
    code for code in map(str, Locale("en").territories) if len(code) == 2 and code.isalpha()
)


def _check_texts(value: dict[str, str], *, required: bool) -> dict[str, str]:
    unknown = sorted(set(value) - set(LANGUAGES))
    if unknown:
        raise ValueError(f"unknown language(s) {', '.join(unknown)}; use {', '.join(LANGUAGES)}")
    if required or value:
        missing = [lang for lang in LANGUAGES if not (value.get(lang) or "").strip()]
        if missing:
            raise ValueError(f"missing text for {', '.join(missing)}")
    return value


def _exact(amount: Decimal, currency: str, where: str) -> int:
    """`amount` in minor units, if it is exact in `currency` and within `MONEY_BOUND`."""
    most = from_minor(MONEY_BOUND, currency)
    try:
        minor = to_minor(amount, currency) if amount.copy_abs() <= most else None
    except LossyConversionError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    except ArithmeticError as exc:  # decimal.Overflow and the like: no amount at all
        raise ValueError(f"{where}: {amount} is not an amount") from exc
    if minor is None:
        raise ValueError(f"{where}: at most {most} {currency}")
    # Decimal arithmetic rounds what is too small for it to 0 (`1e-999999999`): exact means
    # the minor units say the same amount again.
    if from_minor(minor, currency) != amount:
        raise ValueError(
            f"{where}: {amount} has more decimals than {currency} allows "
            f"({minor_exponent(currency)})"
        )
    return minor


def _payable(amount: Decimal, currency: str, provider: str, where: str) -> None:
    """Refuse an amount the provider cannot take (`steps.payable_step`): a price or fixed fee
    is never rounded, only the percentage fee is (up, in `service.fee_for`)."""
    step = payable_step(provider, currency)
    if step > 1 and to_minor(amount, currency) % step:
        whole = from_minor(step, currency)
        raise ValueError(f"{where}: {provider} takes {currency} in steps of {whole} only")


def _check_currency(code: str) -> str:
    if not is_currency(code):
        raise ValueError(f"{code} is not an ISO 4217 currency")
    return code


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneFile(_Strict):
    code: Code
    names: dict[str, str]
    countries: list[str] = []
    default: bool = False

    @field_validator("names")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_texts(v, required=True)

    @field_validator("countries")
    @classmethod
    def _countries(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in _COUNTRIES]
        if bad:
            raise ValueError(f"not ISO 3166-1 alpha-2 country codes: {', '.join(bad)}")
        return v


class Limits(_Strict):
    """The least and the most a payment may be (price + fee), each above zero."""

    min: Decimal | None = Field(default=None, gt=0)
    max: Decimal | None = Field(default=None, gt=0)


class PaymentMethodFile(_Strict):
    code: Code
    provider: Literal["stripe", "paypal", "alipay", "wechatpay", "sandbox"]
    currencies: list[str] = Field(min_length=1)
    names: dict[str, str]
    descriptions: dict[str, str] = {}
    fee_percent: Decimal = Field(default=Decimal(0), ge=0, le=100)
    fee_fixed: dict[str, Decimal] = {}
    limits: dict[str, Limits] = {}
    enabled: bool = True

    @field_validator("names")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_texts(v, required=True)

    @field_validator("descriptions")
    @classmethod
    def _descriptions(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_texts(v, required=False)

    @field_validator("currencies")
    @classmethod
    def _currencies(cls, v: list[str]) -> list[str]:
        return [_check_currency(c) for c in v]

    @field_validator("fee_percent")
    @classmethod
    def _two_decimals(cls, v: Decimal) -> Decimal:
        if v != v.quantize(Decimal("0.01")):
            raise ValueError("at most two decimals (basis points)")
        return v

    @model_validator(mode="after")
    def _amounts(self) -> PaymentMethodFile:
        for i, cur in enumerate(self.currencies):
            if cur in self.currencies[:i]:
                raise ValueError(f"currencies: {cur} is named twice")
        only = only_currency(self.provider)
        for cur in self.currencies:
            if only is not None and cur != only:
                raise ValueError(f"currencies: {self.provider} takes {only} only, not {cur}")
            if not takes_currency(self.provider, cur):
                raise ValueError(f"currencies: {self.provider} does not take {cur}")
        for cur, amount in self.fee_fixed.items():
            if cur not in self.currencies:
                raise ValueError(f"fee_fixed.{cur}: the method does not take {cur}")
            if amount < 0:
                raise ValueError(f"fee_fixed.{cur}: must be at least zero")
            _exact(amount, cur, f"fee_fixed.{cur}")
            _payable(amount, cur, self.provider, f"fee_fixed.{cur}")
        for cur, lim in self.limits.items():
            if cur not in self.currencies:
                raise ValueError(f"limits.{cur}: the method does not take {cur}")
            for label, bound in (("min", lim.min), ("max", lim.max)):
                if bound is not None:
                    _exact(bound, cur, f"limits.{cur}.{label}")
            if lim.min is not None and lim.max is not None and lim.min > lim.max:
                raise ValueError(f"limits.{cur}: min is above max")
        return self

    @property
    def fee_percent_bp(self) -> int:
        return int(self.fee_percent * 100)


class BucketFile(_Strict):
    """Exactly one of `minutes`, `megabytes`, `gigabytes`, `sms`."""

    minutes: int | None = Field(default=None, gt=0, le=BUCKET_MAX["minutes"])
    megabytes: int | None = Field(default=None, gt=0, le=BUCKET_MAX["megabytes"])
    gigabytes: int | None = Field(default=None, gt=0, le=BUCKET_MAX["gigabytes"])
    sms: int | None = Field(default=None, gt=0, le=BUCKET_MAX["sms"])
    validity_days: int | None = Field(default=None, gt=0, le=3650)
    zones: list[str] = []

    @model_validator(mode="after")
    def _one_amount(self) -> BucketFile:
        given = [n for n in ("minutes", "megabytes", "gigabytes", "sms") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of minutes, megabytes, gigabytes, sms")
        return self

    def as_grant(self) -> dict[str, Any]:
        if self.minutes:
            unit, amount = Unit.VOICE_S, self.minutes * 60
        elif self.megabytes:
            unit, amount = Unit.DATA_B, self.megabytes * MIB
        elif self.gigabytes:
            unit, amount = Unit.DATA_B, self.gigabytes * 1024 * MIB
        else:
            unit, amount = Unit.SMS, int(self.sms or 0)
        return {
            "unit": unit.value,
            "amount": amount,
            "validity_days": self.validity_days,
            "zones": list(self.zones),
        }


class PlanFile(_Strict):
    code: Code
    names: dict[str, str]
    descriptions: dict[str, str] = {}
    prices: dict[str, Decimal] = Field(min_length=1)
    wallet_credit: dict[str, Decimal] = {}
    buckets: list[BucketFile] = []
    validity_days: int = Field(default=0, ge=0, le=3650)
    methods: list[str] = []
    active: bool = True

    @field_validator("names")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_texts(v, required=True)

    @field_validator("descriptions")
    @classmethod
    def _descriptions(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_texts(v, required=False)

    @model_validator(mode="after")
    def _amounts(self) -> PlanFile:
        for name, amounts in (("prices", self.prices), ("wallet_credit", self.wallet_credit)):
            for cur, amount in amounts.items():
                if not is_currency(cur):
                    raise ValueError(f"{name}.{cur}: {cur} is not an ISO 4217 currency")
                if amount < 0 or (name == "prices" and amount == 0):
                    least = "above" if name == "prices" else "at least"
                    raise ValueError(f"{name}.{cur}: must be {least} zero")
                _exact(amount, cur, f"{name}.{cur}")
        if not self.buckets and not self.wallet_credit and not self.validity_days:
            raise ValueError("a plan must grant something: wallet_credit, buckets or validity_days")
        return self


KIB = 1024
PER_UNITS = {
    "voice": {"second": 1, "minute": 60},
    "data": {"KB": KIB, "MB": MIB, "GB": 1024 * MIB},
    "sms": {"message": 1},
}
_SIZE = re.compile(r"^\s*(\d+)\s*(s|B|KB|MB)?\s*$")
_SIZE_UNITS: dict[str, dict[str | None, int]] = {
    "voice": {None: 1, "s": 1},
    "data": {"B": 1, "KB": KIB, "MB": MIB},
}
MAX_INCREMENT = {"voice": 3600, "data": 1024 * MIB}
"""The largest rounding increment: an hour of a call, a GiB of data (larger ones are no tariff,
and would overflow the 64-bit increment columns)."""


def _increment(service: str, text: str) -> int:
    match = _SIZE.match(text)
    units = _SIZE_UNITS[service]
    if match is None or match.group(2) not in units:
        shapes = "60 or 60s" if service == "voice" else "1KB, 100KB or 1MB"
        raise ValueError(f"{text!r} is not an increment (e.g. {shapes})")
    digits, most = match.group(1).lstrip("0"), MAX_INCREMENT[service]
    # Compared as text first: thousands of digits are no number `int` takes.
    amount = int(digits) * units[match.group(2)] if len(digits) <= 19 else most + 1
    if not 0 < amount <= most:
        limit = "3600s" if service == "voice" else "1024MB"
        raise ValueError(f"{text!r}: an increment is above zero and at most {limit}")
    return amount


class TariffFile(_Strict):
    """What usage of one service costs in one zone, in one wallet currency.

    `price` (major units, exact in the currency) is per `per`; usage is rounded up to
    `rounding` = "first/next" increments (voice in seconds, "60/60" or "1/1"; data in
    B/KB/MB, "1KB/1KB" or "1MB"); `minimum` is charged at least for any usage paid from the
    wallet (per call, data session or message)."""

    service: Literal["voice", "data", "sms"]
    zone: Code
    currency: str
    price: Decimal = Field(ge=0)
    per: str
    rounding: str | None = None
    minimum: Decimal = Field(default=Decimal(0), ge=0)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return _check_currency(v)

    @model_validator(mode="after")
    def _units(self) -> TariffFile:
        per = PER_UNITS[self.service]
        if self.per not in per:
            raise ValueError(f"per: {self.per!r} is not one of {', '.join(per)}")
        _exact(self.price, self.currency, "price")
        _exact(self.minimum, self.currency, "minimum")
        if self.service == "sms":
            if self.rounding is not None:
                raise ValueError("rounding: messages are counted one by one")
        elif self.rounding is not None:
            parts = self.rounding.split("/")
            if len(parts) > 2:
                raise ValueError(f"rounding: {self.rounding!r} is not first/next")
            try:
                [_increment(self.service, p) for p in parts]
            except ValueError as exc:
                raise ValueError(f"rounding: {exc}") from exc
        return self

    def as_row(self) -> dict[str, Any]:
        """Minor units and native units (seconds, bytes, messages)."""
        first = nxt = 1
        if self.rounding is not None and self.service != "sms":
            parts = [_increment(self.service, p) for p in self.rounding.split("/")]
            first, nxt = parts[0], parts[-1]
        return {
            "service": self.service,
            "zone": self.zone,
            "currency": self.currency,
            "price": to_minor(self.price, self.currency),
            "per_units": PER_UNITS[self.service][self.per],
            "first_increment": first,
            "next_increment": nxt,
            "minimum": to_minor(self.minimum, self.currency),
        }


class CatalogFile(_Strict):
    zones: list[ZoneFile] = []
    payment_methods: list[PaymentMethodFile] = Field(min_length=1)
    plans: list[PlanFile] = Field(min_length=1)
    tariffs: list[TariffFile] = []

    @model_validator(mode="after")
    def _references(self) -> CatalogFile:
        problems: list[str] = []
        entries: dict[str, list[str]] = {
            "zones": [z.code for z in self.zones],
            "payment_methods": [m.code for m in self.payment_methods],
            "plans": [p.code for p in self.plans],
        }
        for kind, codes in entries.items():
            for i, code in enumerate(codes):
                if code in codes[:i]:
                    problems.append(f"{kind}[{i}] ({code}): code: used twice")
        owner: dict[str, str] = {}
        for i, zone in enumerate(self.zones):
            for country in zone.countries:
                if country in owner:
                    problems.append(
                        f"zones[{i}] ({zone.code}): countries: {country} is already in {owner[country]}"
                    )
                owner[country] = zone.code
        if sum(z.default for z in self.zones) > 1:
            problems.append("zones: default: only one zone may be the default")
        zone_codes = {z.code for z in self.zones}
        methods = {m.code: m for m in self.payment_methods}
        for i, p in enumerate(self.plans):
            where = f"plans[{i}] ({p.code})"
            for cur, price in p.prices.items():
                for m in p.methods or list(methods):
                    method = methods.get(m)
                    if method is None or cur not in method.currencies:
                        continue
                    try:
                        _payable(price, cur, method.provider, f"prices.{cur}")
                    except ValueError as exc:
                        problems.append(f"{where}: {exc} (payment method {m})")
            for m in p.methods:
                if m not in methods:
                    problems.append(f"{where}: methods: no payment method {m!r}")
                elif not set(methods[m].currencies) & set(p.prices):
                    problems.append(
                        f"{where}: methods: {m} takes {', '.join(methods[m].currencies)}, "
                        f"but the plan has no price in it"
                    )
            for j, b in enumerate(p.buckets):
                for code in b.zones:
                    if code not in zone_codes:
                        problems.append(f"{where}: buckets[{j}].zones: no zone {code!r}")
        seen: dict[tuple[str, str, str], int] = {}
        for i, t in enumerate(self.tariffs):
            where = f"tariffs[{i}] ({t.service} {t.zone} {t.currency})"
            if t.zone not in zone_codes:
                problems.append(f"{where}: zone: no zone {t.zone!r}")
            key = (t.service, t.zone, t.currency)
            if key in seen:
                problems.append(f"{where}: the same as tariffs[{seen[key]}]")
            seen.setdefault(key, i)
        if problems:
            raise ValueError("; ".join(problems))
        return self


# ---------------------------------------------------------------------------------------------
# API views


class PlanPriceView(Schema):
    currency: str
    amount: Money


class GrantView(Schema):
    unit: str
    amount: int
    validity_days: int | None
    zones: list[str]


class PlanView(Schema):
    id: uuid.UUID
    code: str
    version: int
    name: str
    description: str
    names: dict[str, str]
    prices: list[Money]
    wallet_credit: list[Money]
    grants: list[GrantView]
    validity_days: int
    methods: list[str] = Field(description="Payment methods that may sell it")


class FeeView(Schema):
    percent: str = Field(examples=["3.49"])
    fixed: list[Money]


class LimitView(Schema):
    currency: str
    min: Money | None
    max: Money | None


class PaymentMethodView(Schema):
    code: str
    provider: str
    name: str
    description: str
    names: dict[str, str]
    currencies: list[str]
    fee: FeeView
    limits: list[LimitView]


class ZoneView(Schema):
    code: str
    name: str
    countries: list[str]
    is_default: bool
