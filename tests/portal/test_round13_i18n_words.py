"""The Chinese pages' words and punctuation, as the walkthrough found them.

"Change" on the two review pages read 切换/切換 ("switch") — now 修改; the unread notice's
badge read 新建 ("create new") — now 新; a page title after a refused form read "错误： 登录"
(a space after the full-width colon); the order page wrote its labels with an ASCII ": "
("余额: ") — now the language's own, through a translatable "%(label)s: %(value)s"."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from babel.messages.pofile import read_po

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit import translations as kit_translations
from simcharge.kit.translations import CATALOG_DIRS, LOCALES_DIR, translations
from simcharge.notifications.models import Notice
from simcharge.portal.web import environment
from tests.portal.helpers import csrf_of, new_customer, sign_in
from tests.portal.test_accessibility_edges import fulfilled_order
from tests.portal.test_transfers import review as transfer_review

pytestmark = pytest.mark.usefixtures("shop")

LABEL = "%(label)s: %(value)s"


def _title(html: str) -> str:
    found = re.search(r"<title>(.*?)</title>", html, re.S)
    assert found
    return found.group(1)


@pytest.mark.parametrize(("language", "wrong"), [("zh-Hans", "切换"), ("zh-Hant", "切換")])
async def test_change_on_the_review_pages_is_xiugai(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str, wrong: str
) -> None:
    me = await new_customer(db, settings, language=language)
    friend = await new_customer(db, settings)
    sign_in(client, me)
    r = await client.get("/account/topup/review", params={
        "line": str(me.line.id), "plan": "traveller-20", "method": "sandbox"})
    assert r.status_code == 200
    assert re.search(r'<a href="[^"]+">修改</a>', r.text) and wrong not in r.text
    r = await transfer_review(client, me, friend.line.msisdn, "monetary", "5")
    assert r.status_code == 200
    assert re.search(r'<a href="[^"]+">修改</a>', r.text) and wrong not in r.text


@pytest.mark.parametrize("language", ["zh-Hans", "zh-Hant"])
async def test_an_unread_notice_is_marked_xin(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str
) -> None:
    me = await new_customer(db, settings, language=language)

    async def add(s: object) -> None:
        s.add(Notice(account_id=me.account_id, template="account.welcome",  # type: ignore[attr-defined]
                     params={"username": me.username}))

    await db.run(add)  # type: ignore[arg-type]
    sign_in(client, me)
    r = await client.get("/account")
    assert '<span class="state pending">新</span>' in r.text and "新建" not in r.text


@pytest.mark.parametrize(
    ("language", "title"),
    [
        ("zh-Hans", "错误：登录 · "),
        ("zh-Hant", "錯誤：登入 · "),
        ("en", "Error: Sign in · "),
        ("es", "Error: Iniciar sesión · "),
    ],
)
async def test_a_refused_forms_title_has_no_space_after_a_full_width_colon(
    client: httpx.AsyncClient, language: str, title: str
) -> None:
    client.cookies.set("sc_lang", language)
    page = await client.get("/login")
    r = await client.post("/login", data={"csrf": csrf_of(page.text), "login": "nobody",
                                          "password": "wrong password here"})
    assert r.status_code in (400, 401, 422), r.status_code
    assert _title(r.text).startswith(title), _title(r.text)
    assert "： " not in _title(r.text)


async def test_the_title_without_an_error_has_no_prefix(client: httpx.AsyncClient) -> None:
    client.cookies.set("sc_lang", "zh-Hans")
    assert _title((await client.get("/login")).text).startswith("登录 · ")


@pytest.fixture
def chinese_label_pattern(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The catalogs as the lead's `make messages` and translation will make them: the label
    pattern translated with the full-width colon (already so, once the catalog has it)."""
    copy = tmp_path / "locales"
    shutil.copytree(LOCALES_DIR, copy)
    po = copy / CATALOG_DIRS["zh-Hans"] / "LC_MESSAGES" / "messages.po"
    with po.open("rb") as fh:
        entry = read_po(fh).get(LABEL)
    if entry is None:
        with po.open("a", encoding="utf-8") as fh:
            fh.write(f'\nmsgid "{LABEL}"\nmsgstr "%(label)s：%(value)s"\n')
    monkeypatch.setattr(kit_translations, "LOCALES_DIR", copy)
    translations.cache_clear()
    environment.cache_clear()
    yield "%(label)s：%(value)s" if entry is None else str(entry.string)
    monkeypatch.undo()
    translations.cache_clear()
    environment.cache_clear()


async def test_the_order_page_writes_its_labels_with_the_languages_colon(
    client: httpx.AsyncClient, db: Database, settings: Settings, chinese_label_pattern: str
) -> None:
    assert chinese_label_pattern == "%(label)s：%(value)s"
    me = await new_customer(db, settings)
    sign_in(client, me)
    order_id = await fulfilled_order(client, settings, me.line.id)
    page = (await client.get(f"/account/orders/{order_id}")).text
    holds = page.split("now holds:", 1)[1].split("</ul>", 1)[0]
    assert re.search(r"<li>Balance: <strong>\$[\d.,]+</strong></li>", holds), holds
    assert "Data: <strong>" in holds
    client.cookies.set("sc_lang", "zh-Hans")
    page = (await client.get(f"/account/orders/{order_id}")).text
    holds = page.split('data-testid="outcome"', 1)[1].split("</div>", 1)[0]
    assert re.search(r"<li>余额：<strong>[^<]+</strong></li>", holds), holds
    assert ": <strong>" not in holds
