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
(`receipt_documents`); a refund deletes them and the next request renders them again.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

from fpdf import FPDF
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.catalog.models import PaymentMethod
from simcharge.db import Database, table_of, upsert_insert
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import BABEL_LOCALES, pick_text
from simcharge.kit.money import format_money
from simcharge.kit.translations import N_, translate, translate_plural
from simcharge.notifications.templates import environment
from simcharge.orders.fulfilment import issue_receipt_number
from simcharge.orders.models import Order, OrderState, ReceiptDocument
from simcharge.orders.receipt_fonts import drawable, fonts_for, needs_cjk_font
from simcharge.orders.refunds import applied_to_wallet
from simcharge.orders.service import applied_at

__all__ = ["ReceiptAmounts", "ReceiptFacts", "needs_cjk_font", "paid_amounts", "receipt_for", "render_pdf"]

FONT = "dejavu"
CJK_FONT = "noto"


@dataclass(frozen=True, slots=True)
class ReceiptFacts:
    """Everything a receipt says, already chosen for one language."""

    language: str
    operator: str
    number: str
    issued_at: datetime
    order_reference: str
    payer: str
    msisdn: str
    plan: str
    grants: list[str]
    method: str
    price: str
    fee: str
    total: str
    refunded: str | None
    status: str


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


def _units(language: str, grant: dict[str, object]) -> str:
    units = environment(language).filters["units"]
    text = str(units(grant["amount"], grant["unit"]))
    days = grant.get("validity_days")
    if days:
        text += " · " + translate_plural(
            language, "valid {days} day", "valid {days} days", int(str(days))
        ).format(days=days)
    return text


async def facts(session: AsyncSession, order: Order, language: str, operator: str) -> ReceiptFacts:
    account = await session.get(Account, order.account_id)
    method = (
        await session.execute(select(PaymentMethod).where(PaymentMethod.code == order.method_code))
    ).scalar_one_or_none()
    locale = BABEL_LOCALES.get(language, "en")
    snapshot = order.plan_snapshot
    grants = [_units(language, g) for g in snapshot.get("buckets", [])]
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
    status = {
        OrderState.refunded: N_("Refunded"),
        OrderState.partially_refunded: N_("Partly refunded"),
    }.get(OrderState(order.state), N_("Paid"))
    applied = await applied_at(session, order)
    if applied is not None:
        return await _applied_facts(session, order, language, operator, applied)
    return ReceiptFacts(
        language=language,
        operator=operator,
        number=order.receipt_number or "—",
        issued_at=order.fulfilled_at or order.paid_at or order.created_at,
        order_reference=order.reference,
        payer=_payer(account),
        msisdn=order.msisdn,
        plan=pick_text(snapshot.get("names", {}), language) or order.plan_code,
        grants=grants,
        method=pick_text(method.names, language) if method else order.method_code,
        price=format_money(order.price, order.currency, locale),
        fee=format_money(order.fee, order.currency, locale),
        total=format_money(order.total, order.currency, locale),
        refunded=format_money(order.refunded_amount, order.currency, locale)
        if order.refunded_amount
        else None,
        status=translate(language, status),
    )


async def _applied_facts(
    session: AsyncSession, order: Order, language: str, operator: str, applied: datetime
) -> ReceiptFacts:
    """The receipt of a payment finance put on the line's balance, the package not credited:
    what was paid, all of it now the payer's credit (no fee kept)."""
    account = await session.get(Account, order.account_id)
    method = (
        await session.execute(select(PaymentMethod).where(PaymentMethod.code == order.method_code))
    ).scalar_one_or_none()
    locale = BABEL_LOCALES.get(language, "en")
    money = await paid_amounts(session, order)
    currency = money.currency
    amount = await applied_to_wallet(session, order)
    paid = format_money(money.total, currency, locale)
    return ReceiptFacts(
        language=language,
        operator=operator,
        number=order.receipt_number or "—",
        issued_at=applied,
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
        refunded=format_money(order.refunded_amount, currency, locale)
        if order.refunded_amount
        else None,
        status=translate(language, N_("Put on the balance")),
    )


def _payer(account: Account | None) -> str:
    """The customer's name as the receipt prints it: their display name, or their username when
    the fonts cannot draw the name (blank), or draw it only backwards (Hebrew, Arabic)."""
    if account is None:
        return "—"
    name = account.display_name or account.username
    return name if drawable(name) else account.username


def render_pdf(f: ReceiptFacts) -> bytes:
    """A one-page A4 receipt."""

    def t(message: str) -> str:
        return translate(f.language, message)

    label = t(N_("Receipt"))  # (not inside the f-string, where pybabel would not find it)
    title = f"{label} {f.number}"
    date = str(environment(f.language).filters["datetime"](f.issued_at))
    rows = [
        (t(N_("Date")), date),
        (t(N_("Order")), f.order_reference),
        (t(N_("Customer")), f.payer),
        (t(N_("Line")), f.msisdn),
        (t(N_("Package")), f.plan),
        (t(N_("Payment method")), f.method),
        (t(N_("Status")), f.status),
        (t(N_("Includes")), "\n".join(f.grants) or "—"),
    ]
    amounts = [(t(N_("Price")), f.price), (t(N_("Payment fee")), f.fee)]
    if f.refunded:
        amounts.append((t(N_("Refunded")), f.refunded))
    total = (t(N_("Total paid")), f.total)
    thanks = t(N_("Thank you for your purchase. Keep this receipt as proof of payment."))

    pdf = FPDF(format="A4")
    pdf.set_title(title)
    pdf.set_author(f.operator)
    pdf.add_page()
    texts = [f.operator, title, thanks, *(x for pair in (*rows, *amounts, total) for x in pair)]
    text_font, cjk_fonts = fonts_for(texts, f.language)
    pdf.add_font(FONT, fname=str(text_font))
    for i, cjk_font in enumerate(cjk_fonts):
        pdf.add_font(f"{CJK_FONT}{i}", fname=str(cjk_font))
    if cjk_fonts:
        pdf.set_fallback_fonts([f"{CJK_FONT}{i}" for i in range(len(cjk_fonts))])
    pdf.set_font(FONT, size=20)
    pdf.set_text_color(11, 110, 79)
    # Wrapped, as every value is: an operator's full legal name can be wider than the page.
    pdf.multi_cell(0, 12, f.operator, new_x="LMARGIN", new_y="NEXT")
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
    pdf.multi_cell(0, 6, thanks)
    return bytes(pdf.output())


async def stored_receipt(session: AsyncSession, order: Order, language: str) -> bytes | None:
    doc = await session.get(ReceiptDocument, (order.id, language))
    if doc is None or doc.revision != order.refunded_amount:
        return None
    return doc.pdf


async def store_receipt(
    session: AsyncSession, order_id: uuid.UUID, language: str, revision: int, pdf: bytes
) -> None:
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
            index_elements=["order_id", "language"], set_={"revision": revision, "pdf": pdf}
        )
    )


async def receipt_for(
    db: Database, order_id: uuid.UUID, language: str, operator: str
) -> bytes | None:
    """The receipt of a credited order in `language`: the one kept, or a new one rendered (in a
    thread: it is CPU work) and kept; numbered first if it was not yet. None when the order has
    no receipt (not credited)."""
    if await db.run(lambda s: issue_receipt_number(s, order_id)) is None:
        return None
    async with db.read() as s:
        order = await s.get(Order, order_id)
        if order is None or order.receipt_number is None:
            return None
        pdf = await stored_receipt(s, order, language)
        if pdf is not None:
            return pdf
        content = await facts(s, order, language, operator)
        revision = order.refunded_amount
    pdf = await asyncio.to_thread(render_pdf, content)
    await db.run(lambda s: store_receipt(s, order_id, language, revision, pdf))
    return pdf


def filename(order: Order) -> str:
    return f"receipt-{order.receipt_number or order.reference}.pdf"
