"""Queries about customer accounts."""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, account_id: uuid.UUID, *, lock: bool = False) -> Account | None:
        return await self.session.get(Account, account_id, with_for_update=lock)

    async def by_username(self, username: str) -> Account | None:
        stmt = select(Account).where(Account.username == username)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_verified_email(self, email: str) -> Account | None:
        stmt = select(Account).where(Account.email == email, Account.email_verified_at.is_not(None))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_verified_phone(self, phone: str) -> Account | None:
        stmt = select(Account).where(Account.phone == phone, Account.phone_verified_at.is_not(None))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def holder_of(
        self, *, email: str | None, phone: str | None, other_than: uuid.UUID | None = None
    ) -> Account | None:
        """An account that holds this e-mail address or phone number as its contact (a pending
        one, waiting for its code, holds nothing: whoever enters the code first gets it)."""
        conditions = []
        if email:
            conditions.append(Account.email == email)
        if phone:
            conditions.append(Account.phone == phone)
        if not conditions:
            return None
        stmt = select(Account).where(or_(*conditions))
        if other_than is not None:
            stmt = stmt.where(Account.id != other_than)
        return (await self.session.execute(stmt.limit(1))).scalar_one_or_none()
