"""The customer's records CSV says what its numbers are, and runs nothing (round 17).

What was wrong: `/account/records.csv` wrote money in minor units under a plain `amount` header
(500 for $5.00, read as five hundred dollars), where the back office's CSVs say `amount_minor`;
and its own cell guard let a cell starting with a line break through (`\\n=…`: a spreadsheet
may run what follows). Now the column is `amount_minor` (with `unit`: the currency, or `VOICE_S`,
`DATA_B`, `SMS`, their own smallest unit) and every cell but the number goes through the back
office's `csv_cell`.

Real databases (both); the ledger rows are posted as the charging path posts them.
"""

from __future__ import annotations

import csv
import io

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.ledger import chart
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from simcharge.portal.account import RECORDS_CSV_HEADER
from tests.portal.helpers import Customer, new_customer, sign_in

HEADER = ["time_utc", "number", "kind", "amount_minor", "unit", "shown", "reference"]

UNSAFE = ["\n=1+1", "\r+1+1", '=HYPERLINK("http://x.test")', "+1+1", "-1+cmd", "@SUM(A1)",
          "\tcmd"]
"""References a spreadsheet would run (or break a row at) if written as they are."""


async def _records(client: httpx.AsyncClient, **params: str) -> list[dict[str, str]]:
    r = await client.get("/account/records.csv", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text, newline="")))
    assert rows[0] == HEADER
    return [dict(zip(HEADER, row, strict=True)) for row in rows[1:]]


async def _usage(db: Database, customer: Customer, references: list[str]) -> None:
    """A usage transfer per reference, of 1, 2, 3… cents: each found again by its amount."""
    line = customer.line
    sink = chart.consumption("USD", chart.shard_of(line.id))

    async def post(s: AsyncSession) -> None:
        await ensure_accounts(s, [sink])
        await post_transfers(s, [
            NewTransfer(id=uuid7(), amount=n, unit="USD", debit_account_id=line.wallet_account_id,
                        credit_account_id=sink.id, code="usage", reference=reference)
            for n, reference in enumerate(references, start=1)
        ], now=utcnow())

    await db.run(post)


async def test_amounts_are_in_minor_units_under_a_header_that_says_so(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """$12.50 is 1250 under `amount_minor`, its currency in `unit`; units are their own
    smallest unit (seconds, bytes); `shown` is the amount as the page writes it."""
    assert RECORDS_CSV_HEADER == HEADER
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    [money] = await _records(client, kind="adjustment")
    assert (money["amount_minor"], money["unit"], money["shown"]) == ("1250", "USD", "$12.50")
    assert money["number"] == customer.line.msisdn  # E.164, written as is
    packages = {r["unit"]: r for r in await _records(client, kind="package")}
    assert set(packages) == {"VOICE_S", "DATA_B"}
    assert packages["VOICE_S"]["amount_minor"] == "6000"
    assert packages["DATA_B"]["amount_minor"] == str(2 * 1024**3)
    await _usage(db, customer, ["usage:call-1"])
    [usage] = await _records(client, kind="usage")
    # Taken from the line: negative, a plain number (not text a spreadsheet would run).
    assert (usage["amount_minor"], usage["unit"]) == ("-1", "USD")
    assert usage["shown"].startswith("'-")  # "-$0.01" is text, neutralised as before
    assert usage["reference"] == "usage:call-1"


async def test_a_cell_starting_with_a_formula_or_a_line_break_is_neutralised(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`\\n=`, `\\r+`, `=`, `+`, `-`, `@` and a tab at the start: prefixed with `'` (before, a
    leading `\\n` went through), the cell otherwise kept whole, one row each."""
    customer = await new_customer(db, settings)
    await _usage(db, customer, [*UNSAFE, "usage:call-2"])
    sign_in(client, customer)
    rows = await _records(client, kind="usage")
    by_amount = {int(r["amount_minor"]): r["reference"] for r in rows}
    assert len(rows) == len(UNSAFE) + 1  # a line break in a cell starts no row
    for n, reference in enumerate(UNSAFE, start=1):
        assert by_amount[-n] == "'" + reference, reference
    assert by_amount[-(len(UNSAFE) + 1)] == "usage:call-2"  # a safe cell is unchanged
