"""Sixteenth round, Help: the cap on open questions and the rate said beside the form (what was
typed kept), and an answer to a question closed meanwhile carried into a new question."""

from __future__ import annotations

import html
import re
import uuid

import httpx
import pytest
from sqlalchemy import select, update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.tickets.models import Ticket, TicketMessage
from tests.portal.helpers import csrf_of, new_customer, post_form, sign_in

pytestmark = pytest.mark.usefixtures("shop")


def _new_form(page: str) -> str:
    """The "Ask customer service" card: the refusal is said there, beside its form."""
    return page.split('id="h-new"')[1].split("</section>")[0]


async def _tickets(db: Database, account_id: uuid.UUID) -> list[Ticket]:
    async with db.read() as s:
        rows = await s.execute(select(Ticket).where(Ticket.account_id == account_id))
        return list(rows.scalars())


async def test_a_sixth_open_question_is_refused_beside_the_form_keeping_the_text(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, language="es")
    sign_in(client, customer)
    for n in range(5):
        r = await post_form(client, "/account/help", "/account/help",
                            {"subject": f"Pregunta {n}", "body": "¿Dónde están mis datos?"})
        assert r.status_code == 303
    r = await post_form(client, "/account/help", "/account/help", {
        "subject": "Otra más", "body": "Mi saldo <b>desapareció</b>", "line": str(customer.line.id)})
    assert r.status_code == 409
    assert '<html lang="es"' in r.text
    card = _new_form(r.text)
    assert 'class="alert bad" role="alert"' in card
    assert "5" in card.split('role="alert"')[1].split("</div>")[0]
    assert 'value="Otra más"' in card
    assert "Mi saldo &lt;b&gt;desapareció&lt;/b&gt;</textarea>" in card  # kept, escaped
    assert f'value="{customer.line.id}" selected' in card
    assert len(await _tickets(db, customer.account_id)) == 5


async def test_too_many_questions_and_answers_at_once_is_a_429_beside_the_form(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/help", "/account/help",
                        {"subject": "Roaming", "body": "Does my data work abroad?"})
    ticket = r.headers["location"].removesuffix("?sent=1")
    for n in range(9):
        r = await post_form(client, ticket, ticket + "/reply", {"body": f"And now? {n}"})
        assert r.status_code == 303
    r = await post_form(client, "/account/help", "/account/help",
                        {"subject": "Another", "body": "Typed with care"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    card = _new_form(r.text)
    assert "Too many attempts" in card and "Typed with care</textarea>" in card
    r = await post_form(client, ticket, ticket + "/reply", {"body": "One more answer"})
    assert r.status_code == 429 and "One more answer</textarea>" in r.text
    async with db.read() as s:
        count = len((await s.execute(select(TicketMessage))).scalars().all())
    assert count == 10  # the first message and nine answers


async def test_an_answer_to_a_closed_question_is_carried_into_a_new_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Closed while the customer was typing: the answer is not lost but carried into the new
    question's form, with the closed one's subject and line, for them to check and send."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/help", "/account/help", {
        "subject": "Data in Japan", "body": "Does it work?", "line": str(customer.line.id)})
    ticket = r.headers["location"].removesuffix("?sent=1")
    shown = await client.get(ticket)

    async def close(s: object) -> None:
        await s.execute(update(Ticket).values(status="closed"))  # type: ignore[attr-defined]

    await db.run(close)
    typed = "It stopped again in Osaka & Kyoto"
    r = await client.post(ticket + "/reply", data={"csrf": csrf_of(shown.text), "body": typed})
    assert r.status_code == 409
    card = _new_form(r.text)
    assert "This question is closed, so your answer was not sent." in card
    assert 'value="Data in Japan"' in card
    assert f"{html.escape(typed, quote=False)}</textarea>" in card
    assert f'value="{customer.line.id}" selected' in card
    async with db.read() as s:
        assert len((await s.execute(select(TicketMessage))).scalars().all()) == 1
    # sent as it is: a new question with the text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', card)
    assert key
    r = await client.post("/account/help", data={
        "csrf": csrf_of(r.text), "idempotency_key": key.group(1), "subject": "Data in Japan",
        "body": typed, "line": str(customer.line.id)})
    assert r.status_code == 303
    tickets = await _tickets(db, customer.account_id)
    assert len(tickets) == 2
    page = await client.get(ticket)
    assert 'href="/account/help#h-new">Ask a new question</a>' in page.text
    assert f'action="{ticket}/reply"' not in page.text


async def test_a_refused_answer_keeps_what_was_typed(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/help", "/account/help",
                        {"subject": "Roaming", "body": "Does my data work abroad?"})
    ticket = r.headers["location"].removesuffix("?sent=1")
    long = "x" * 10_001
    r = await post_form(client, ticket, ticket + "/reply", {"body": long})
    assert r.status_code == 422 and 'class="alert bad"' in r.text
    assert f"{long}</textarea>" in r.text
