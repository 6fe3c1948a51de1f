"""Giving credit, minutes, data or SMS from one of my lines to another number: the terms (fee,
limits) with the form, a review with the fee before confirming, then the transfer — through
`tmf654.giving`, the service of `/api/v1/me/lines/{id}/transfers`."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from babel.numbers import NumberFormatError, format_decimal, parse_decimal
from fastapi import APIRouter, Request
from fastapi.responses import Response

from simcharge.accounts import service as accounts
from simcharge.api.deps import DB, AppSettings
from simcharge.api.problems import error_texts
from simcharge.errors import SimchargeError, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.money import (
    LossyConversionError,
    format_money,
    from_minor,
    minor_exponent,
    to_minor,
)
from simcharge.kit.numbers import written_number as _written_number
from simcharge.kit.translations import N_, translate
from simcharge.kit.units import locale_for, percent_text, units_text
from simcharge.ledger.service import MAX_AMOUNT
from simcharge.lines.service import line_balances
from simcharge.portal.account import _uuid, require
from simcharge.portal.web import Page, Visitor, form_of, redirect, render
from simcharge.tmf654 import giving
from simcharge.tmf654.service import MB, USAGE_UNITS, TransferLimitExceeded

router = APIRouter(include_in_schema=False)

WHAT: dict[str, str] = {
    "monetary": N_("Credit"),
    "voice": N_("Minutes"),
    "data": N_("Data"),
    "sms": N_("SMS"),
}
"""What can be given, as the form names it."""

_UNIT_LIMITS: dict[str, tuple[str, int, str]] = {
    "At least {limit} MB of data per transfer.": (
        "DATA_B", MB, N_("Give at least {amount} at a time.")),
    "At most {limit} MB of data per transfer.": (
        "DATA_B", MB, N_("Give at most {amount} at a time.")),
    "At least {limit} minutes per transfer.": (
        "VOICE_S", 60, N_("Give at least {amount} at a time.")),
    "At most {limit} minutes per transfer.": (
        "VOICE_S", 60, N_("Give at most {amount} at a time.")),
    "At most {limit} messages per transfer.": (
        "SMS", 1, N_("Give at most {amount} at a time.")),
}
"""The service's refusals for a unit limit (`tmf654.service._check_limits`, by their msgid), with
the unit and the ledger units in one of the limit's (MB, minutes, messages): the page says the
limit as its terms do (`kit.units`: "1.5 GB", "1,500 min"), not as the service's raw number."""

# The service names fields as the TMF654 API does; the form's fields are these.
_FIELDS = {"msisdn": "to", "receiverLogicalResource": "to", "usage_type": "what",
           "usageType": "what", "bucket_id": "what"}


class AmountNotUnderstood(ValidationFailed):
    slug = "amount-not-understood"
    title = N_("Enter the amount as a number, such as 5 or 5.50.")


DATA_UNITS: dict[str, int] = {"GB": 1024, "MB": 1}
"""The units data may be given in (the form's `data_unit`), in MB — the service's unit (the
ledger's is the byte: `tmf654.service.MB`). GB as the pages write them: 1,024 MB."""


def _values(source: Any) -> dict[str, str]:
    values = {k: str(source.get(k, "") or "").strip()[:64] for k in ("to", "what", "amount")}
    # Only with data; without one (a link, a form of before) data is in MB, as it was. Credit,
    # minutes or SMS have no unit to choose: a unit sent with them (the form without
    # JavaScript shows the choice) is neither read, checked nor carried to the review.
    unit = str(source.get("data_unit", "") or "").strip()[:8]
    if unit and values["what"] == "data":
        values["data_unit"] = unit
    return values


def _gift(
    values: dict[str, str], currency: str, language: str, locale: str | None = None
) -> giving.Gift:
    """The form's values as the service takes them: money in minor units, whole minutes, MB
    and messages. The amount is read in the page's number format (`5,50` in Spain's Spanish,
    `5.50` in Mexico's: `locale`, the page's `Visitor.locale`)."""
    what = values["what"] if values["what"] in giving.USAGE_TYPES else "monetary"
    raw = values["amount"]
    if not raw:
        raise ValidationFailed(N_("This field is required."), field="amount")
    try:
        # Strict: `1,2` in English or `1.2` in Spanish is not read as twelve (a grouping
        # separator in the wrong place), but as what it is — not understood. Only ASCII digits
        # and the page's separators: `Decimal` alone would read `1_0`, `1E+1` or Arabic-Indic
        # digits, which the page would then show as a number the customer never typed.
        loc = locale_for(language, locale)
        # A minus is understood, and refused below for what it is ("more than zero").
        if not _written_number(loc, signed=True).fullmatch(raw):
            raise AmountNotUnderstood(field="amount")
        number = Decimal(parse_decimal(raw, locale=loc, strict=True))
    except (NumberFormatError, ValueError, ArithmeticError):
        raise AmountNotUnderstood(field="amount") from None
    # Babel reads "Infinity", "NaN" and "1e99999999" as numbers; the last would take the
    # process minutes to make an integer of.
    if not number.is_finite() or number.copy_abs() > MAX_AMOUNT:
        raise AmountNotUnderstood(field="amount")
    if what == "monetary":
        try:
            amount = to_minor(number, currency)
        except LossyConversionError:
            raise _too_many_decimals(currency) from None
    elif what == "data":
        amount = _data_mb(number, values.get("data_unit") or "MB")
    elif number == number.to_integral_value():
        amount = int(number)
    else:
        raise ValidationFailed(N_("Give whole minutes, MB or messages."), field="amount")
    if not values["to"]:
        raise ValidationFailed(N_("This field is required."), field="to")
    return _within_the_ledger(giving.Gift(to=values["to"], usage_type=what, amount=amount))


def _data_mb(number: Decimal, unit: str) -> int:
    """Data given in GB or MB (`DATA_UNITS`), in whole MB, converted exactly: 1.5 GB is 1,536
    MB; 1.1 GB (1,126.4 MB) is refused rather than rounded."""
    per = DATA_UNITS.get(unit)
    if per is None:
        raise ValidationFailed(N_("Choose GB or MB."), field="data_unit")
    mb = number * per
    if mb != mb.to_integral_value():
        raise ValidationFailed(
            N_("Give data in whole MB, such as 1.5 GB or 500 MB (1 GB is 1,024 MB)."),
            field="amount",
        )
    return int(mb)


def _too_many_decimals(currency: str) -> ValidationFailed:
    """A number finer than the currency's minor unit (`1000.5` yen, `1.2505` dinars): said as
    such, not as a number the form does not understand."""
    places = minor_exponent(currency)
    if places == 0:
        return ValidationFailed(
            N_("Amounts in {currency} have no decimals: enter a whole number."),
            field="amount", currency=currency,
        )
    return ValidationFailed(
        N_("Amounts in {currency} have at most {places} decimals."),
        field="amount", currency=currency, places=places,
    )


def _within_the_ledger(gift: giving.Gift) -> giving.Gift:
    """An amount no account could ever hold is not one the form understands (the service
    would otherwise carry it, in ledger units, beyond what a ledger amount can be)."""
    if gift.amount * giving.PER_UNIT.get(gift.usage_type, 1) > MAX_AMOUNT:
        raise AmountNotUnderstood(field="amount")
    return gift


def per_transfer(terms: giving.Terms) -> dict[str, tuple[int | None, int, str]]:
    """Each kind's least and most per transfer, in ledger units with the unit, as the terms and
    the review show them: every limit `tmf654.service` refuses a transfer for, besides the count
    in 24 hours. The least is None when it is one minute, MB or message: units are given whole,
    so that is only "more than nothing" ("up to 500 min per transfer")."""

    def least(count: int, per: int) -> int | None:
        return count * per if count > 1 else None

    return {
        "monetary": (terms.min_amount, terms.max_amount, terms.currency),
        "voice": (least(terms.min_voice_minutes, 60), terms.max_voice_minutes * 60, "VOICE_S"),
        "data": (least(terms.min_data_mb, MB), terms.max_data_mb * MB, "DATA_B"),
        "sms": (None, terms.max_sms, "SMS"),
    }


def problem_texts(
    exc: SimchargeError, language: str, currency: str, locale: str | None = None
) -> tuple[str, dict[str, str]]:
    """The service's refusal as the page says it: fields renamed to the form's, and a money
    limit in money rather than in minor units."""
    summary, fields = error_texts(exc, language)
    places = minor_exponent(currency)
    if isinstance(exc, AmountNotUnderstood) and (locale is not None or places != 2):
        # Its examples as the page writes numbers, when not as its language's own: a Mexican
        # reader is not told Spain's "5,50", which the form would refuse from them. And in the
        # currency's decimals: yen are not written "5.50", dinars are written "5.500".
        example = Decimal(500) if places == 0 else from_minor(55 * 10 ** (places - 1), currency)
        summary = translate(
            language, N_("Enter the amount as a number, such as {whole} or {example}.")
        ).format(whole=_number(Decimal(5), language, locale),
                 example=_number(example, language, locale))
        fields = {"amount": summary}
    elif isinstance(exc, TransferLimitExceeded) and {"low", "high"} <= exc.params.keys():
        loc = locale_for(language, locale)
        summary = translate(language, N_("Give between {low} and {high} of credit at a time.")).format(
            low=format_money(int(exc.params["low"]), currency, loc),
            high=format_money(int(exc.params["high"]), currency, loc),
        )
        fields = {"amount": summary}
    elif isinstance(exc, TransferLimitExceeded) and exc.detail_template in _UNIT_LIMITS:
        unit, per, said = _UNIT_LIMITS[exc.detail_template]
        summary = translate(language, said).format(
            amount=units_text(language, int(exc.params["limit"]) * per, unit, locale))
        fields = {"amount": summary}
    return summary, {_FIELDS.get(k, k): v for k, v in fields.items()}


async def _form(
    request: Request, page: Visitor, db: DB, settings: AppSettings, line_id: uuid.UUID, *,
    status: int = 200, values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
    error: str | None = None, done: str | None = None,
) -> Response:
    account_id = require(page)
    now = utcnow()
    async with db.read() as s:
        line = await accounts.own_line(s, account_id, line_id)
        balances = await line_balances(s, line, now=now)
        terms = await giving.terms_of(s, settings, line, now)
        history = await giving.given_from(s, line, limit=10)
    held = {u.unit: u.remaining for u in balances.units if u.remaining > 0}
    options = [("monetary", balances.wallet.available, line.currency)] + [
        (what, held[unit], unit) for what, unit in USAGE_UNITS.items() if unit in held
    ]
    given = next((a for a, _ in history if str(a.id) == done), None) if done else None
    return render(
        request, page, "transfer.html", status=status, line=line, balances=balances,
        terms=terms, limits=per_transfer(terms), options=options, history=history,
        what_names=WHAT, data_units=list(DATA_UNITS),
        fee_percent=_percent(terms.fee_percent, page.language, page.locale),
        # The hint's example as the page writes numbers, with the currency's decimals (`5` yen,
        # `5.00` dollars, `5.000` dinars).
        amount_example=_number(from_minor(5 * 10 ** minor_exponent(line.currency), line.currency),
                               page.language, page.locale),
        values=values or {"what": "monetary"}, errors=errors or {}, error=error,
        given=given, given_to=next((r for a, r in history if a is given), None),
    )


def _number(value: Decimal, language: str, locale: str | None) -> str:
    """An example amount as the page writes it (`5`, `5.50`, `5,50`, `5.000`): with as many
    decimals as `value` has."""
    exponent = value.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    pattern = "#,##0" + ("." + "0" * places if places else "")
    return str(format_decimal(value, pattern, locale=locale_for(language, locale)))


def _percent(value: Decimal, language: str, locale: str | None) -> str:
    return percent_text(value / 100, locale_for(language, locale))


@router.get("/account/lines/{line_id}/transfer")
async def transfer_form(
    line_id: str, request: Request, page: Page, db: DB, settings: AppSettings, done: str = "",
) -> Response:
    values = _values(request.query_params) if request.query_params.get("what") else None
    return await _form(request, page, db, settings, _uuid(line_id, "line_id"), values=values,
                       done=done or None)


@router.get("/account/lines/{line_id}/transfer/review")
async def transfer_review(
    line_id: str, request: Request, page: Page, db: DB, settings: AppSettings
) -> Response:
    """What would be given and the fee, before the customer confirms."""
    return await _review(request, page, db, settings, _uuid(line_id, "line_id"),
                         _values(request.query_params))


async def _review(
    request: Request, page: Visitor, db: DB, settings: AppSettings, lid: uuid.UUID,
    values: dict[str, str], *, notice: str | None = None, status: int = 200,
) -> Response:
    """The review page (`notice`: why it is shown again instead of giving)."""
    account_id = require(page)
    async with db.read() as s:
        line = await accounts.own_line(s, account_id, lid)
        terms = await giving.terms_of(s, settings, line, utcnow())
        try:
            gift = _gift(values, line.currency, page.language, page.locale)
            seen = await giving.preview(s, settings, account_id=account_id, line_id=lid,
                                        gift=gift)
        except SimchargeError as exc:
            failed: SimchargeError | None = exc
        else:
            failed = None
    if failed is not None:
        summary, errors = problem_texts(failed, page.language, line.currency, page.locale)
        return await _form(request, page, db, settings, lid, status=failed.status,
                           values=values, errors=errors, error=summary)
    return render(
        request, page, "transfer_review.html", seen=seen, gift=gift, values=values,
        what_name=WHAT[gift.usage_type], idempotency_key=uuid.uuid4().hex,
        terms=terms, limit=per_transfer(terms)[gift.usage_type],
        back=f"/account/lines/{lid}/transfer?" + urlencode(values), notice=notice,
        status=status,
    )


@router.post("/account/lines/{line_id}/transfer")
async def transfer(
    line_id: str, request: Request, page: Page, db: DB, settings: AppSettings
) -> Response:
    """The transfer (the review's idempotency key makes a second click the same transfer)."""
    account_id = require(page)
    form = await form_of(request, page)
    lid = _uuid(line_id, "line_id")
    values = _values(form)
    key = form.get("idempotency_key", "")[:128] or uuid.uuid4().hex
    async with db.read() as s:
        currency = (await accounts.own_line(s, account_id, lid)).currency
    try:
        # The review's amount in the service's units: no number format to read again.
        units = form.get("units", "")
        gift = (
            _within_the_ledger(
                giving.Gift(to=values["to"], usage_type=values["what"], amount=int(units))
            )
            if units.isascii() and units.isdigit() and len(units) < 16
            else _gift(values, currency, page.language, page.locale)
        )
        # The fee the review showed: if it is no longer the fee, nothing is given and the
        # review is shown again with the fee now.
        shown = form.get("fee", "")
        fee = int(shown) if shown.isascii() and shown.isdigit() and len(shown) < 16 else None
        given = await db.run(
            lambda s: giving.give(s, settings, account_id=account_id, line_id=lid, gift=gift,
                                  key=key, fee=fee)
        )
    except ValidationFailed as exc:
        if exc.field != "transferCost.value":
            summary, errors = problem_texts(exc, page.language, currency, page.locale)
            return await _form(request, page, db, settings, lid, status=exc.status,
                               values=values, errors=errors, error=summary)
        notice = translate(
            page.language, N_("The fee changed since you looked: here it is now. Give now?")
        )
        return await _review(request, page, db, settings, lid, values, notice=notice,
                             status=409)
    except SimchargeError as exc:
        summary, errors = problem_texts(exc, page.language, currency, page.locale)
        return await _form(request, page, db, settings, lid, status=exc.status, values=values,
                           errors=errors, error=summary)
    return redirect(f"/account/lines/{lid}/transfer?done={given.action.id}")
