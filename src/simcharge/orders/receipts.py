"""Receipts: a PDF in the customer's language, with the glyphs of every language embedded.

The text font is DejaVu Sans (Bitstream Vera license, shipped with matplotlib): Latin, Greek,
Cyrillic and every currency sign we print (the peso sign ₱ included). Where a receipt holds a
character it lacks — Chinese text, a name in another script — Noto Sans CJK SC (SIL Open Font
License, shipped on PyPI by `mplfonts`) is added as the fallback that fpdf2 draws those
characters with; on a traditional Chinese receipt, Noto Sans TC (the same license, shipped by
`pylopdf-fonts-zh-tw`) comes first. fpdf2 embeds the subset of glyphs a receipt uses (about 10
kB, about 25 kB with Chinese text). The CJK font is loaded only for the receipts that need it,
and each font is used as a smaller common subset where that covers the receipt
(`receipt_fonts`). Receipts are rendered by the worker when an order is paid and kept
(`receipt_documents`).

A receipt and a credit note are the operator's documents, not the customer's page: their date is
written in the operator's time zone (`SIMCHARGE_OPERATOR_TIMEZONE`, the zone their numbers are
issued and their books closed in), never the customer's, and names it ("Dec 7, 2026, 4:00:00 AM
+0800 (Asia/Manila)"): a document kept and sent on, read by an accountant or a tax office
elsewhere, says the same instant to each. Its numbers and money are written in the payer's
regional format when they chose one (`accounts.format_locale`, `es_MX`: "$1,234.56"), as
their e-mails are; kept as first rendered.

A receipt is dated when it is issued — its number taken (`Order.receipt_issued_at`), by the
worker's job right after the credit or when first asked for — and prints the payment's date on a
line of its own ("Paid"): numbers and dates go in the same order, and a receipt issued in a new
year is numbered and dated in it. A credit note likewise (`Refund.credit_note_issued_at`), with
the refund's date ("Refunded"); a refund made at the provider reported before its payment is
issued when its money is posted.

A receipt never changes once issued: what it says depends on nothing a refund changes (no
refunded amount, no "refunded" status), and the PDF kept is the one served. A refund gets its own
document, a **credit note** (`C2026-000001`, numbered when the refund is done:
`service.issue_credit_note`), that names the receipt it corrects, what was refunded (of the price
and of the fee), and what was taken back from the line; rendered by the worker and kept
(`credit_note_documents`) the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

from fastapi import Response
from fpdf import FPDF
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.catalog.models import PaymentMethod
from simcharge.db import Database, table_of, upsert_insert
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import BABEL_LOCALES, chosen_format, pick_text
from simcharge.kit.moments import UTC_ZONE, moment_text
from simcharge.kit.money import format_money
from simcharge.kit.translations import N_, translate, translate_plural
from simcharge.kit.units import units_text
from simcharge.ledger.models import LedgerTransfer
from simcharge.orders.fulfilment import issue_receipt_number
from simcharge.orders.models import CreditNoteDocument, Order, ReceiptDocument, Refund
from simcharge.orders.receipt_fonts import drawable, fonts_for, needs_cjk_font
from simcharge.orders.refunds import applied_to_wallet
from simcharge.orders.service import applied_at, issue_credit_note

__all__ = [
    "CreditNoteAmounts",
    "CreditNoteFacts",
    "ReceiptAmounts",
    "ReceiptFacts",
    "credit_note_for",
    "needs_cjk_font",
    "paid_amounts",
    "receipt_for",
    "render_credit_note",
    "render_pdf",
]

FONT = "dejavu"
CJK_FONT = "noto"


@dataclass(frozen=True, slots=True)
class ReceiptFacts:
    """Everything a receipt says, already chosen for one language."""

    language: str
    operator: str
    number: str
    issued_at: datetime
    """The receipt's date: when it was issued (numbered: `Order.receipt_issued_at`)."""
    order_reference: str
    payer: str
    msisdn: str
    plan: str
    grants: list[str]
    method: str
    price: str
    fee: str
    total: str
    status: str
    zone: str = UTC_ZONE
    """The operator's time zone (IANA name) the date is written in, and named."""
    locale: str | None = None
    """The payer's regional format (`es_MX`), else None: the language's own."""
    paid_at: datetime | None = None
    """When it was paid, printed beside the receipt's date (`Paid`): a receipt is issued after
    its payment — seconds after, or a year after when first asked for then."""


@dataclass(frozen=True, slots=True)
class ReceiptAmounts:
    """What a receipt says was paid, in minor units of `currency` (the JSON receipt's amounts;
    the PDF's, formatted)."""

    currency: str
    price: int
    fee: int
    total: int
    refunded: int


async def paid_amounts(session: AsyncSession, order: Order) -> ReceiptAmounts:
    """The order's price, fee and total — or, for a payment finance put on the line's balance
    (`applied_at`), what was paid, no fee kept, in the currency paid."""
    if await applied_at(session, order) is None:
        return ReceiptAmounts(
            order.currency, order.price, order.fee, order.total, order.refunded_amount
        )
    paid = int(order.paid_amount or await applied_to_wallet(session, order))
    return ReceiptAmounts(
        order.paid_currency or order.currency, paid, 0, paid, order.refunded_amount
    )


def _units(language: str, grant: dict[str, object], regional: str | None = None) -> str:
    text = units_text(language, int(str(grant["amount"])), str(grant["unit"]), regional)
    days = grant.get("validity_days")
    if days:
        text += " · " + translate_plural(
            language, "valid {days} day", "valid {days} days", int(str(days))
        ).format(days=days)
    return text


async def facts(
    session: AsyncSession, order: Order, language: str, operator: str, zone: str = UTC_ZONE
) -> ReceiptFacts:
    """What the receipt says, in `language`, dated in the operator's `zone`."""
    account = await session.get(Account, order.account_id)
    method = (
        await session.execute(select(PaymentMethod).where(PaymentMethod.code == order.method_code))
    ).scalar_one_or_none()
    regional = _regional(language, account)
    locale = regional or BABEL_LOCALES.get(language, "en")
    snapshot = order.plan_snapshot
    grants = [_units(language, g, regional) for g in snapshot.get("buckets", [])]
    for currency, amount in snapshot.get("wallet_credit", {}).items():
        grants.append(
            translate(language, N_("{amount} of credit")).format(
                amount=format_money(int(amount), currency, locale)
            )
        )
    if snapshot.get("validity_days"):
        grants.append(
            translate_plural(
                language,
                "line valid {days} more day",
                "line valid {days} more days",
                int(snapshot["validity_days"]),
            ).format(days=snapshot["validity_days"])
        )
    applied = await applied_at(session, order)
    if applied is not None:
        return await _applied_facts(session, order, language, operator, applied, zone)
    return ReceiptFacts(
        language=language,
        operator=operator,
        number=order.receipt_number or "—",
        issued_at=order.receipt_issued_at or order.fulfilled_at or order.paid_at or order.created_at,
        paid_at=order.paid_at or order.fulfilled_at or order.created_at,
        zone=zone,
        locale=regional,
        order_reference=order.reference,
        payer=_payer(account),
        msisdn=order.msisdn,
        plan=pick_text(snapshot.get("names", {}), language) or order.plan_code,
        grants=grants,
        method=pick_text(method.names, language) if method else order.method_code,
        price=format_money(order.price, order.currency, locale),
        fee=format_money(order.fee, order.currency, locale),
        total=format_money(order.total, order.currency, locale),
        # As issued: a refund since is the credit note's to say, not the receipt's.
        status=translate(language, N_("Paid")),
    )


async def _applied_facts(
    session: AsyncSession,
    order: Order,
    language: str,
    operator: str,
    applied: datetime,
    zone: str,
) -> ReceiptFacts:
    """The receipt of a payment finance put on the line's balance, the package not credited:
    what was paid, all of it now the payer's credit (no fee kept)."""
    account = await session.get(Account, order.account_id)
    method = (
        await session.execute(select(PaymentMethod).where(PaymentMethod.code == order.method_code))
    ).scalar_one_or_none()
    regional = _regional(language, account)
    locale = regional or BABEL_LOCALES.get(language, "en")
    money = await paid_amounts(session, order)
    currency = money.currency
    amount = await applied_to_wallet(session, order)
    paid = format_money(money.total, currency, locale)
    return ReceiptFacts(
        language=language,
        operator=operator,
        number=order.receipt_number or "—",
        issued_at=order.receipt_issued_at or applied,
        paid_at=order.paid_at or applied,
        zone=zone,
        locale=regional,
        order_reference=order.reference,
        payer=_payer(account),
        msisdn=order.msisdn,
        plan=pick_text(order.plan_snapshot.get("names", {}), language) or order.plan_code,
        grants=[
            translate(language, N_("{amount} put on the line's balance")).format(
                amount=format_money(amount, currency, locale)
            )
        ],
        method=pick_text(method.names, language) if method else order.method_code,
        price=paid,
        fee=format_money(money.fee, currency, locale),
        total=paid,
        status=translate(language, N_("Put on the balance")),
    )


def _payer(account: Account | None) -> str:
    """The customer's name as the receipt prints it: their display name, or their username when
    the fonts cannot draw the name (blank), or draw it only backwards (Hebrew, Arabic)."""
    if account is None:
        return "—"
    name = account.display_name or account.username
    return name if drawable(name) else account.username



def in_groups(reference: str, size: int = 4) -> str:
    """An order's reference in groups of four, as the portal shows it and as one reads it out
    to customer service (the back office's search takes it with or without the spaces)."""
    return " ".join(reference[i : i + size] for i in range(0, len(reference), size))


def render_pdf(f: ReceiptFacts) -> bytes:
    """A one-page A4 receipt."""

    def t(message: str) -> str:
        return translate(f.language, message)

    label = t(N_("Receipt"))  # (not inside the f-string, where pybabel would not find it)
    title = f"{label} {f.number}"
    date = document_date(f.language, f.issued_at, f.zone, f.locale)
    rows = [
        (t(N_("Date")), date),
        *_dated(t(N_("Paid")), f.paid_at, f),
        (t(N_("Order")), in_groups(f.order_reference)),
        (t(N_("Customer")), f.payer),
        (t(N_("Line")), f.msisdn),
        (t(N_("Package")), f.plan),
        (t(N_("Payment method")), f.method),
        (t(N_("Status")), f.status),
        (t(N_("Includes")), "\n".join(f.grants) or "—"),
    ]
    amounts = [(t(N_("Price")), f.price), (t(N_("Payment fee")), f.fee)]
    total = (t(N_("Total paid")), f.total)
    thanks = t(N_("Thank you for your purchase. Keep this receipt as proof of payment."))
    return _render(f.language, f.operator, title, rows, amounts, total, thanks)


def _dated(
    label: str, when: datetime | None, f: ReceiptFacts | CreditNoteFacts
) -> list[tuple[str, str]]:
    """The row of the date a document's money moved (paid, refunded), written as its own date
    is. Printed always, not only when it falls on another day than the document's: every
    receipt reads the same, and its reader never wonders whether a missing line means the
    same day."""
    if when is None:
        return []
    return [(label, document_date(f.language, when, f.zone, f.locale))]


def _regional(language: str, account: Account | None) -> str | None:
    return chosen_format(language, account.format_locale if account is not None else None)


def document_date(language: str, when: datetime, zone: str, locale: str | None) -> str:
    """A document's date in the operator's zone, named by its IANA name after Babel's short
    name or offset: "+0800" alone does not say whose day it is."""
    text = moment_text(language, when, locale, zone)
    return text if zone == UTC_ZONE else f"{text} ({zone})"


def _render(
    language: str,
    operator: str,
    title: str,
    rows: list[tuple[str, str]],
    amounts: list[tuple[str, str]],
    total: tuple[str, str],
    footer: str,
) -> bytes:
    """One A4 page: the operator, the title, the facts, the amounts and their total, a footer
    (a receipt's and a credit note's layout)."""
    pdf = FPDF(format="A4")
    pdf.set_title(title)
    pdf.set_author(operator)
    pdf.add_page()
    texts = [operator, title, footer, *(x for pair in (*rows, *amounts, total) for x in pair)]
    text_font, cjk_fonts = fonts_for(texts, language)
    pdf.add_font(FONT, fname=str(text_font))
    for i, cjk_font in enumerate(cjk_fonts):
        pdf.add_font(f"{CJK_FONT}{i}", fname=str(cjk_font))
    if cjk_fonts:
        pdf.set_fallback_fonts([f"{CJK_FONT}{i}" for i in range(len(cjk_fonts))])
    pdf.set_font(FONT, size=20)
    pdf.set_text_color(11, 110, 79)
    # Wrapped, as every value is: an operator's full legal name can be wider than the page.
    pdf.multi_cell(0, 12, operator, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(27, 39, 51)
    pdf.set_font(FONT, size=15)
    pdf.multi_cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font(FONT, size=11)
    for i, (label, value) in enumerate(rows):
        if i == len(rows) - 1:
            pdf.ln(2)
        pdf.cell(55, 8, label)
        pdf.multi_cell(0, 8, value, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_draw_color(200, 205, 210)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(3)
    for label, value in amounts:
        pdf.cell(140, 8, label)
        pdf.cell(0, 8, value, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, size=13)
    pdf.cell(140, 10, total[0])
    pdf.cell(0, 10, total[1], align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)
    pdf.set_font(FONT, size=10)
    pdf.set_text_color(91, 107, 122)
    pdf.multi_cell(0, 6, footer)
    return bytes(pdf.output())


AS_ISSUED = 0
"""`ReceiptDocument.revision` of a receipt rendered as issued (every one since credit notes)."""


async def stored_receipt(session: AsyncSession, order: Order, language: str) -> bytes | None:
    """The receipt kept in `language` — unless it was kept from before credit notes, rendered
    again after a refund (its revision the refunded amount): that one is not the receipt as
    issued, and is rendered again, as issued, once."""
    doc = await session.get(ReceiptDocument, (order.id, language))
    if doc is None or doc.revision != AS_ISSUED:
        return None
    return doc.pdf


async def store_receipt(
    session: AsyncSession, order_id: uuid.UUID, language: str, revision: int, pdf: bytes
) -> bytes:
    """Keep a rendered receipt, unless one as issued is kept already (rendered meanwhile by
    another process): that one stays, and is returned — a receipt's bytes never change."""
    table = table_of(ReceiptDocument)
    await session.execute(
        upsert_insert(session, table)
        .values(
            order_id=order_id,
            language=language,
            revision=revision,
            pdf=pdf,
            created_at=utcnow(),
        )
        .on_conflict_do_update(
            index_elements=["order_id", "language"],
            set_={"revision": revision, "pdf": pdf},
            where=table.c.revision != AS_ISSUED,
        )
    )
    kept = await session.execute(
        select(table.c.pdf).where(table.c.order_id == order_id, table.c.language == language)
    )
    return bytes(kept.scalar_one())


async def receipt_for(
    db: Database, order_id: uuid.UUID, language: str, operator: str, zone: str
) -> bytes | None:
    """The receipt of a credited order in `language`: the one kept, or a new one rendered (in a
    thread: it is CPU work) and kept; numbered first if it was not yet. None when the order has
    no receipt (not credited). `zone`: the operator's (`SIMCHARGE_OPERATOR_TIMEZONE`), the
    year of its number and the zone of its date."""
    if await db.run(lambda s: issue_receipt_number(s, order_id, zone=zone)) is None:
        return None
    async with db.read() as s:
        order = await s.get(Order, order_id)
        if order is None or order.receipt_number is None:
            return None
        pdf = await stored_receipt(s, order, language)
        if pdf is not None:
            return pdf
        content = await facts(s, order, language, operator, zone)
    pdf = await asyncio.to_thread(render_pdf, content)
    # Two rendering at once: the first kept wins, and both serve it (the same bytes ever after).
    return await db.run(lambda s: store_receipt(s, order_id, language, AS_ISSUED, pdf))


def filename(order: Order) -> str:
    return f"receipt-{order.receipt_number or order.reference}.pdf"


# Credit notes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditNoteAmounts:
    """What a refund gave back, in minor units of `currency`: of the price (the sale), of the
    payment fee (the fee's share, `refunds.money_back`), and all of it."""

    currency: str
    price: int
    fee: int
    total: int


@dataclass(frozen=True, slots=True)
class CreditNoteFacts:
    """Everything a credit note says, already chosen for one language."""

    language: str
    operator: str
    number: str
    issued_at: datetime
    """The credit note's date: when it was issued (numbered: `Refund.credit_note_issued_at`)."""
    receipt_number: str
    order_reference: str
    refund_reference: str
    payer: str
    msisdn: str
    plan: str
    method: str
    price: str
    fee: str
    total: str
    taken_back: list[str]
    """What the refund took back from the line (unused units and credit), as the reader writes
    it; empty: nothing (used already, or nothing was credited)."""
    zone: str = UTC_ZONE
    """The operator's time zone (IANA name) the date is written in, and named."""
    locale: str | None = None
    """The payer's regional format (`es_MX`), else None: the language's own."""
    refunded_at: datetime | None = None
    """When the refund was done (one made at the provider: when it was reported), printed
    beside the credit note's date (`Refunded`)."""


def refunded_amounts(order: Order, refund: Refund) -> CreditNoteAmounts:
    """The refund's money: the fee's share is what its ledger plan gave back from fees (none
    for a payment that was not credited: no fee was kept)."""
    fee = int((refund.plan or {}).get("fee", 0)) if order.fulfilled_at is not None else 0
    return CreditNoteAmounts(refund.currency, refund.amount - fee, fee, refund.amount)


async def taken_back(session: AsyncSession, refund: Refund) -> list[tuple[int, str]]:
    """What the refund took back from the line: its `clawback` transfers (amount, unit), in the
    order of its plan."""
    ids = [uuid.UUID(t) for t in (refund.plan or {}).get("transfers", [])]
    if not ids:
        return []
    rows = (
        await session.execute(
            select(LedgerTransfer).where(
                LedgerTransfer.id.in_(ids), LedgerTransfer.code == "clawback"
            )
        )
    ).scalars().all()
    by_id = {row.id: row for row in rows}
    return [(by_id[i].amount, by_id[i].unit) for i in ids if i in by_id and by_id[i].amount]


async def credit_note_facts(
    session: AsyncSession,
    order: Order,
    refund: Refund,
    language: str,
    operator: str,
    zone: str = UTC_ZONE,
) -> CreditNoteFacts:
    account = await session.get(Account, order.account_id)
    method = (
        await session.execute(select(PaymentMethod).where(PaymentMethod.code == order.method_code))
    ).scalar_one_or_none()
    regional = _regional(language, account)
    locale = regional or BABEL_LOCALES.get(language, "en")
    money = refunded_amounts(order, refund)
    return CreditNoteFacts(
        language=language,
        operator=operator,
        number=refund.credit_note_number or "—",
        issued_at=refund.credit_note_issued_at or refund.completed_at or refund.created_at,
        refunded_at=refund.completed_at or refund.created_at,
        zone=zone,
        receipt_number=order.receipt_number or "—",
        order_reference=order.reference,
        refund_reference=refund.reference,
        payer=_payer(account),
        msisdn=order.msisdn,
        plan=pick_text(order.plan_snapshot.get("names", {}), language) or order.plan_code,
        method=pick_text(method.names, language) if method else order.method_code,
        price=format_money(money.price, money.currency, locale),
        fee=format_money(money.fee, money.currency, locale),
        total=format_money(money.total, money.currency, locale),
        taken_back=[
            units_text(language, amount, unit, regional)
            for amount, unit in await taken_back(session, refund)
        ],
        locale=regional,
    )


def render_credit_note(f: CreditNoteFacts) -> bytes:
    """A one-page A4 credit note, laid out as the receipt it corrects."""

    def t(message: str) -> str:
        return translate(f.language, message)

    label = t(N_("Credit note"))  # (not inside the f-string, where pybabel would not find it)
    title = f"{label} {f.number}"
    date = document_date(f.language, f.issued_at, f.zone, f.locale)
    rows = [
        (t(N_("Date")), date),
        *_dated(t(N_("Refunded")), f.refunded_at, f),
        (t(N_("Corrects receipt")), f.receipt_number),
        (t(N_("Order")), in_groups(f.order_reference)),
        (t(N_("Refund")), f.refund_reference),
        (t(N_("Customer")), f.payer),
        (t(N_("Line")), f.msisdn),
        (t(N_("Package")), f.plan),
        (t(N_("Refunded to")), f.method),
        (t(N_("Taken back from the line")), "\n".join(f.taken_back) or "—"),
    ]
    amounts = [(t(N_("Of the price")), f.price), (t(N_("Of the payment fee")), f.fee)]
    total = (t(N_("Total refunded")), f.total)
    footer = t(
        N_(
            "This credit note corrects receipt {receipt}: the total above was refunded to your "
            "payment method. Keep it with the receipt."
        )
    ).format(receipt=f.receipt_number)
    return _render(f.language, f.operator, title, rows, amounts, total, footer)


async def credit_note_for(
    db: Database, refund_id: uuid.UUID, language: str, operator: str, zone: str
) -> bytes | None:
    """The credit note of a done refund in `language`: the one kept, or a new one rendered (in
    a thread) and kept — the first kept wins, so it never changes; numbered first if it was not
    yet. None when the refund has none (not done, or of an order never credited)."""
    if await db.run(lambda s: issue_credit_note(s, refund_id, utcnow(), zone=zone)) is None:
        return None
    async with db.read() as s:
        doc = await s.get(CreditNoteDocument, (refund_id, language))
        if doc is not None:
            return doc.pdf
        refund = await s.get(Refund, refund_id)
        assert refund is not None
        order = await s.get(Order, refund.order_id)
        assert order is not None
        content = await credit_note_facts(s, order, refund, language, operator, zone)
    pdf = await asyncio.to_thread(render_credit_note, content)
    return await db.run(lambda s: _store_credit_note(s, refund_id, language, pdf))


async def _store_credit_note(
    session: AsyncSession, refund_id: uuid.UUID, language: str, pdf: bytes
) -> bytes:
    table = table_of(CreditNoteDocument)
    await session.execute(
        upsert_insert(session, table)
        .values(refund_id=refund_id, language=language, pdf=pdf, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["refund_id", "language"])
    )
    kept = await session.execute(
        select(table.c.pdf).where(table.c.refund_id == refund_id, table.c.language == language)
    )
    return bytes(kept.scalar_one())


def credit_note_filename(refund: Refund) -> str:
    return f"credit-note-{refund.credit_note_number or refund.reference}.pdf"


def pdf_response(pdf: bytes, filename: str, headers: dict[str, str] | None = None) -> Response:
    """A receipt or credit note as the browser shows it: inline, named, never cached by anyone
    but the reader (it holds a name and an amount)."""
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            **(headers or {}),
            "content-disposition": f'inline; filename="{filename}"',
            "cache-control": "private, no-store",
        },
    )
