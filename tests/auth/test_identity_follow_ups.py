"""Identity follow-ups of the seventh review round.

- A pending contact could not be cancelled: `PATCH /me` with the current (verified) address
  returned early and left an earlier pending address in place, its code still live — entered
  later, it moved the account's contact after all. Setting the contact back to the current one
  now cancels the pending change (its code is void), with the usual password check.
- A password reset (and an unlock) did not lock the account first, though sign-in and every
  change of a contact do: it held its code's row and then waited for the account, while a
  contact verification held the account and then waited for that code (to void it, the code
  going to the replaced address): on PostgreSQL the two deadlocked (40P01). A reset and an
  unlock now hold the account first, and read it as it is once held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.exc import DBAPIError

from simcharge.accounts.models import Account, AccountStatus
from simcharge.auth import codes, service
from simcharge.auth.client import ClientInfo
from simcharge.auth.models import CodePurpose
from simcharge.auth.throttle import RateLimits
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Refused
from simcharge.kit.clock import utcnow
from tests.auth.helpers import PASSWORD, Customer, Deliver, new_identity, problem, signup
from tests.conftest import SmtpInbox, last_sms_code
from tests.factories import create_account
from tests.locks import until_waiting

NEW_PASSWORD = "copper-lantern-5512"
HERE = ClientInfo(ip="192.0.2.9", user_agent="pytest-follow-ups/1.0")


async def _setting_the_current_contact_again_cancels_a_pending_one(
    client: httpx.AsyncClient,
    deliver: Deliver,
    customer: Customer,
    *,
    field: str,
    channel: str,
    current: str,
    new: str,
    code_sent_to: Callable[[str], str],
) -> None:
    """`field` (`email` or `phone`) changed to `new` (pending, its code sent), then set back
    to `current`: the pending one is dropped, and its code, entered on `channel`, verifies
    nothing."""
    pending = f"{field}_pending"
    r = await client.patch(
        "/api/v1/me", headers=customer.auth, json={field: new, "current_password": PASSWORD}
    )
    assert r.status_code == 200 and r.json()[pending] == new, r.text
    await deliver()
    code = code_sent_to(new)

    r = await client.patch(
        "/api/v1/me", headers=customer.auth, json={field: current, "current_password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    assert r.json()[field] == current and r.json()[pending] is None

    r = await client.post(
        "/api/v1/auth/verify", headers=customer.auth, json={"channel": channel, "code": code}
    )
    assert r.status_code == 422, r.text
    me = (await client.get("/api/v1/me", headers=customer.auth)).json()
    assert me[field] == current and me[pending] is None


async def test_setting_the_current_address_again_cancels_a_pending_one(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """Was: the pending address stayed, and its code, entered later, replaced the verified
    address the customer had gone back to. Now the pending address is dropped and its code no
    longer verifies anything; the current address stays."""
    customer = await signup(client, inbox, deliver)
    current = str(customer.email)
    await _setting_the_current_contact_again_cancels_a_pending_one(
        client, deliver, customer, field="email", channel="email", current=current,
        new=f"second-thoughts-{current}", code_sent_to=inbox.last_code,
    )  # fmt: skip


async def test_setting_the_current_number_again_cancels_a_pending_one(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """The same for a phone number: the pending number's code is void once the customer sets
    the current number again."""
    customer = await signup(client, inbox, deliver)
    _, _, new = new_identity()
    await _setting_the_current_contact_again_cancels_a_pending_one(
        client, deliver, customer, field="phone", channel="sms", current=str(customer.phone),
        new=str(new), code_sent_to=last_sms_code,
    )  # fmt: skip


async def test_cancelling_a_pending_address_needs_the_password(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """Cancelling is a contact change like any other: a wrong password is refused and the
    pending address stays as it was."""
    customer = await signup(client, inbox, deliver)
    current = str(customer.email)
    new = f"kept-pending-{current}"
    r = await client.patch(
        "/api/v1/me", headers=customer.auth, json={"email": new, "current_password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    r = await client.patch(
        "/api/v1/me",
        headers=customer.auth,
        json={"email": current, "current_password": "not-the-password-1234"},
    )
    assert r.status_code == 401, r.text
    assert problem(r)["field"] == "current_password"
    me = (await client.get("/api/v1/me", headers=customer.auth)).json()
    assert me["email"] == current and me["email_pending"] == new


def _deadlocked(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, asyncpg.DeadlockDetectedError) or (
            isinstance(seen, DBAPIError) and "deadlock" in str(seen).lower()
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _changing_address(
    db: Database, settings: Settings, limits: RateLimits, name: str, purpose: CodePurpose
) -> tuple[Account, str, str]:
    """An account whose verified address is changing (a new one pending, its code sent), and a
    signed-out code of `purpose` on its way to the current address; its two codes."""

    async def make(s: Any) -> tuple[Account, str, str]:
        now = utcnow()
        account = await create_account(
            s, username=name, password=PASSWORD, email=f"{name}@example.com",
            email_verified_at=now, created_at=now, updated_at=now,
        )  # fmt: skip
        account.email_pending = f"{name}-new@example.com"
        if purpose == CodePurpose.unlock:
            account.status, account.lock_reason = AccountStatus.locked.value, "customer"
            account.locked_at = now
        await s.flush()

        async def issue(purpose: CodePurpose, target: str, at: datetime) -> str:
            return (await codes.issue_code(
                s, settings.secret_key, account_id=account.id, purpose=purpose,
                channel="email", target=target, now=at, limits=limits,
            )).code  # fmt: skip

        signed_out = await issue(purpose, f"{name}@example.com", now)
        verify = await issue(CodePurpose.verify_email, f"{name}-new@example.com", now)
        return account, signed_out, verify

    return await db.run(make)


@pytest.mark.postgres_only
@pytest.mark.parametrize("purpose", [CodePurpose.password_reset, CodePurpose.unlock])
async def test_a_reset_or_unlock_and_a_contact_verification_do_not_deadlock(
    fresh_db: Database, settings: Settings, purpose: CodePurpose
) -> None:
    """Was: the reset (or unlock) held its code and waited for the account, which the
    verification of the new address held while it waited to void that code (it goes to the
    address being replaced): 40P01, one of them killed. Now the reset waits for the account
    first, holding nothing; once the new address is verified its code is void, and it is
    refused as a wrong code."""
    db = fresh_db
    limits = RateLimits()
    name = f"lockorder{purpose.value.replace('_', '')}"
    account, signed_out, verify = await _changing_address(db, settings, limits, name, purpose)
    held = asyncio.Event()

    async def verifying() -> Any:
        async with db.transaction() as s:
            # As `POST /auth/verify` signed in: the account first, then its code.
            mine = await s.get(Account, account.id, with_for_update=True)
            assert mine is not None
            held.set()
            await until_waiting(db, 1)
            return await service.verify_contact(
                s, settings, mine, "email", verify, client=HERE, now=utcnow(), limits=limits
            )

    async def using_the_old_code() -> Any:
        await held.wait()
        async with db.transaction() as s:
            if purpose == CodePurpose.unlock:
                return await service.unlock(
                    s, settings, login=name, code=signed_out, client=HERE, now=utcnow(),
                    limits=limits,
                )  # fmt: skip
            return await service.reset_password(
                s, settings, login=name, code=signed_out, new_password=NEW_PASSWORD,
                client=HERE, now=utcnow(), limits=limits,
            )  # fmt: skip

    verified, used = await asyncio.gather(verifying(), using_the_old_code(), return_exceptions=True)
    assert not [r for r in (verified, used) if isinstance(r, BaseException) and _deadlocked(r)], (
        verified,
        used,
    )
    assert isinstance(verified, Account), verified
    assert isinstance(used, Refused) and isinstance(used.error, codes.InvalidCode), used
    async with db.read() as s:
        now = await s.get(Account, account.id)
        assert now is not None and now.email == f"{name}-new@example.com"
        assert now.password_hash == account.password_hash
        assert now.status == account.status
