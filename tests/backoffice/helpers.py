"""Staff for tests: created through the service, signed in through the pages or the API."""

from __future__ import annotations

import itertools
import re
import uuid
from dataclasses import dataclass

import httpx
import pyotp
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice.models import StaffUser
from simcharge.backoffice.staff import create_staff, open_staff_session, start_enrolment
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow

STAFF_PASSWORD = "amber-lantern-5531"
_n = itertools.count(1)


@dataclass
class Staff:
    id: uuid.UUID
    username: str
    role: str
    secret: str | None
    token: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        assert self.token
        return {"Authorization": f"Bearer {self.token}"}


async def new_staff(
    db: Database, settings: Settings, role: str, *, enrolled: bool = True, language: str = "en"
) -> Staff:
    """A staff member; `enrolled`: with an authenticator and a live API token."""

    async def run(s: AsyncSession) -> Staff:
        name = f"{role}{next(_n)}{uuid.uuid4().hex[:6]}"
        staff = await create_staff(
            s,
            username=name,
            display_name=name.title(),
            role=role,
            password=STAFF_PASSWORD,
            language=language,
        )
        if not enrolled:
            return Staff(staff.id, staff.username, role, None)
        secret, _, _ = start_enrolment(settings, staff)
        staff.totp_enabled_at = utcnow()
        issued = await open_staff_session(
            s, settings, staff, ip="192.0.2.1", user_agent="pytest", now=utcnow(), mfa=True
        )
        return Staff(staff.id, staff.username, role, secret, issued.token)

    return await db.run(run)


def code_for(secret: str, offset: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.at(int(utcnow().timestamp()) + offset * 30)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def adjust_key_of(html: str, line_id: uuid.UUID) -> str:
    """The one-time key of a line's adjustment form on the customer page."""
    form = re.search(
        rf'action="/backoffice/lines/{line_id}/adjust".*?name="idem" value="([^"]+)"', html, re.S
    )
    assert form, "no one-time key on the line's adjustment form"
    return form.group(1)


async def web_sign_in(client: httpx.AsyncClient, staff: Staff) -> str:
    """Sign in through the pages (enrolling the authenticator if needed); the client keeps the
    cookie. Returns the page's CSRF token."""
    page = await client.get("/backoffice/login")
    r = await client.post(
        "/backoffice/login",
        data={"username": staff.username, "password": STAFF_PASSWORD, "csrf": csrf_of(page.text)},
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/backoffice/login/code"
    page = await client.get("/backoffice/login/code")
    if staff.secret is None:
        found = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page.text)
        assert found, "no enrolment secret shown"
        staff.secret = found.group(1)
    r = await client.post(
        "/backoffice/login/code", data={"code": code_for(staff.secret), "csrf": csrf_of(page.text)}
    )
    assert r.status_code == 303 and r.headers["location"] == "/backoffice", r.text
    home = await client.get("/backoffice")
    assert home.status_code == 200
    return csrf_of(home.text)


async def staff_row(db: Database, staff_id: uuid.UUID) -> StaffUser:
    async with db.read() as s:
        row = await s.get(StaffUser, staff_id)
        assert row is not None
        return row
