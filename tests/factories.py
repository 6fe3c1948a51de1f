"""Small `create_*` helpers that build real rows through the services."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.passwords import hash_password
from simcharge.catalog.service import DEMO_CATALOG, load_catalog, read_catalog_file
from simcharge.kit.ids import uuid7
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.ledger.service import NewAccount, create_accounts
from simcharge.lines.identifiers import luhn_check_digit
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import NewLine, open_line

_counter = itertools.count(1)


async def create_ledger_account(
    session: AsyncSession,
    unit: str = "USD",
    *,
    bounded: str | None = None,
    code: str = "test",
    line_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """`bounded`: None, "debits" (debits must not exceed credits) or "credits"."""
    account = NewAccount(
        unit=unit,
        code=code,
        line_id=line_id,
        debits_must_not_exceed_credits=bounded == "debits",
        credits_must_not_exceed_debits=bounded == "credits",
    )
    await create_accounts(session, [account])
    return account.id


async def ledger_account(session: AsyncSession, account_id: uuid.UUID) -> LedgerAccount:
    result = await session.execute(
        select(LedgerAccount)
        .where(LedgerAccount.id == account_id)
        .execution_options(populate_existing=True)
    )
    return result.scalar_one()


async def transfer_count(session: AsyncSession) -> int:
    return int(
        (await session.execute(select(func.count()).select_from(LedgerTransfer))).scalar_one()
    )


def next_msisdn() -> str:
    return f"+1415556{next(_counter) % 10000:04d}"


def iccid_for(msisdn: str) -> str:
    body = "8901999" + msisdn[-10:] + "1"
    return body + luhn_check_digit(body)


async def create_line(
    session: AsyncSession,
    *,
    msisdn: str | None = None,
    currency: str = "USD",
    account_id: uuid.UUID | None = None,
    state: LineState = LineState.active,
    **extra: Any,
) -> Line:
    msisdn = msisdn or next_msisdn()
    return await open_line(
        session,
        NewLine(msisdn=msisdn, iccid=iccid_for(msisdn), currency=currency, **extra),
        account_id=account_id,
        state=state,
    )


async def create_account(
    session: AsyncSession,
    *,
    username: str | None = None,
    password: str = "correct horse battery",
    **extra: Any,
) -> Account:
    account = Account(
        id=uuid7(),
        username=username or f"user{next(_counter)}",
        password_hash=hash_password(password),
        **extra,
    )
    session.add(account)
    await session.flush()
    return account


async def load_demo_catalog(session: AsyncSession) -> None:
    await load_catalog(session, read_catalog_file(DEMO_CATALOG))
