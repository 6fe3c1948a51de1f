"""The customer search ignores accents (seventeenth round): "Garcia" finds "García" and
"García" finds "Garcia", on both databases — the query and the stored names are folded alike
(`kit.fold.fold`: NFKD, the diacritics dropped, case-folded), in Python both: the query when
searched, each name when written, kept beside it (`accounts.display_name_folded`, compared with
a plain `LIKE`: folding every name in SQL at each search made it five to nine times slower).
Not folded: the voicing marks of kana (が
is not か), and Chinese characters' simplified and traditional forms (美华 is not 美華: a
name is found in the script it was written in)."""

from __future__ import annotations

import unicodedata
import uuid

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.accounts.privacy import erase_account
from simcharge.backoffice.customers import find_customers
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.fold import fold
from simcharge.kit.ids import uuid7
from tests.backoffice.helpers import new_staff, web_sign_in

NAMES = {
    "garcia_acc": "María García",
    "garcia_bare": "Maria Garcia",
    "jose_nfd": "Jose\u0301 Pe\u0301rez",  # decomposed, as some keyboards and imports give it
    "nguyen": "Nguyễn Thị Ánh",
    "weiss_sz": "Jürgen Weiß",
    "weiss_ss": "Jurgen Weiss",
    "sokrates": "ΣΩΚΡΆΤΗΣ Παππάς",
    "wide": "ＦＲＡＮＣＯＩＳ",  # full-width, as a CJK input method types it
    "garushia": "ガルシア",
    "wang": "王小明",
    "meihua": "李美華",
    "cedilla": "François Ça",
}


async def _accounts(db: Database) -> dict[str, uuid.UUID]:
    async def run(s: AsyncSession) -> dict[str, uuid.UUID]:
        made = {u: Account(id=uuid7(), username=u, display_name=n, password_hash="!")
                for u, n in NAMES.items()}  # fmt: skip
        s.add_all(made.values())
        await s.flush()
        return {u: a.id for u, a in made.items()}

    return await db.run(run)


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("Garcia", {"garcia_acc", "garcia_bare"}),
        ("garcía", {"garcia_acc", "garcia_bare"}),
        ("GARCÍA", {"garcia_acc", "garcia_bare"}),
        ("ria gar", {"garcia_acc", "garcia_bare"}),
        ("José", {"jose_nfd"}),
        ("jose perez", {"jose_nfd"}),
        ("nguyen thi anh", {"nguyen"}),
        ("Nguyễn", {"nguyen"}),
        ("weiss", {"weiss_sz", "weiss_ss"}),
        ("Weiß", {"weiss_sz", "weiss_ss"}),
        ("jürgen", {"weiss_sz", "weiss_ss"}),
        ("σωκρατης", {"sokrates"}),
        ("Σωκράτης", {"sokrates"}),
        ("pappas", set()),  # no transliteration between scripts
        ("francois", {"wide", "cedilla"}),
        ("françois", {"wide", "cedilla"}),
        ("ca", {"cedilla"}),
        ("ガルシア", {"garushia"}),
        ("カルシア", set()),  # カ is not ガ: a voicing mark is part of the letter
        ("王", {"wang"}),
        ("美華", {"meihua"}),
        ("美华", set()),  # simplified for traditional: not folded
        ("\u0301\u0301", set()),  # marks alone fold to nothing: not every name
    ],
)
async def test_a_name_is_found_with_or_without_its_accents(
    db: Database, query: str, found: set[str]
) -> None:
    ids = await _accounts(db)
    async with db.read() as s:
        search = await find_customers(s, query)
    assert {a.username for a in search.accounts} == found, query
    assert {a.id for a in search.accounts} == {ids[u] for u in found}


async def test_the_api_and_the_page_find_accented_names(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    ids = await _accounts(db)
    agent = await new_staff(db, settings, "agent")
    r = await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": "Garcia"})
    assert r.status_code == 200, r.text
    assert {c["username"] for c in r.json()} == {"garcia_acc", "garcia_bare"}
    await web_sign_in(client, agent)
    page = await client.get("/backoffice/customers", params={"q": "garcía"})
    assert page.status_code == 200
    assert f"/backoffice/customers/{ids['garcia_acc']}" in page.text
    assert f"/backoffice/customers/{ids['garcia_bare']}" in page.text


def _sample() -> list[str]:
    """Each letter of the Latin, Greek, Cyrillic and Vietnamese blocks, the full-width forms and
    the combining diacritics, in strings of 40 (one name per string)."""
    ranges = [(0x41, 0x7B), (0xC0, 0x250), (0x370, 0x400), (0x400, 0x530), (0x1E00, 0x2000),
              (0x300, 0x370), (0xFF21, 0xFF5B)]  # fmt: skip
    chars = [
        chr(c)
        for start, end in ranges
        for c in range(start, end)
        if unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co", "Cc")
    ]
    return ["".join(chars[i : i + 40]) for i in range(0, len(chars), 40)]


async def _stored(db: Database, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str | None, str | None]]:
    """Each account's name and folded name as the database holds them (not the ORM's copy)."""
    async with db.read() as s:
        rows = await s.execute(
            select(Account.id, Account.display_name, Account.display_name_folded).where(
                Account.id.in_(ids)
            )
        )
        return {i: (name, folded) for i, name, folded in rows}


def _agree(stored: dict[uuid.UUID, tuple[str | None, str | None]]) -> None:
    for name, folded in stored.values():
        assert folded == (fold(name) if name is not None else None), name


async def test_the_folded_name_is_written_with_the_name(db: Database, settings: Settings) -> None:
    """Made, renamed through the ORM, renamed by a bulk `update(Account)`, erased: the stored
    `display_name_folded` is `fold(display_name)` after each — every letter of the scripts
    staff type names in, and the names of `NAMES`."""
    names = [*NAMES.values(), *_sample()]

    async def make(s: AsyncSession) -> list[uuid.UUID]:
        made = [Account(id=uuid7(), username=f"fold{i}", display_name=n, password_hash="!")
                for i, n in enumerate(names)]  # fmt: skip
        made.append(Account(id=uuid7(), username="fold_none", password_hash="!"))
        s.add_all(made)
        await s.flush()
        return [a.id for a in made]

    ids = await db.run(make)
    stored = await _stored(db, ids)
    _agree(stored)
    assert stored[ids[0]] == ("María García", "maria garcia")
    assert stored[ids[-1]] == (None, None)

    async def rename(s: AsyncSession) -> None:  # the ORM: a profile change
        for n, i in enumerate(ids):
            account = await s.get(Account, i)
            assert account is not None
            account.display_name = names[-1 - n] if n < len(names) else "Ñandú"

    await db.run(rename)
    stored = await _stored(db, ids)
    _agree(stored)
    assert stored[ids[-1]] == ("Ñandú", "nandu")

    async def bulk(s: AsyncSession) -> None:  # as tests and scripts write names
        await s.execute(update(Account).where(Account.id == ids[0]).values(display_name="Ö Ç"))
        await s.execute(
            update(Account).where(Account.id == ids[1]).values({Account.display_name: None})
        )

    await db.run(bulk)
    stored = await _stored(db, ids)
    _agree(stored)
    assert stored[ids[0]] == ("Ö Ç", "o c") and stored[ids[1]] == (None, None)

    async def erase(s: AsyncSession) -> None:
        account = await s.get(Account, ids[2])
        assert account is not None
        await erase_account(s, settings, account, utcnow())

    await db.run(erase)
    assert (await _stored(db, [ids[2]]))[ids[2]] == (None, None)


async def test_a_name_folded_longer_than_it_is_is_kept_whole_and_found(db: Database) -> None:
    """Folding can lengthen a name: a Hangul syllable is two or three letters, "ß" two. A name
    of the longest length taken (128) is stored with its whole fold and found by its end."""
    name = "김" * 120 + "Straße"

    async def make(s: AsyncSession) -> uuid.UUID:
        account = Account(id=uuid7(), username="long_fold", display_name=name,
                          password_hash="!")  # fmt: skip
        s.add(account)
        await s.flush()
        return account.id

    account_id = await db.run(make)
    assert len(fold(name)) > 256
    assert (await _stored(db, [account_id]))[account_id] == (name, fold(name))
    async with db.read() as s:
        found = await find_customers(s, "김strasse")
    assert [a.id for a in found.accounts] == [account_id]


async def test_a_name_the_orm_cannot_fold_is_refused_and_nothing_changes(db: Database) -> None:
    """A bulk write whose name Python cannot see (an SQL expression, rows of parameters) and
    that does not give the folded name itself is refused, rather than storing a name the
    search no longer finds as written."""
    ids = await _accounts(db)

    async def by_expression(s: AsyncSession) -> None:
        await s.execute(
            update(Account)
            .where(Account.id == ids["garcia_acc"])
            .values(display_name=func.upper(Account.display_name))
        )

    async def by_rows(s: AsyncSession) -> None:
        await s.execute(
            update(Account), [{"id": ids["garcia_acc"], "display_name": "Zoë"}]
        )

    for write in (by_expression, by_rows):
        with pytest.raises(ValueError, match="display_name_folded"):
            await db.run(write)
    assert (await _stored(db, [ids["garcia_acc"]]))[ids["garcia_acc"]] == (
        "María García", "maria garcia"
    )

    async def with_its_fold(s: AsyncSession) -> None:  # giving both is the writer's call
        await s.execute(
            update(Account),
            [{"id": ids["garcia_acc"], "display_name": "Zoë", "display_name_folded": "zoe"}],
        )

    await db.run(with_its_fold)
    assert (await _stored(db, [ids["garcia_acc"]]))[ids["garcia_acc"]] == ("Zoë", "zoe")
