"""Driving the portal like a browser without one: forms with their CSRF token, cookies."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.client import ClientInfo
from simcharge.auth.service import policy
from simcharge.auth.sessions import open_session
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from tests.factories import create_account, create_line

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, str]
) -> httpx.Response:
    """Open `page`, then submit a form to `action` with the page's CSRF token."""
    shown = await client.get(page)
    assert shown.status_code == 200, shown.text
    return await client.post(action, data={"csrf": csrf_of(shown.text), **data})


async def sign_in_with_second_factor(
    client: httpx.AsyncClient, login: str, code: str, *, next_page: str = "/account"
) -> httpx.Response:
    """The sign-in form with the password, then the two-step form with `code`."""
    r = await post_form(client, "/login", "/login", {"login": login, "password": PASSWORD})
    sealed = re.search(r'name="sealed" value="([^"]+)"', r.text)
    assert sealed, r.text[:500]
    return await client.post("/login", data={
        "csrf": csrf_of(r.text), "login": login, "sealed": sealed.group(1),
        "second_factor": code, "next": next_page})


@dataclass
class Customer:
    account_id: uuid.UUID
    username: str
    email: str
    line: Line
    token: str


async def new_customer(
    db: Database, settings: Settings, *, language: str = "en", with_units: bool = True
) -> Customer:
    async def run(s: AsyncSession) -> Customer:
        n = uuid.uuid4().hex[:8]
        email = f"c{n}@example.com"
        account = await create_account(
            s, username=f"cust{n}", email=email, email_verified_at=utcnow(), language=language
        )
        line = await create_line(s, account_id=account.id, state=LineState.active)
        line.validity_end = utcnow() + timedelta(days=10)
        if with_units:
            await credit_wallet(s, line, 1250, source=f"demo:{n}", code="adjustment")
            await grant_units(
                s, line,
                [UnitGrant("VOICE_S", 6000, 30, ()), UnitGrant("DATA_B", 2 * 1024**3, 30, ())],
                source=f"demo:{n}",
            )
        issued = await open_session(
            s, settings.secret_key, account_id=account.id,
            client=ClientInfo(ip="198.51.100.9", user_agent="pytest"),
            policy=policy(settings), now=utcnow(),
        )
        return Customer(account.id, account.username, email, line, issued.token)

    return await db.run(run)


def sign_in(client: httpx.AsyncClient, customer: Customer) -> None:
    client.cookies.set("sc_session", customer.token)


_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')
_QUOTE = re.compile(r'name="quote" value="([^"]+)"')


def review_form(html: str) -> dict[str, str]:
    """What the review page's "Pay now" sends besides the choice: the CSRF token, the
    idempotency key and the signed quote."""
    key, quote = _KEY.search(html), _QUOTE.search(html)
    assert key and quote, "no idempotency key or quote on the review page"
    return {"csrf": csrf_of(html), "idempotency_key": key.group(1), "quote": quote.group(1)}


async def portal_order(
    client: httpx.AsyncClient, line_id: uuid.UUID | None, *, plan: str = "traveller-20",
    method: str = "sandbox", msisdn: str = "",
) -> tuple[uuid.UUID, str]:
    """Top up through the portal's pages: review, then "Pay now". Returns the order's id and
    where "Pay now" went (the provider's page, or the order's page)."""
    query = {"line": str(line_id) if line_id else "other", "msisdn": msisdn, "plan": plan,
             "method": method}
    review = await client.get("/account/topup/review", params=query)
    assert review.status_code == 200, review.text
    r = await client.post("/account/topup", data={**review_form(review.text), **query})
    assert r.status_code == 303, r.text
    records = await client.get("/account/records")
    orders = records.text.split("<table>")[2]  # "My orders", newest first
    found = re.search(r'href="/account/orders/([0-9a-f-]{36})"', orders)
    assert found
    return uuid.UUID(found.group(1)), r.headers["location"]


async def pay_on_sandbox_page(
    client: httpx.AsyncClient, settings: Settings, pay_url: str, action: str = "pay"
) -> None:
    """What the payer does on the sandbox's page (`pay_url`, where "Pay now" went); its
    webhooks wait in the outbox (no worker runs here)."""
    from simcharge.payments.sandbox import page_token

    assert "/sandbox/pay/" in pay_url, pay_url
    sid = pay_url.rsplit("/", 1)[-1]
    r = await client.post(f"/sandbox/pay/{sid}",
                          data={"action": action, "token": page_token(settings, sid)})
    assert r.status_code == 303, r.text


async def two_step_on(client: httpx.AsyncClient) -> tuple[str, list[str], str]:
    """Turn two-step verification on from the security page, as a customer does: returns the
    app's secret, the recovery codes shown, and the session's new token (a privilege change
    gives the session a new one)."""
    import pyotp

    r = await post_form(client, "/account/security", "/account/security/totp",
                        {"password": PASSWORD})
    secret = re.search(r'data-testid="totp-key">([A-Z2-7 ]+)<', r.text)
    assert secret
    r = await client.post("/account/security/totp/confirm", data={
        "csrf": csrf_of(r.text), "code": pyotp.TOTP(secret.group(1).replace(" ", "")).now()})
    assert r.status_code == 200
    codes = re.findall(r"<li>([^<]+)</li>", r.text.split("recovery-codes", 1)[1])
    return secret.group(1).replace(" ", ""), codes, r.cookies["sc_session"]
