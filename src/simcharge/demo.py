"""Demo data: the demo catalog, a few customers with lines and balances, spare inventory.

Loading it again changes nothing: every row and transfer is found by a stable key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.passwords import hash_password
from simcharge.catalog.service import DEMO_CATALOG, load_catalog, read_catalog_file
from simcharge.kit.clock import utcnow
from simcharge.lines.identifiers import luhn_check_digit
from simcharge.lines.models import LineState
from simcharge.lines.repository import LineRepository
from simcharge.lines.service import NewLine, UnitGrant, credit_wallet, grant_units, open_line

DEMO_PASSWORD = "simcharge-demo-2026"  # noqa: S105 - printed for the demo on purpose
GIB = 1024**3


@dataclass(frozen=True)
class DemoCustomer:
    username: str
    display_name: str
    language: str
    email: str
    phone: str
    msisdns: tuple[str, ...]


CUSTOMERS = (
    DemoCustomer(
        "alice",
        "Alice Walker",
        "en",
        "alice@example.com",
        "+12025550143",
        ("+14155550101", "+14155550102"),
    ),
    DemoCustomer(
        "chen", "陈静", "zh-Hans", "chen@example.com", "+8613800138000", ("+14155550111",)
    ),
    DemoCustomer("lin", "林美華", "zh-Hant", "lin@example.com", "+886912345678", ("+14155550121",)),
    DemoCustomer(
        "juan", "Juan dela Cruz", "fil", "juan@example.com", "+639171234567", ("+14155550131",)
    ),
    DemoCustomer(
        "maria", "María García", "es", "maria@example.com", "+34612345678", ("+14155550141",)
    ),
)
SPARE_MSISDNS = tuple(f"+1415555{n:04d}" for n in range(200, 210))


def demo_iccid(msisdn: str) -> str:
    body = "8901555" + msisdn[-10:] + "0"
    return body + luhn_check_digit(body)


def demo_imsi(msisdn: str) -> str:
    return "310150" + msisdn[-9:]


def demo_line(msisdn: str) -> NewLine:
    return NewLine(
        msisdn=msisdn,
        iccid=demo_iccid(msisdn),
        currency="USD",
        imsi=demo_imsi(msisdn),
        activation_code=f"LPA:1$smdp.simcharge.example${msisdn[-10:]}-DEMO",
    )


async def load_demo(session: AsyncSession) -> list[DemoCustomer]:
    await load_catalog(session, read_catalog_file(DEMO_CATALOG))
    lines = LineRepository(session)
    now = utcnow()
    for i, c in enumerate(CUSTOMERS):
        account = (
            await session.execute(select(Account).where(Account.username == c.username))
        ).scalar_one_or_none()
        if account is None:
            account = Account(
                username=c.username,
                display_name=c.display_name,
                language=c.language,
                email=c.email,
                email_verified_at=now,
                phone=c.phone,
                phone_verified_at=now,
                password_hash=hash_password(DEMO_PASSWORD),
            )
            session.add(account)
            await session.flush()
        for j, msisdn in enumerate(c.msisdns):
            if await lines.by_msisdn(msisdn) is not None:
                continue
            line = await open_line(
                session, demo_line(msisdn), account_id=account.id, state=LineState.active
            )
            line.validity_end = now.replace(microsecond=0) + timedelta(days=30 - 7 * i)
            line.last_activity_at = now
            source = f"demo:{msisdn}"
            await credit_wallet(
                session, line, 1250 + 500 * i + 300 * j, source=source, code="adjustment"
            )
            await grant_units(
                session,
                line,
                [
                    UnitGrant("VOICE_S", (100 - 10 * i) * 60, 30 - 7 * i),
                    UnitGrant("DATA_B", (3 - j) * GIB, 30 - 7 * i),
                    UnitGrant("SMS", 20, 30 - 7 * i),
                ],
                source=source,
                now=now,
            )
    for msisdn in SPARE_MSISDNS:
        if await lines.by_msisdn(msisdn) is None:
            await open_line(session, demo_line(msisdn))
    await session.flush()
    return list(CUSTOMERS)
