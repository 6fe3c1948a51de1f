"""TMF654 resources as JSON: the official Swagger document validates what comes in, and these
functions shape what goes out (tests validate that against the same document)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator  # type: ignore[import-untyped]

from simcharge.errors import FieldError, ValidationFailed
from simcharge.kit.money import LossyConversionError, from_minor, to_minor
from simcharge.kit.translations import N_
from simcharge.ledger.service import MAX_AMOUNT
from simcharge.lines.models import Line
from simcharge.tmf654.models import BalanceAction

SPEC_FILE = Path(__file__).resolve().parent / "spec" / "TMF654-PrepayBalance-v4.0.0.swagger.json"
BASE_PATH = "/tmf-api/prepayBalanceManagement/v4"

_FACTORS: dict[str, dict[str, int]] = {
    "VOICE_S": {"seconds": 1, "second": 1, "s": 1, "sec": 1, "minutes": 60, "minute": 60,
                "min": 60},
    "DATA_B": {"bytes": 1, "byte": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3},
    "SMS": {"sms": 1, "messages": 1, "message": 1, "units": 1},
}
_SHOWN_UNITS = {"VOICE_S": "seconds", "DATA_B": "bytes", "SMS": "sms"}


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    return loaded


@lru_cache(maxsize=32)
def validator(definition: str) -> Draft4Validator:
    return Draft4Validator(
        {"$ref": f"#/definitions/{definition}", "definitions": spec()["definitions"]}
    )


def validate_body(definition: str, body: Any) -> dict[str, Any]:
    """Check a request body against the spec's definition; every violation is one field error."""
    if not isinstance(body, dict):
        raise ValidationFailed(N_("The body must be a JSON object."), field="body")
    errors = [_field_error(e) for e in validator(definition).iter_errors(body)]
    if errors:
        raise ValidationFailed(errors=errors)
    return body


_OF_TYPE = {
    "string": N_("Enter text."),
    "object": N_("This must be an object."),
    "integer": N_("Enter a whole number."),
    "number": N_("Enter a number."),
    "array": N_("This must be a list."),
    "boolean": N_("Enter true or false."),
}


def _field_error(e: Any) -> FieldError:
    """A violation of the spec's schema as the caller reads it, in their language for the kinds
    a caller makes (a field missing, of another type, not one of the values); jsonschema's own
    (English) words for the rest."""
    path = [str(p) for p in e.absolute_path]
    if e.validator == "required":
        # "'amount' is a required property": the field is the one missing, under its object.
        missing = e.message.split("'")[1] if e.message.count("'") >= 2 else None
        field = ".".join([*path, missing]) if missing else ".".join(path) or "body"
        return FieldError(field, N_("This field is required."))
    field = ".".join(path) or "body"
    if e.validator == "type" and isinstance(e.validator_value, str):
        said = _OF_TYPE.get(e.validator_value)
        if said is not None:
            return FieldError(field, said)
    if e.validator == "enum" and isinstance(e.validator_value, list):
        expected = ", ".join(str(v) for v in e.validator_value)
        return FieldError(field, N_("Choose one of: {expected}."), {"expected": expected})
    return FieldError(field, e.message)


class Figure(float):
    """A JSON number with a fraction or an exponent, read as TMF654's bodies are read
    (`endpoints.ExactRequest`): a float for everything else, and the digits as they were
    written (`literal`) for an amount. Through a float alone, `90071992547409.93` became
    `…409.94` — a cent more than was sent — and `20.000000000000001` was taken as `20`."""

    literal: str

    def __new__(cls, text: str) -> Figure:
        figure = super().__new__(cls, text)
        figure.literal = text
        return figure


def units_of(quantity: dict[str, Any] | None, unit: str, field: str) -> int:
    """A TMF Quantity in a ledger unit: money in major units of the currency (exactly), voice in
    seconds or minutes, data in bytes/KB/MB/GB (binary), SMS in messages. At most the ledger's
    `MAX_AMOUNT` either way: more is no amount a balance can hold (nor a BIGINT column)."""
    if not quantity or "amount" not in quantity:
        raise ValidationFailed(N_("An amount is required."), field=f"{field}.amount")
    raw = quantity["amount"]
    try:
        value = Decimal(raw.literal if isinstance(raw, Figure) else str(raw))
    except InvalidOperation as exc:
        raise ValidationFailed(N_("Not a number."), field=f"{field}.amount") from exc
    if not value.is_finite():  # Python's JSON reads Infinity and NaN
        raise ValidationFailed(N_("Not a number."), field=f"{field}.amount")
    given = str(quantity.get("units") or "").strip()
    if unit in _FACTORS:
        factor = _FACTORS[unit].get(given.lower() or _SHOWN_UNITS[unit])
        if factor is None:
            raise ValidationFailed(
                N_("Unit {value} is not one of {allowed}."), field=f"{field}.units",
                value=given, allowed=", ".join(_FACTORS[unit]),
            )
        result = value * factor
        if result != result.to_integral_value():
            raise ValidationFailed(N_("The amount is not a whole number of {unit}."),
                                   field=f"{field}.amount", unit=_SHOWN_UNITS[unit])
        amount = int(result)
    else:
        if given and given.upper() != unit:
            raise ValidationFailed(N_("The line's currency is {currency}."),
                                   field=f"{field}.units", currency=unit)
        try:
            amount = to_minor(value, unit)
        except LossyConversionError as exc:
            raise ValidationFailed(N_("The amount is not exact in {currency}."),
                                   field=f"{field}.amount", currency=unit) from exc
    if abs(amount) > MAX_AMOUNT:
        raise ValidationFailed(N_("This is not a valid amount."), field=f"{field}.amount")
    return amount


def exact(value: Decimal) -> Figure:
    """An amount of money for the output: a JSON number with its decimal digits (`20.00`,
    `90071992547409.93`), which `encode` writes as they are — never the binary float nearest
    to it."""
    return Figure(format(value, "f"))


def add_exactly(a: Any, b: Any) -> Any:
    """The sum of two output amounts, exact when either is money (`exact`)."""
    if isinstance(a, Figure) or isinstance(b, Figure):
        return exact(_decimal(a) + _decimal(b))
    return a + b


def _decimal(value: Any) -> Decimal:
    return Decimal(value.literal if isinstance(value, Figure) else str(value))


def quantity(amount: int, unit: str) -> dict[str, Any]:
    if unit in _SHOWN_UNITS:
        return {"amount": amount, "units": _SHOWN_UNITS[unit]}
    return {"amount": exact(from_minor(amount, unit)), "units": unit}


def encode(content: Any) -> str:
    """`content` as compact JSON, a `Figure` written as its digits (Python's `json` writes any
    float, a subclass too, through `float.__repr__`)."""
    if isinstance(content, Figure):
        return content.literal
    if isinstance(content, dict):
        return "{" + ",".join(f"{_plain(str(k))}:{encode(v)}" for k, v in content.items()) + "}"
    if isinstance(content, list | tuple):
        return "[" + ",".join(encode(v) for v in content) + "]"
    return _plain(content)


def _plain(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def when(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at else None


def msisdn_ref(msisdn: str) -> list[dict[str, Any]]:
    return [{"id": msisdn, "name": "MSISDN", "@referredType": "MSISDN"}]


def party(line: Line) -> dict[str, Any] | None:
    if line.account_id is None:
        return None
    return {"id": str(line.account_id), "@referredType": "PartyAccount"}


def bucket_ref(base: str, account_id: Any) -> dict[str, Any]:
    return {"id": str(account_id), "href": f"{base}/bucket/{account_id}", "@referredType": "Bucket"}


ECHOED = ("description", "channel", "requestor", "product", "validFor", "adjustType",
          "relatedParty")
ECHOED_TOPUP = ("isAutoTopup", "recurringPeriod", "numberOfPeriods", "voucher", "paymentMethod")


def action_out(
    base: str,
    action: BalanceAction,
    line: Line,
    *,
    status: str,
    receiver: Line | None = None,
    used: int | None = None,
    ends: datetime | None = None,
) -> dict[str, Any]:
    """A topupBalance, adjustBalance, reserveBalance or transferBalance resource. A reservation
    shows when it times out (`ends`: `validFor.endDateTime`) and, once completed, the amount
    charged (`used`), not the amount held; a transfer of units, when the receiver's bucket ends
    (`ends`); a top-up or adjustment of units, when its bucket ends (`ends`). Only a
    reservation's `validFor` is echoed, without a start (it holds from when it is made): the
    others' is the end their units have, never one asked for (one stored before it was refused
    was not applied)."""
    kind = {"topup": "TopupBalance", "adjust": "AdjustBalance", "reserve": "ReserveBalance",
            "transfer": "TransferBalance"}[action.kind]
    path = kind[0].lower() + kind[1:]
    out: dict[str, Any] = {
        "id": str(action.id),
        "href": f"{base}/{path}/{action.id}",
        "@type": kind,
        "status": status,
        "requestedDate": when(action.requested_at),
        "usageType": action.usage_type,
        # An adjustment's amount keeps its sign (a correction down is negative).
        "amount": quantity(action.amount if action.kind == "adjust" else abs(action.amount),
                           action.unit),
        "bucket": bucket_ref(base, action.account_id),
        "logicalResource": msisdn_ref(line.msisdn),
    }
    if action.confirmed_at:
        out["confirmationDate"] = when(action.confirmed_at)
    if action.reason:
        out["reason"] = action.reason
    if (p := party(line)) is not None:
        out["partyAccount"] = p
    for key in ECHOED + (ECHOED_TOPUP if action.kind == "topup" else ()):
        if key in action.request and (key != "adjustType" or action.kind == "adjust") and (
            key != "validFor" or action.kind == "reserve"
        ):
            out[key] = action.request[key]
    if isinstance(out.get("validFor"), dict) and "startDateTime" in out["validFor"]:
        # A reservation holds from when it was made (`requestedDate`): a start stored before
        # it was refused was never applied.
        kept = {k: v for k, v in out["validFor"].items() if k != "startDateTime"}
        if kept:
            out["validFor"] = kept
        else:
            del out["validFor"]
    if used is not None:
        out["amount"] = quantity(used, action.unit)
    if ends is not None:
        out["validFor"] = {**(out.get("validFor") or {}), "endDateTime": when(ends)}
    if action.kind == "transfer":
        assert receiver is not None
        out["receiverLogicalResource"] = msisdn_ref(receiver.msisdn)[0]
        out["receiverBucket"] = bucket_ref(base, action.receiver_account_id)
        out["receiverBucketUsageType"] = action.usage_type
        out["costOwner"] = "originator"
        out["transferCost"] = {"unit": line.currency,
                               "value": exact(from_minor(action.fee, line.currency))}
        out.setdefault("reason", "transfer")
        out.setdefault("channel", {"id": "api", "name": "api"})
    return out


def select_fields(item: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """TMF attribute selection: `fields=a,b` keeps those, id, href, @type and the attributes
    the spec requires of the resource (a history entry's `status` and
    `receiverLogicalResource`): what is left is still the resource the spec defines."""
    if not fields:
        return item
    wanted = {f.strip().split(".")[0] for f in fields.split(",") if f.strip()}
    wanted |= {"id", "href", "@type"}
    wanted |= set(spec()["definitions"].get(str(item.get("@type")), {}).get("required", ()))
    return {k: v for k, v in item.items() if k in wanted}


def matches(item: dict[str, Any], filters: dict[str, str]) -> bool:
    """TMF attribute filtering: `name=value` (`a,b` means either), dotted names go into objects
    and lists (`logicalResource.id=+1415…`). Values compare as JSON writes them: `true`,
    `false`, `null`."""
    for name, expected in filters.items():
        choices = set(expected.split(","))
        if not any(_as_text(v) in choices for v in _values(item, name.split("."))):
            return False
    return True


def _as_text(value: Any) -> str:
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def _values(node: Any, path: list[str]) -> Iterable[Any]:
    if not path:
        yield node
        return
    if isinstance(node, list):
        for element in node:
            yield from _values(element, path)
    elif isinstance(node, dict) and path[0] in node:
        yield from _values(node[path[0]], path[1:])
