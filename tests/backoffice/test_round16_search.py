"""The customer search at scale (sixteenth round): exact matches first, then the others by
username, each query ordered and read one past the page so the list is the same whatever the
database returns first — and it says when it was cut (`X-Truncated` on the API, a notice on the
page). A query too short is refused alike on the page and the API (nothing searched or
audited); one Chinese character, a surname, is a query."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.backoffice.customers import MAX_RESULTS, find_customers, too_short
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.ids import uuid7
from tests.backoffice.helpers import new_staff, web_sign_in

NOTICE = "More than 50 customers match: narrow the search."


async def _accounts(db: Database, rows: list[dict[str, str]]) -> list[uuid.UUID]:
    """Accounts straight into the table (no password is hashed: nobody signs in as them)."""

    async def run(s: AsyncSession) -> list[uuid.UUID]:
        made = [Account(id=uuid7(), password_hash="!", **row) for row in rows]
        s.add_all(made)
        await s.flush()
        return [a.id for a in made]

    return await db.run(run)


async def _searches(db: Database) -> list[AuditEntry]:
    async with db.read() as s:
        return list(
            (
                await s.execute(
                    select(AuditEntry)
                    .where(AuditEntry.action == "customer.search")
                    .order_by(AuditEntry.at)
                )
            ).scalars()
        )


async def test_exact_first_then_by_username_and_the_list_says_it_was_cut(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    # 60 customers named "Maria …"; the newest (its username sorts first) was the one missing.
    await _accounts(db, [
        {"username": f"m{i:03d}", "display_name": f"Maria {i}", "email": f"m{i}@x.example"}
        for i in range(60)
    ])  # fmt: skip
    [newcomer] = await _accounts(db, [{"username": "aaa_newcomer", "display_name": "Maria Newcomer"}])
    # Whose username is the query: named exactly, listed first though "maria" sorts after "m0…".
    [exact] = await _accounts(db, [{"username": "maria", "display_name": "Someone Else"}])
    agent = await new_staff(db, settings, "agent")

    r = await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": "Maria"})
    assert r.status_code == 200, r.text
    assert r.headers["X-Truncated"] == "true"
    names = [c["username"] for c in r.json()]
    assert len(names) == MAX_RESULTS == 50
    assert names[:3] == ["maria", "aaa_newcomer", "m000"]
    assert names[2:] == sorted(names[2:]) and names[-1] == "m047"
    # The same on every run, whatever order the database finds rows in.
    again = await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": "maria"})
    assert [c["username"] for c in again.json()] == names

    # The page: the same list, and the notice.
    await web_sign_in(client, agent)
    page = await client.get("/backoffice/customers", params={"q": "Maria"})
    assert page.status_code == 200
    assert NOTICE in page.text
    assert page.text.index(f"/backoffice/customers/{exact}") < page.text.index(
        f"/backoffice/customers/{newcomer}")
    assert page.text.count('<tr><td><a href="/backoffice/customers/') == 50

    # Narrowed: everything listed, nothing cut.
    r = await client.get(
        "/api/v1/admin/customers", headers=agent.auth, params={"q": "maria newcomer"}
    )
    assert r.headers["X-Truncated"] == "false"
    assert [c["id"] for c in r.json()] == [str(newcomer)]
    page = await client.get("/backoffice/customers", params={"q": "maria newcomer"})
    assert NOTICE not in page.text and "No customer matches." not in page.text

    # The audit names the accounts shown, never the words typed (unchanged).
    rows = await _searches(db)
    assert len(rows) == 5
    assert rows[0].details["found"] == 50 and len(rows[0].details["accounts"]) == 50
    assert str(exact) in rows[0].details["accounts"]
    assert all("maria" not in str(r.details).lower() for r in rows)


async def test_the_cut_is_exact_at_fifty_and_one(db: Database) -> None:
    await _accounts(db, [{"username": f"k{i:02d}", "display_name": "Kalinga"} for i in range(50)])
    async with db.read() as s:
        found = await find_customers(s, "kalinga")
    assert len(found.accounts) == 50 and not found.more
    await _accounts(db, [{"username": "k50", "display_name": "Kalinga"}])
    async with db.read() as s:
        found = await find_customers(s, "kalinga")
    assert len(found.accounts) == 50 and found.more
    assert [a.username for a in found.accounts] == [f"k{i:02d}" for i in range(50)]


async def test_a_number_or_an_e_mail_as_a_whole_comes_before_those_containing_it(
    db: Database,
) -> None:
    [whole] = await _accounts(db, [{"username": "zz_whole", "phone": "+639170000001"}])
    [longer] = await _accounts(db, [{"username": "aa_longer", "phone": "+6391700000012"}])
    [mail] = await _accounts(db, [{"username": "zz_mail", "email": "ana@x.example"}])
    [mail_too] = await _accounts(db, [{"username": "aa_mail", "email": "juana@x.example"}])
    async with db.read() as s:
        by_number = await find_customers(s, "+63 917 000 0001")
        without_plus = await find_customers(s, "639170000001")
        by_mail = await find_customers(s, "ANA@x.example")
    assert [a.id for a in by_number.accounts] == [whole, longer]
    assert [a.id for a in without_plus.accounts] == [whole, longer]
    assert [a.id for a in by_mail.accounts] == [mail, mail_too]


async def test_one_character_is_refused_alike_and_nothing_is_audited(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await _accounts(db, [{"username": "chen_jing", "display_name": "陈静"}])
    agent = await new_staff(db, settings, "agent")
    for q in ("x", " x ", "7", "ア", "é", "  ", "ｘ"):
        r = await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": q})
        assert r.status_code == 422, (q, r.text)
        body = r.json()
        assert body["type"] == "/problems/validation-error" and body["field"] == "q"
        assert body["errors"] == [{"field": "q", "detail": "Enter at least 2 characters."}]
    r = await client.get("/api/v1/admin/customers", headers=agent.auth)
    assert r.status_code == 422 and r.json()["field"] == "q"
    r = await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": "x" * 201})
    assert r.status_code == 422 and r.json()["field"] == "q"
    await web_sign_in(client, agent)
    for q in ("x", " x "):
        page = await client.get("/backoffice/customers", params={"q": q})
        assert page.status_code == 422
        assert "Enter at least 2 characters." in page.text
        assert 'id="search-q"' in page.text and 'aria-invalid="true"' in page.text
        assert "No customer matches." not in page.text
    assert await _searches(db) == []
    # One Chinese character is a surname: searched, on the API and the page, and audited.
    r = await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": "陈"})
    assert r.status_code == 200 and [c["username"] for c in r.json()] == ["chen_jing"]
    page = await client.get("/backoffice/customers", params={"q": "陈"})
    assert page.status_code == 200 and "chen_jing" in page.text
    # Full-width (an input method's) is read as plain: "ｘｙ" is two letters, searched.
    r = await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": "ｘｙ"})
    assert r.status_code == 200 and r.json() == []
    rows = await _searches(db)
    assert [(r.details["kind"], r.details["length"], r.details["found"]) for r in rows] == [
        ("text", 1, 1), ("text", 1, 1), ("text", 2, 0)
    ]


def test_which_single_characters_are_a_query() -> None:
    assert not too_short("陈") and not too_short("王") and not too_short("丽")
    assert not too_short("ab")
    assert too_short("") and too_short("a") and too_short("7") and too_short("ア")
    assert too_short("한") and too_short("-")


async def test_searching_at_scale_stays_ordered_across_sources(db: Database) -> None:
    """A customer found by a line's number and others by name: one list, by username."""
    from tests.factories import create_line

    async def run(s: AsyncSession) -> uuid.UUID:
        account = Account(id=uuid7(), username="bb_line_owner", password_hash="!")
        s.add(account)
        await s.flush()
        await create_line(s, msisdn="+14155550777", account_id=account.id)
        return account.id

    owner = await db.run(run)
    await _accounts(db, [{"username": "aa_digits", "display_name": "Caller 14155550777"},
                         {"username": "cc_digits", "display_name": "14155550777"}])
    async with db.read() as s:
        found = await find_customers(s, "14155550777")
        digits = await find_customers(s, "4155550777")
    # The line's number typed without its + is the number as a whole: its owner first.
    assert [a.username for a in found.accounts] == ["bb_line_owner", "aa_digits", "cc_digits"]
    assert found.accounts[0].id == owner and not found.more
    # Digits only part of it: nobody named exactly, all three by username.
    assert [a.username for a in digits.accounts] == ["aa_digits", "bb_line_owner", "cc_digits"]
