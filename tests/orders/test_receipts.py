"""Receipts: numbered without gaps, a PDF in the payer's language with its glyphs, JSON too."""

from __future__ import annotations

import io
import logging
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy import update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from simcharge.orders.models import Order
from simcharge.orders.receipts import ReceiptFacts, needs_cjk_font, render_pdf
from simcharge.orders.service import issue_receipt_number
from tests.auth.helpers import problem
from tests.conftest import SmtpInbox
from tests.orders.helpers import new_payer, order_row, pay_at_sandbox, place, run_worker


async def _paid(client: httpx.AsyncClient, settings: Settings, payer: Any, **kw: Any) -> dict[str, Any]:
    """A credited order whose receipt has been issued (asking for it issues it)."""
    order = await place(client, payer, **kw)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled"
    receipt = await client.get(f"/api/v1/orders/{order['id']}/receipt",
                               headers={**payer.auth, "Accept": "application/json"})
    assert receipt.status_code == 200
    r = await client.get(f"/api/v1/orders/{order['id']}", headers=payer.auth)
    assert r.json()["receipt_number"] == receipt.json()["number"]
    return r.json()


def _text(pdf: bytes) -> str:
    """The text a reader copies out of the PDF (through the font's ToUnicode map).

    fpdf2 writes a CID-keyed CFF font with its own encoding CMap of two-byte codes; pypdf
    reads those codes a byte at a time, so every character comes out after a NUL (poppler's
    `pdftotext` reads them right). The NULs are dropped; the characters are pypdf's."""
    pages = PdfReader(io.BytesIO(pdf)).pages
    return "\n".join(page.extract_text() for page in pages).replace("\x00", "")


def _embedded_fonts(pdf: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(pdf))
    fonts = reader.pages[0]["/Resources"]["/Font"]
    names = []
    for ref in fonts.values():
        font = ref.get_object()
        for descendant in font.get("/DescendantFonts", []):
            descriptor = descendant.get_object()["/FontDescriptor"].get_object()
            if any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3")):
                names.append(str(descriptor["/FontName"]))
    return names


async def test_receipt_numbers_follow_each_other(client: httpx.AsyncClient, db: Database,
                                                 settings: Settings) -> None:
    payer = await new_payer(db, settings)
    orders = [await _paid(client, settings, payer) for _ in range(3)]
    numbers = [o["receipt_number"] for o in orders]
    year = numbers[0][1:5]
    assert all(n.startswith(f"R{year}-") for n in numbers)
    seq = [int(n.rsplit("-", 1)[1]) for n in numbers]
    assert seq == [seq[0], seq[0] + 1, seq[0] + 2]
    # Asking again changes nothing: a receipt is numbered once.
    again = await client.get(f"/api/v1/orders/{orders[0]['id']}/receipt",
                             headers={**payer.auth, "Accept": "application/json"})
    assert again.json()["number"] == numbers[0]



async def test_the_receipt_prints_the_order_reference_in_fours(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, settings, payer)
    r = await client.get(f"/api/v1/orders/{order['id']}/receipt", headers=payer.auth)
    assert r.headers["content-type"] == "application/pdf"
    reference = order["reference"]
    assert len(reference) == 28
    fours = " ".join(reference[i : i + 4] for i in range(0, 28, 4))
    assert fours in _text(r.content)


async def test_receipt_numbers_start_again_each_year(client: httpx.AsyncClient, db: Database,
                                                    settings: Settings) -> None:
    """Numbered per year of issue (the moment the number is taken, `receipt_issued_at`): the
    first receipt issued in a new year is `R<year>-000001`, whatever year the order was credited
    in, and the old year's counter goes on where it was for one issued that year."""
    payer = await new_payer(db, settings)
    first = await _paid(client, settings, payer)
    year = int(first["receipt_number"][1:5])
    # Two more orders credited, not yet numbered.
    later = [await _paid(client, settings, payer) for _ in range(2)]
    ids = [uuid.UUID(o["id"]) for o in later]
    await db.run(lambda s: s.execute(update(Order).where(Order.id.in_(ids))
                                     .values(receipt_number=None, receipt_issued_at=None)))
    new_year = datetime(year + 1, 1, 1, 0, 0, 5, tzinfo=UTC)
    try:
        clock.freeze(new_year)  # the first is issued on New Year's Day
        in_new_year = await db.run(lambda s: issue_receipt_number(s, ids[0]))
        clock.freeze(datetime(year, 12, 31, 23, 59, 0, tzinfo=UTC))  # the other the year before
        in_old_year = await db.run(lambda s: issue_receipt_number(s, ids[1]))
    finally:
        clock.unfreeze()
    assert in_new_year == f"R{year + 1}-000001"
    assert in_old_year == f"R{year}-{int(later[1]['receipt_number'].rsplit('-', 1)[1]) + 1:06d}"
    assert (await order_row(db, str(ids[0]))).receipt_issued_at == new_year


async def test_a_chinese_receipt_has_its_glyphs(client: httpx.AsyncClient, db: Database,
                                                settings: Settings,
                                                caplog: pytest.LogCaptureFixture) -> None:
    payer = await new_payer(db, settings, language="zh-Hans")
    order = await _paid(client, settings, payer, plan="starter-10")
    # In the account's language, whatever the browser says; `?lang=` asks for another.
    r = await client.get(f"/api/v1/orders/{order['id']}/receipt",
                         headers={**payer.auth, "Accept-Language": "en-US"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == (
        f'inline; filename="receipt-{order["receipt_number"]}.pdf"')
    text = _text(r.content)
    assert order["receipt_number"] in text
    assert "入门套餐" in text
    assert payer.line.msisdn in text
    assert "收据" in text
    assert any("NotoSansCJK" in name for name in _embedded_fonts(r.content))
    assert len(r.content) < 200_000  # a subset of the font, not all of it

    with caplog.at_level(logging.WARNING, logger="fpdf"):
        english = await client.get(f"/api/v1/orders/{order['id']}/receipt?lang=en",
                                   headers=payer.auth)
    assert "Starter" in _text(english.content) and "Receipt" in _text(english.content)
    # English times have a narrow no-break space before AM/PM: printed, not a missing glyph.
    assert not [r for r in caplog.records if "missing the following glyphs" in r.getMessage()]
    # Nothing Chinese on it (the account's name is Latin): only the small Latin font.
    assert [n.split("+")[-1] for n in _embedded_fonts(english.content)] == ["DejaVuSansBook"]
    assert re.search(r"\d{1,2}:\d{2}\s[AP]M", _text(english.content))


def test_the_cjk_font_only_where_a_character_needs_it(
        caplog: pytest.LogCaptureFixture) -> None:
    facts = ReceiptFacts(
        language="fil", operator="simcharge", number="R2026-000001",
        issued_at=datetime(2026, 12, 5, 9, 30, tzinfo=UTC), order_reference="ORD-1",
        payer="María Santos", msisdn="+639171234567", plan="Manlalakbay",
        grants=["5 GB"], method="GCash", price="₱250.00", fee="₱0.00", total="₱250.00",
        status="Bayad",
    )
    assert not needs_cjk_font(["María Santos", "₱250.00", "Ελληνικά", "\u202f"])
    assert needs_cjk_font(["李小龙"])
    with caplog.at_level(logging.WARNING, logger="fpdf"):
        latin = render_pdf(facts)
        named = render_pdf(replace(facts, payer="李小龙"))
    assert not [r for r in caplog.records if "missing the following glyphs" in r.getMessage()]
    assert "₱250.00" in _text(latin) and "María Santos" in _text(latin)
    assert [n.split("+")[-1] for n in _embedded_fonts(latin)] == ["DejaVuSansBook"]
    # A customer's name in Chinese on a Filipino receipt: its glyphs from the CJK font.
    assert "李小龙" in _text(named) and "₱250.00" in _text(named)
    assert sorted(n.split("+")[-1] for n in _embedded_fonts(named)) == [
        "DejaVuSansBook", "NotoSansCJKSCRegular"]


def test_the_receipt_says_its_time_is_utc_in_every_language() -> None:
    """A receipt's time is in the operator's zone (UTC by default) and says so (a bare 18:30 read
    as Shanghai time would put a payment of 1 January 02:30 on the last day of the year before)."""
    facts = ReceiptFacts(
        language="en", operator="simcharge", number="R2026-000001",
        issued_at=datetime(2026, 12, 31, 18, 30, tzinfo=UTC), order_reference="ORD-1",
        payer="maria", msisdn="+639171234567", plan="Traveller", grants=["5 GB"],
        method="Card", price="$20.00", fee="$0.00", total="$20.00",
        status="Paid",
    )
    expected = {"en": "Dec 31, 2026, 6:30:00\u202fPM UTC", "es": "31 dic 2026, 18:30:00 UTC",
                "zh-Hans": "2026年12月31日 18:30:00 UTC"}
    for language, when in expected.items():
        assert when in _text(render_pdf(replace(facts, language=language))), language


def test_a_name_the_fonts_cannot_draw_is_printed_as_the_username() -> None:
    """Thai, Devanagari, Baybayin: neither DejaVu Sans nor Noto Sans CJK draws them, and fpdf2
    would leave the customer's field blank. The receipt names the account by its username."""
    from simcharge.accounts.models import Account
    from simcharge.orders.receipts import _payer

    for name in ("สมชาย ใจดี", "राहुल", "ᜀᜈ"):
        assert _payer(Account(username="somchai", display_name=name)) == "somchai"
    for name in ("María Santos", "李小龙", "Ελένη"):
        assert _payer(Account(username="someone", display_name=name)) == name
    assert _payer(Account(username="someone", display_name=None)) == "someone"
    assert _payer(None) == "—"


async def test_the_receipt_as_json(client: httpx.AsyncClient, db: Database,
                                   settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, settings, payer, plan="traveller-20", method="paypal")
    r = await client.get(f"/api/v1/orders/{order['id']}/receipt",
                         headers={**payer.auth, "Accept": "application/json"})
    assert r.status_code == 200
    body = r.json()
    assert body["number"] == order["receipt_number"]
    assert body["total"]["minor"] == 2119 and body["fee"]["minor"] == 119
    assert body["plan"] == "Traveller"
    assert body["status"] == "Paid"
    assert body["pdf_url"].endswith(f"/orders/{order['id']}/receipt")


async def test_no_receipt_before_payment(client: httpx.AsyncClient, db: Database,
                                         settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    r = await client.get(f"/api/v1/orders/{order['id']}/receipt", headers=payer.auth)
    assert r.status_code == 404
    assert problem(r)["type"].endswith("/receipt-not-ready")


async def test_a_payment_taken_and_not_credited_has_no_receipt_and_says_so(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Not "it has not been paid": the money arrived (another amount, say) and finance has it."""
    payer = await new_payer(db, settings, language="es")
    order = await place(client, payer)
    await db.run(lambda s: s.execute(update(Order).where(Order.id == uuid.UUID(order["id"])).values(
        state="paid", paid_at=datetime.now(UTC), paid_amount=1999, attention="amount_mismatch")))
    r = await client.get(f"/api/v1/orders/{order['id']}/receipt", headers=payer.auth)
    assert r.status_code == 409
    p = problem(r)
    assert p["type"].endswith("/receipt-awaits-credit")
    assert p["title"].startswith("Recibimos tu pago pero aún no lo hemos abonado")
    assert (await order_row(db, order["id"])).receipt_number is None


async def test_the_emailed_receipt_of_a_chinese_account_is_in_chinese(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    payer = await new_payer(db, settings, language="zh-Hans")
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, order)
    await run_worker(app, db, settings)  # the webhooks, then the receipt job
    [mail] = inbox.to(payer.email)
    [attachment] = list(mail.iter_attachments())
    pdf = attachment.get_content()
    text = _text(pdf)
    assert "收据" in text and "入门套餐" in text
    assert any("NotoSansCJK" in name for name in _embedded_fonts(pdf))
    # The receipt asked for later is the same document, in the same language.
    r = await client.get(f"/api/v1/orders/{order['id']}/receipt", headers=payer.auth)
    assert "收据" in _text(r.content)
