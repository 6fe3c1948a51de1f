"""Edges of the back office's reports, customer search, catalog editing and dead jobs, found in
review: each test states the requirement, and what was wrong before it was fixed."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import httpx
from sqlalchemy import select, update

from simcharge.accounts.models import Account
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.models import Attention, Refund, RefundState
from simcharge.worker.models import JobStatus, OutboxJob
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.backoffice.test_reports_ledger import (
    MONEY,
    Ledger,
    _credited,
    _refund,
    _taken_not_credited,
)
from tests.factories import create_account, create_line
from tests.orders.helpers import assert_ledger_balanced, new_payer, order_row, run_worker


async def _topups(client: httpx.AsyncClient, staff: Any) -> dict[str, dict[str, int]]:
    today = utcnow().date().isoformat()
    r = await client.get(
        "/api/v1/admin/reports/topups", headers=staff.auth, params={"from": today, "to": today}
    )
    assert r.status_code == 200, r.text
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(MONEY, 0))
    for row in r.json():
        for name in MONEY:
            totals[row["currency"]][name] += row[name]
    return totals


# --- the top-ups report ----------------------------------------------------------------------


async def test_put_on_the_balance_is_what_reached_the_wallet_after_a_partial_refund(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`applied_amount` ("Put on the balance") is what the ledger's `applied` transfer moved onto
    the wallet; the part refunded before is in `uncredited_amount` (taken, not credited, not on a
    balance) and `refunded`, so `net` and `uncredited_amount + applied_amount` (what `unapplied`
    received) stay right. Before: the gross payment (19.99 for 14.99 put on the balance)."""
    payer = await new_payer(db, settings)
    order = await _taken_not_credited(client, db, settings, payer, amount=1999)
    finance = await new_staff(db, settings, "finance")
    await _refund(client, finance, order, 500)
    await run_worker(app, db, settings)
    r = await client.post(
        f"/api/v1/admin/orders/{order['id']}/apply-to-wallet",
        headers=finance.auth,
        json={"note": "credit instead"},
    )
    assert r.status_code == 200, r.text
    usd = (await _topups(client, finance))["USD"]
    async with db.read() as s:
        _, on_wallets = await Ledger(s).transfers("applied", debit_key="unapplied:USD")
        unapplied = await Ledger(s).account("unapplied:USD")
    assert on_wallets == 1499
    # Round 15: the order taken that day stays `uncredited` (the ledger's `unapplied` transfer);
    # `applied` counts the `applied` transfer of the same day.
    assert (usd["applied"], usd["uncredited"], usd["refunded"]) == (1, 1, 500), usd
    assert usd["applied_amount"] == on_wallets, usd
    assert usd["uncredited_amount"] == unapplied["credits"] == 1999
    assert usd["net"] == 1499, usd


async def test_a_payment_whose_currency_was_not_named_counts_no_money(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A success naming its amount but not its currency posts nothing (`received_unapplied`
    needs both), so the report counts the order as taken and not credited with no money, as one
    whose amount was not named. Before: its amount was counted in the order's currency, and
    `net` exceeded what the clearing account holds."""
    payer = await new_payer(db, settings)
    order = await _taken_not_credited(client, db, settings, payer, amount=2000, currency=None)
    row = await order_row(db, order["id"])
    finance = await new_staff(db, settings, "finance")
    got = (await _topups(client, finance))["USD"]
    async with db.read() as s:
        unapplied = await Ledger(s).account("unapplied:USD")
        clearing = await Ledger(s).clearing("USD")
    assert (row.paid_amount, row.paid_currency) == (2000, None)
    assert got["uncredited"] == 0, got  # round 15: no ledger entry, in no row (flagged)
    assert got["uncredited_amount"] == unapplied["credits"] == 0, (got, unapplied)
    assert got["net"] == clearing.get("debits", 0) - clearing.get("credits", 0), got


# --- customer search -------------------------------------------------------------------------


async def _named(db: Database, settings: Settings, name: str) -> Any:
    payer = await new_payer(db, settings)

    async def set_name(s: Any) -> None:
        await s.execute(
            update(Account).where(Account.id == payer.account_id).values(display_name=name)
        )

    await db.run(set_name)
    return payer


async def _search(client: httpx.AsyncClient, staff: Any, q: str) -> list[str]:
    r = await client.get("/api/v1/admin/customers", params={"q": q}, headers=staff.auth)
    assert r.status_code == 200, r.text
    return [c["id"] for c in r.json()]


async def test_search_finds_a_name_with_sharp_s_typed_exactly(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The query and the columns are lowered alike (`str.lower`, SQL `lower()`), so a name
    with ß is found as typed, in any case. Before: the query was casefolded ("Weiß" → "weiss")
    and the column only lowered ("weiß"): never a match."""
    payer = await _named(db, settings, "Hans Weiß")
    agent = await new_staff(db, settings, "agent")
    assert await _search(client, agent, "Weiß") == [str(payer.account_id)]
    assert await _search(client, agent, "hans WEIß") == [str(payer.account_id)]


async def test_search_folds_the_case_of_accented_letters(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """"josé núñez" finds "JOSÉ NÚÑEZ" on both databases: on SQLite the columns are lowered by
    `unicode_lower` (Python's, registered on each connection). Before: SQLite's own `lower()`
    folds ASCII only ("josÉ nÚÑez"), so a name was found only in the case of its accents."""
    payer = await _named(db, settings, "JOSÉ NÚÑEZ")
    agent = await new_staff(db, settings, "agent")
    assert await _search(client, agent, "josé núñez") == [str(payer.account_id)]


async def test_search_finds_an_msisdn_typed_in_full_width_digits(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The query is NFKC-normalised and any script's digits read as ASCII, so the full-width
    "＋１４１５…" of a CJK input method finds the line. Before: those characters were LIKEd as
    they were against ASCII digits and found nobody."""
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    wide = payer.line.msisdn.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789+"})
    assert await _search(client, agent, wide) == [str(payer.account_id)]


async def test_search_finds_a_line_by_its_number_in_national_format_or_with_00(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A number typed as the customer says it — national form with its trunk 0 ("07911 123456")
    or with an international prefix ("0044 7911 123456") — finds the line +44 7911 123456: `00`
    is read as `+` and a national number is also searched without its trunk 0. Before: only
    spaces, dots, dashes and brackets were stripped and those forms found nobody."""
    tail = f"{uuid.uuid4().int % 10**6:06d}"

    async def make(s: Any) -> Any:
        account = await create_account(s, username=f"uk{tail}")
        await create_line(s, msisdn=f"+447911{tail}", account_id=account.id)
        return account.id

    account_id = await db.run(make)
    agent = await new_staff(db, settings, "agent")
    for typed in (f"07911 {tail}", f"0044 7911 {tail}", f"+44 7911 {tail}"):
        assert await _search(client, agent, typed) == [str(account_id)], typed


# --- catalog editing -------------------------------------------------------------------------


async def test_a_tariff_increment_too_large_is_a_form_error_not_a_500(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A rounding increment is at most 3600 s (voice) or 1024 MB (data), refused like any other
    invalid entry (422 `catalog-invalid`, nothing stored); the bounds themselves are taken.
    Before: no upper bound — 1e20 s overflowed the 64-bit `first_increment` column (a 500 on
    PostgreSQL, OverflowError on SQLite) and 3,000,000,000 s (95 years a call) was stored."""
    admin = await new_staff(db, settings, "admin")
    catalog = (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()

    async def put(service: str, rounding: str) -> httpx.Response:
        tariff = next(t for t in catalog["tariffs"] if t["service"] == service)
        code = f"{tariff['service']}.{tariff['zone']}.{tariff['currency']}"
        body = {**tariff, "rounding": rounding}
        return await client.put(
            f"/api/v1/admin/catalog/tariffs/{code}", headers=admin.auth, json=body
        )

    for service, rounding in (
        ("voice", "100000000000000000000s/60s"),
        ("voice", "3000000000s"),
        ("voice", "60/3601"),
        ("voice", "9" * 5000),
        ("data", "1025MB"),
    ):
        r = await put(service, rounding)
        assert r.status_code == 422, (rounding, r.status_code, r.text[:300])
        assert r.json()["type"] == "/problems/catalog-invalid"
    for service, rounding in (("voice", "3600s/60s"), ("data", "1024MB")):
        r = await put(service, rounding)
        assert r.status_code == 200, (rounding, r.status_code, r.text[:300])
        catalog = (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()


async def test_a_deeply_nested_catalog_edit_is_a_form_error_not_a_500(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Text nested deeper than Python's recursion limit (50,000 "[", within the form's 100,000
    characters) is "not valid JSON" (422, nothing saved). Before: `RecursionError` was not
    caught with `ValueError` and the catalog page answered 500."""
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    r = await client.post(
        "/backoffice/catalog/plans/starter-10", data={"csrf": csrf, "text": "[" * 50_000}
    )
    assert r.status_code == 422, (r.status_code, r.text[:200])
    assert "Nothing was saved" in r.text


# --- dead jobs -------------------------------------------------------------------------------


async def test_discarding_a_dead_refund_job_voids_the_refund_and_flags_the_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Discarding a dead `payments.refund` job whose refund is pending settles the refund in
    the same transaction as a provider's refusal does (`complete_refund`): its pending transfers
    voided (money and units no longer held, all of it refundable again), the refund `failed`,
    the order flagged `refund_failed` in the attention list, the audit entry naming the refund.
    Before: the job was closed and nothing else — the refund pending for ever, its transfers
    holding money and units, and nothing in the back office showing it."""
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="starter-10")
    finance = await new_staff(db, settings, "finance")
    await _refund(client, finance, order, 400)

    async def bury(s: Any) -> Any:
        job = (
            await s.execute(select(OutboxJob).where(OutboxJob.kind == "payments.refund"))
        ).scalar_one()
        job.status, job.attempts, job.last_error = JobStatus.dead.value, 10, "HTTP 503"
        return job.id

    job_id = await db.run(bury)
    admin = await new_staff(db, settings, "admin")
    r = await client.post(
        f"/api/v1/admin/jobs/{job_id}/discard", headers=admin.auth, json={"note": "settled"}
    )
    assert r.status_code == 200, r.text
    async with db.read() as s:
        refund = (await s.execute(select(Refund))).scalar_one()
        clearing = await Ledger(s).clearing("USD")
        audit = (
            await s.execute(select(AuditEntry).where(AuditEntry.target_id == str(job_id)))
        ).scalar_one()
    assert refund.state == RefundState.failed.value
    assert clearing.get("credits_pending", 0) == 0, clearing
    row = await order_row(db, order["id"])
    assert row.attention == Attention.refund_failed.value
    assert row.attention_note and refund.reference in row.attention_note
    assert "discarded" in row.attention_note and "settled" in row.attention_note
    assert (audit.details or {}).get("refund") == refund.reference, audit.details
    r = await client.get("/api/v1/admin/attention", headers=finance.auth)
    assert order["id"] in [o["id"] for o in r.json()]
    # Nothing held any more: the whole order can be refunded again.
    await _refund(client, finance, order, None)
    await assert_ledger_balanced(db)
