"""An account's time zone and number format (`accounts.time_zone`, `accounts.format_locale`):
`GET/PATCH /api/v1/me` show and take them (`null` resets; an unknown zone or a format no
language of ours has is a problem+json 422 naming the field and changes nothing), the service
checks them (`accounts.service.checked_formats`), the notices the API renders are written in
them, and the API's own times stay ISO 8601 UTC."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.accounts.service import checked_formats
from simcharge.db import Database
from simcharge.errors import ValidationFailed
from simcharge.notifications.models import Notice
from simcharge.notifications.transports import dev_mailbox
from tests.auth.helpers import PASSWORD, Deliver, problem, signup
from tests.auth.helpers import Customer as C
from tests.conftest import SmtpInbox


async def _me(client: httpx.AsyncClient, customer: C) -> dict[str, Any]:
    r = await client.get("/api/v1/me", headers=customer.auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_the_profile_shows_takes_and_resets_the_zone_and_format(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver, language="es")
    me = await _me(client, customer)
    assert me["time_zone"] is None and me["format_locale"] is None
    assert me["created_at"].endswith("Z") or me["created_at"].endswith("+00:00")  # still UTC

    r = await client.patch(
        "/api/v1/me", headers=customer.auth,
        json={"time_zone": "America/Mexico_City", "format_locale": "es-mx"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert (r.json()["time_zone"], r.json()["format_locale"]) == ("America/Mexico_City", "es_MX")
    # Another change leaves them as they are; `null` resets only the field it names.
    r = await client.patch("/api/v1/me", headers=customer.auth, json={"display_name": "Ana"})
    assert (r.json()["time_zone"], r.json()["format_locale"]) == ("America/Mexico_City", "es_MX")
    r = await client.patch("/api/v1/me", headers=customer.auth, json={"time_zone": None})
    assert (r.json()["time_zone"], r.json()["format_locale"]) == (None, "es_MX")
    r = await client.patch("/api/v1/me", headers=customer.auth, json={"format_locale": None})
    me = await _me(client, customer)
    assert (me["time_zone"], me["format_locale"]) == (None, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"time_zone": "PST"}, "time_zone"),
        ({"time_zone": ""}, "time_zone"),
        ({"time_zone": "../../etc/passwd"}, "time_zone"),
        ({"format_locale": "en_US"}, "format_locale"),
        ({"format_locale": "es_ZZ"}, "format_locale"),
        ({"format_locale": "es"}, "format_locale"),
    ],
)
async def test_a_bad_zone_or_format_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, body: dict[str, Any],
    field: str,
) -> None:
    customer = await signup(client, inbox, deliver)
    before = await _me(client, customer)
    r = await client.patch(
        "/api/v1/me", headers=customer.auth, json={"display_name": "Changed", **body}
    )
    assert r.status_code == 422
    found = problem(r)
    assert found["type"].endswith("/problems/validation-error") and found["field"] == field
    assert await _me(client, customer) == before


@pytest.mark.parametrize("value", [8, ["Asia/Manila"], {"zone": "Asia/Manila"}, "A" * 65])
async def test_a_zone_of_the_wrong_type_or_length_is_refused(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, value: Any
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    r = await client.patch("/api/v1/me", headers=customer.auth, json={"time_zone": value})
    assert r.status_code == 422
    assert "time_zone" in str(problem(r))
    assert (await _me(client, customer))["time_zone"] is None


async def test_a_bad_zone_with_a_contact_change_sends_no_code(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """Bad input is refused before the password is checked or a code send counted."""
    customer = await signup(client, inbox, deliver, with_phone=False)
    sent = len(inbox.messages), len(dev_mailbox)
    r = await client.patch(
        "/api/v1/me", headers=customer.auth,
        json={"email": f"new-{customer.email}", "current_password": PASSWORD,
              "time_zone": "Nowhere/Land"},
    )  # fmt: skip
    assert r.status_code == 422 and problem(r)["field"] == "time_zone"
    await deliver()
    assert (len(inbox.messages), len(dev_mailbox)) == sent
    assert (await _me(client, customer))["email_pending"] is None


def test_the_service_checks_what_it_is_given_only() -> None:
    assert checked_formats({}) == {}
    assert checked_formats({"time_zone": None, "format_locale": "es_419"}) == {
        "time_zone": None, "format_locale": "es_419",
    }  # fmt: skip
    with pytest.raises(ValidationFailed) as refused:
        checked_formats({"time_zone": "Asia/Manila", "format_locale": "fil_PH"})
    assert refused.value.field == "format_locale"


async def test_the_notices_the_api_renders_are_in_the_accounts_zone_and_format(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver, language="es", with_phone=False)
    await client.patch(
        "/api/v1/me", headers=customer.auth,
        json={"time_zone": "Asia/Manila", "format_locale": "es_MX"},
    )  # fmt: skip
    me = await _me(client, customer)

    async def add(s: AsyncSession) -> None:
        account = await s.get(Account, uuid.UUID(me["id"]))
        assert account is not None
        s.add_all([
            Notice(account_id=account.id, template="line.validity_ending", created_at=datetime.now(UTC),
                   params={"msisdn": "+14155550101", "days_left": 1,
                           "validity_end": "2026-12-06T20:00:00+00:00"}),
            Notice(account_id=account.id, template="balance.low", created_at=datetime.now(UTC),
                   params={"msisdn": "+14155550101", "balance": 123456, "currency": "USD"}),
        ])  # fmt: skip
        await s.flush()

    await db.run(add)
    bodies = [n["body"] for n in (await client.get("/api/v1/me/notices", headers=customer.auth))
              .json()["notices"]]  # fmt: skip
    text = " ".join(bodies)
    assert "7 dic 2026, 4:00\u202fa.m. UTC+08:00" in text  # Manila's moment, to the minute
    assert "1,234.56" in text  # es_MX, not Spain's 1.234,56
