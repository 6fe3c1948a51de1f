"""Two accounts confirming the same line at once (review round 12).

What was wrong: `accounts.service.confirm_line_attach` read the line without a lock. When the
holders of two accounts both had the SIM's code and confirmed together, both saw the line free;
the later update waited for the first, then wrote its own account over it: the line silently
changed hands. Now the line is locked before its owner is looked at: exactly one account gets
it; the other waits, sees it taken and is refused `409 line-attached-elsewhere` naming the
`msisdn`, with a refused entry in its security log and nothing else written for it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts import service as accounts
from simcharge.accounts.models import Account
from simcharge.accounts.service import LineAttachedElsewhere
from simcharge.auth import codes
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind
from simcharge.auth.models import CodePurpose, SecurityEvent
from simcharge.auth.throttle import RateLimits
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Refused
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from simcharge.notifications.models import Notice
from tests.factories import create_line
from tests.locks import app_client, until_waiting
from tests.orders.helpers import Payer, new_payer

HERE = ClientInfo(ip="192.0.2.12", user_agent="pytest-round12/1.0")


async def _free_line(db: Database) -> Line:
    async def make(s: AsyncSession) -> Line:
        return await create_line(s, account_id=None)

    return await db.run(make)


async def _code(db: Database, settings: Settings, limits: RateLimits, payer: Payer,
                msisdn: str) -> str:
    """An attach code for `msisdn` issued to `payer`'s account (what the SMS would carry)."""

    async def issue(s: AsyncSession) -> str:
        issued = await codes.issue_code(
            s, settings.secret_key, account_id=payer.account_id,
            purpose=CodePurpose.attach_line, channel="sms", target=msisdn,
            now=utcnow(), limits=limits,
        )
        return issued.code

    return await db.run(issue)


async def _owner(db: Database, line_id: uuid.UUID) -> uuid.UUID | None:
    async with db.read() as s:
        return await s.scalar(select(Line.account_id).where(Line.id == line_id))


async def _events(db: Database, account_id: uuid.UUID) -> list[tuple[str, bool, object]]:
    async with db.read() as s:
        rows = await s.execute(
            select(SecurityEvent.kind, SecurityEvent.success, SecurityEvent.details)
            .where(SecurityEvent.account_id == account_id)
            .where(SecurityEvent.kind == EventKind.line_attached.value)
        )
        return [(r.kind, r.success, r.details) for r in rows]


async def _notices(db: Database, account_id: uuid.UUID) -> int:
    async with db.read() as s:
        stmt = select(func.count()).select_from(Notice).where(Notice.account_id == account_id)
        return int(await s.scalar(stmt) or 0)


@pytest.mark.postgres_only
async def test_two_accounts_confirming_one_line_at_once_exactly_one_gets_it(
    fresh_db: Database, settings: Settings
) -> None:
    """Real connections: the first confirmation holds its transaction open; the second (over
    HTTP) must wait for it and then be refused, never take the line over."""
    db = fresh_db
    line = await _free_line(db)
    first, second = await new_payer(db, settings), await new_payer(db, settings)
    async with app_client(db, settings) as client:
        limits: RateLimits = client._transport.app.state.rate_limits  # type: ignore[attr-defined]
        firsts = await _code(db, settings, limits, first, line.msisdn)
        seconds = await _code(db, settings, limits, second, line.msisdn)
        async with db.transaction() as s:
            me = await s.get(Account, first.account_id)
            assert me is not None
            won = await accounts.confirm_line_attach(
                s, settings, me, line.msisdn, firsts, client=HERE, now=utcnow(), limits=limits
            )
            assert isinstance(won, Line)
            losing = asyncio.create_task(
                client.post(
                    "/api/v1/me/lines/verify",
                    headers=second.auth,
                    json={"msisdn": line.msisdn, "code": seconds},
                )
            )
            await until_waiting(db, 1)  # the second waits for the line the first holds
            assert not losing.done()
        r = await losing
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["type"].endswith("/line-attached-elsewhere")
    assert body["field"] == "msisdn"
    assert await _owner(db, line.id) == first.account_id
    assert await _events(db, first.account_id) == [
        ("line_attached", True, {"msisdn": line.msisdn, "line_id": str(line.id)})
    ]
    assert await _events(db, second.account_id) == [
        ("line_attached", False, {"msisdn": line.msisdn, "reason": "line-attached-elsewhere"})
    ]
    assert await _notices(db, second.account_id) == 0  # no "line added" notice for the loser


async def test_a_line_taken_before_the_code_is_entered_is_refused_and_logged(
    db: Database, settings: Settings
) -> None:
    """Both databases, one after the other: the second code is refused, the line stays with the
    first account, the refusal is in the second's security log and nothing else is written."""
    line = await _free_line(db)
    first, second = await new_payer(db, settings), await new_payer(db, settings)
    limits = RateLimits()
    firsts = await _code(db, settings, limits, first, line.msisdn)
    seconds = await _code(db, settings, limits, second, line.msisdn)

    async def confirm(payer: Payer, code: str) -> Line | Refused:
        async def run(s: AsyncSession) -> Line | Refused:
            me = await s.get(Account, payer.account_id)
            assert me is not None
            return await accounts.confirm_line_attach(
                s, settings, me, line.msisdn, code, client=HERE, now=utcnow(), limits=limits
            )

        return await db.run(run)

    assert isinstance(await confirm(first, firsts), Line)
    refused = await confirm(second, seconds)
    assert isinstance(refused, Refused)
    assert isinstance(refused.error, LineAttachedElsewhere)
    assert refused.error.status == 409 and refused.error.field == "msisdn"
    assert await _owner(db, line.id) == first.account_id
    assert await _events(db, second.account_id) == [
        ("line_attached", False, {"msisdn": line.msisdn, "reason": "line-attached-elsewhere"})
    ]
    assert await _notices(db, second.account_id) == 0
