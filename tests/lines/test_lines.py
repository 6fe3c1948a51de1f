"""Lines: inventory import, money and units on a line, what it holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.errors import NotFound, ValidationFailed
from simcharge.kit.clock import clock
from simcharge.ledger import chart
from simcharge.lines.identifiers import luhn_check_digit, valid_activation_code, valid_iccid
from simcharge.lines.models import LineState
from simcharge.lines.service import (
    UnitGrant,
    credit_wallet,
    find_line_by_msisdn,
    get_line,
    grant_units,
    import_lines,
    line_balances,
    parse_inventory_csv,
)
from tests.factories import create_line, iccid_for, ledger_account, transfer_count

ICCID_1 = iccid_for("+14155557001")
ICCID_2 = iccid_for("+14155557002")
BAD_ICCID = ICCID_1[:-1] + str((int(ICCID_1[-1]) + 1) % 10)


def test_identifiers() -> None:
    body = "891004234814455936"
    assert valid_iccid(body + luhn_check_digit(body))
    assert not valid_iccid(body + str((int(luhn_check_digit(body)) + 1) % 10))
    assert not valid_iccid("1234567890123456789")
    assert valid_activation_code("LPA:1$smdp.example.com$04386-AGYFT-A74Y8-3F815")
    assert not valid_activation_code("https://example.com")


def test_csv_is_parsed_and_normalised() -> None:
    text = (
        "msisdn,iccid,activation_code,imsi\n"
        f"+1 (415) 555-7001,{ICCID_1},LPA:1$smdp.example.com$ABC-1,310150123456789\n"
        f"14155557002,{ICCID_2},,\n"
    )
    lines, errors = parse_inventory_csv(
        text.replace("14155557002", "+14155557002"), default_currency="USD"
    )
    assert errors == []
    assert [(n.msisdn, n.imsi, n.currency) for n in lines] == [
        ("+14155557001", "310150123456789", "USD"),
        ("+14155557002", None, "USD"),
    ]


def test_an_activation_code_longer_than_255_characters_is_a_bad_row() -> None:
    """SGP.22 bounds an activation code, and so does its column: one longer is an error on its
    line, never a failed import (PostgreSQL) or a value cut short."""
    longest = "LPA:1$smdp.example.com$AB-1$" + "x" * (255 - 28)
    assert len(longest) == 255
    for code, bad in ((longest, False), (longest + "x", True)):
        text = f"msisdn,iccid,activation_code\n+14155557031,{iccid_for('+14155557031')},{code}\n"
        parsed, errors = parse_inventory_csv(text, default_currency="USD")
        assert ([e.field for e in errors], len(parsed)) == (
            (["line 2: activation_code"], 0) if bad else ([], 1))


def test_csv_errors_name_the_line_and_column_and_keep_the_good_rows() -> None:
    text = (
        "msisdn,iccid,activation_code\n"
        f"+14155557001,{ICCID_1},\n"
        "not-a-number,89010000000000000000,\n"
        f"+14155557002,{BAD_ICCID},\n"
        f"+14155557003,{ICCID_2},http://x\n"
        f"+14155557001,{ICCID_2},\n"
    )
    lines, errors = parse_inventory_csv(text, default_currency="USD")
    assert [n.msisdn for n in lines] == ["+14155557001"]
    fields = [e.field for e in errors]
    assert fields == [
        "line 3: msisdn",
        "line 4: iccid",
        "line 5: activation_code",
        "line 6: msisdn",
        "line 6: iccid",
    ]
    assert "already appears on line 2" in errors[-2].detail.format(**errors[-2].params)
    assert "already appears on line 5" in errors[-1].detail.format(**errors[-1].params)


def test_csv_header_problems() -> None:
    _, errors = parse_inventory_csv("number,iccid\n", default_currency="USD")
    assert errors[0].field == "header" and "msisdn" in errors[0].params["columns"]
    _, errors = parse_inventory_csv("msisdn,iccid,colour\n", default_currency="USD")
    assert errors[0].params["columns"] == "colour"
    _, errors = parse_inventory_csv(
        f"msisdn,iccid,currency\n+14155557001,{ICCID_1},DOLLARS\n", default_currency="USD"
    )
    assert errors[0].field == "line 2: currency"


async def test_import_is_idempotent_and_refuses_clashes(session: AsyncSession) -> None:
    text = f"msisdn,iccid\n+14155557001,{ICCID_1}\n+14155557002,{ICCID_2}\n"
    parsed, _ = parse_inventory_csv(text, default_currency="USD")
    first = await import_lines(session, parsed)
    assert first.created == ["+14155557001", "+14155557002"] and not first.errors
    again = await import_lines(session, parsed)
    assert again.unchanged == ["+14155557001", "+14155557002"] and not again.created
    clash, _ = parse_inventory_csv(
        f"msisdn,iccid\n+14155557009,{ICCID_1}\n", default_currency="USD"
    )
    report = await import_lines(session, clash)
    assert report.created == []
    assert report.errors[0].field == "+14155557009: iccid"
    line = await find_line_by_msisdn(session, "+1 415 555 7001")
    assert line.state == LineState.available
    wallet = await ledger_account(session, line.wallet_account_id)
    assert (wallet.unit, wallet.line_id, wallet.debits_must_not_exceed_credits) == (
        "USD",
        line.id,
        True,
    )


async def test_lookups_fail_clearly(session: AsyncSession) -> None:
    with pytest.raises(ValidationFailed) as bad:
        await find_line_by_msisdn(session, "hello")
    assert bad.value.field == "msisdn"
    with pytest.raises(NotFound):
        await find_line_by_msisdn(session, "+14155559999")
    line = await create_line(session)
    with pytest.raises(NotFound):
        await get_line(session, line.wallet_account_id)


async def test_grants_and_balances(session: AsyncSession) -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    clock.freeze(now)
    line = await create_line(session)
    await credit_wallet(session, line, 1250, source="test:1")
    await grant_units(
        session,
        line,
        [UnitGrant("VOICE_S", 6000, 30), UnitGrant("DATA_B", 1024, 7, ("home",))],
        source="order:a",
    )
    await grant_units(session, line, [UnitGrant("VOICE_S", 600, 10)], source="order:b")
    balances = await line_balances(session, line)
    assert balances.wallet.available == 1250 and balances.wallet.currency == "USD"
    voice = next(u for u in balances.units if u.unit == "VOICE_S")
    assert voice.remaining == 6600
    # Soonest expiring first.
    assert [b.remaining for b in voice.buckets] == [600, 6000]
    assert voice.next_expiry == now + timedelta(days=10)
    data = next(u for u in balances.units if u.unit == "DATA_B")
    assert data.buckets[0].zones == ["home"]
    # An expired bucket no longer counts.
    later = await line_balances(session, line, now=now + timedelta(days=11))
    assert next(u for u in later.units if u.unit == "VOICE_S").remaining == 6000
    assert all(u.unit != "DATA_B" for u in later.units)


async def test_granting_the_same_source_twice_changes_nothing(session: AsyncSession) -> None:
    line = await create_line(session)
    grants = [UnitGrant("SMS", 20, 30)]
    ids = await grant_units(session, line, grants, source="order:x")
    count = await transfer_count(session)
    assert await grant_units(session, line, grants, source="order:x") == ids
    await credit_wallet(session, line, 500, source="order:x")
    await credit_wallet(session, line, 500, source="order:x")
    assert await transfer_count(session) == count + 1
    balances = await line_balances(session, line)
    assert balances.wallet.available == 500
    assert balances.units[0].remaining == 20
    issuance = await ledger_account(session, chart.issuance("SMS").id)
    assert issuance.debits_posted >= 20
