"""Accessibility of the customer portal's pages, as the HTML says it (WCAG 2.2 AA): what a
screen reader is told about links, languages, refused choices and refused forms, what a page
does by itself, what a field asks for. Each test's docstring names the requirement, its success
criterion and what was wrong before. The pages are parsed with the stdlib's `html.parser`; how
they lay out at 320 px is `tests/portal/browser/test_accessibility_edges.py`."""

from __future__ import annotations

import uuid
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from simcharge.config import Settings
from simcharge.db import Database
from tests.portal.helpers import (
    new_customer,
    pay_on_sandbox_page,
    portal_order,
    post_form,
    sign_in,
)

pytestmark = pytest.mark.usefixtures("shop")


# --- a small DOM from the stdlib parser -----------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Any:
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def find_all(self, tag: str) -> list[Node]:
        return [n for n in self.iter() if n.tag == tag]

    def by_id(self, ident: str) -> Node | None:
        return next((n for n in self.iter() if n.attrs.get("id") == ident), None)

    def lang(self) -> str | None:
        node: Node | None = self
        while node is not None:
            if "lang" in node.attrs:
                return node.attrs["lang"]
            node = node.parent
        return None


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in _VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.children.append(data)


def dom(html: str) -> Node:
    b = _Builder()
    b.feed(html)
    b.close()
    return b.root


def ws(text: str) -> str:
    return " ".join(text.split())


def by_testid(page: Node, testid: str) -> Node:
    found: Node = next(n for n in page.iter() if n.attrs.get("data-testid") == testid)
    return found


async def fulfilled_order(
    client: httpx.AsyncClient, settings: Settings, line_id: uuid.UUID
) -> uuid.UUID:
    """A top-up paid on the sandbox's page and credited ("check again now")."""
    order_id, pay_url = await portal_order(client, line_id)
    await pay_on_sandbox_page(client, settings, pay_url)
    page = f"/account/orders/{order_id}"
    r = await post_form(client, page, page + "/check", {})
    assert r.status_code == 303, r.text
    assert "Thank you! Your top-up is done." in (await client.get(page)).text
    return order_id


# --- 2.4.4 Link Purpose (In Context) ------------------------------------------------------------


async def test_each_order_link_of_the_records_names_its_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A movement that came from a top-up links to its order by a name that tells the orders
    apart: "Order" and, visually hidden, the order's reference (as the "PDF" links of the
    orders table do), in a column headed "Order". Before, every such link was named "Order",
    each to another order, under the heading "Receipt": a screen reader's list of links read
    "Order, Order, Order…". WCAG 2.4.4 Link Purpose (In Context), level A."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    first = await fulfilled_order(client, settings, customer.line.id)
    second = await fulfilled_order(client, settings, customer.line.id)
    page = dom((await client.get("/account/records")).text)
    table = page.find_all("table")[0]
    assert ws(table.find_all("th")[-1].text()) == "Order"
    names: dict[str, set[str]] = {}
    for a in table.find_all("a"):
        names.setdefault(a.attrs["href"], set()).add(ws(a.text()))
    assert set(names) == {f"/account/orders/{first}", f"/account/orders/{second}"}
    assert all(len(n) == 1 for n in names.values()), names  # one order, one name
    assert len({n for ns in names.values() for n in ns}) == 2, names  # two orders, two names
    for name in (n for ns in names.values() for n in ns):
        assert name.startswith("Order SC") and len(name) == len("Order ") + 28, name


# --- 3.1.2 Language of Parts ----------------------------------------------------------------------


async def test_the_language_of_messages_is_read_in_that_language(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The user center's "Language of messages" shows the language by its own name ("简体中文")
    and marks it with that language (`lang="zh-Hans"`), as the footer's switcher and the
    register form do. Before, it had no `lang`: on an English page a screen reader read the
    Chinese characters with the English voice. WCAG 3.1.2 Language of Parts, level AA."""
    customer = await new_customer(db, settings, language="zh-Hans")
    sign_in(client, customer)
    client.cookies.set("sc_lang", "en")  # the page in English, the messages in Chinese
    page = dom((await client.get("/account")).text)
    assert page.find_all("html")[0].attrs["lang"] == "en"
    dd = by_testid(page, "language")
    assert ws(dd.text()) == "简体中文"
    assert dd.lang() == "zh-Hans"


# --- 1.3.1 Info and Relationships / 3.3.1 Error Identification -----------------------------------


@pytest.mark.parametrize(("choice", "legend", "field"), [
    ({"plan": "no-such-plan", "method": "sandbox"}, "2. Which package?", "plan"),
    ({"plan": "traveller-20", "method": "no-such-method"}, "3. How do you pay?", "method"),
])
async def test_a_refused_package_or_method_is_said_by_its_group(
    client: httpx.AsyncClient, db: Database, settings: Settings, choice: dict[str, str],
    legend: str, field: str,
) -> None:
    """When the top-up's package or way to pay is refused, the reason shown in its group is
    the group's description: the fieldset's `aria-describedby` names the message's id, as the
    number field above and the transfer page's "What" do. Before, the message was a bare
    `<p class="error">` that nothing referred to: moving to the radio buttons, a screen reader
    user heard the choices but not what was wrong with them. WCAG 1.3.1 Info and
    Relationships and 3.3.1 Error Identification, level A."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await client.get("/account/topup/review", params={"line": str(customer.line.id), **choice})
    assert r.status_code in (404, 409, 422), r.status_code
    page = dom(r.text)
    fieldset = next(f for f in page.find_all("fieldset")
                    if ws(f.find_all("legend")[0].text()) == legend)
    assert fieldset.attrs.get("aria-describedby") == f"e-{field}"
    message = page.by_id(f"e-{field}")
    assert message is not None and "error" in message.attrs["class"].split()
    assert ws(message.text())
    assert any(n is message for n in fieldset.iter())  # shown inside its group


async def test_a_choice_that_is_not_refused_has_no_description(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Without a refusal the top-up's groups refer to nothing (an `aria-describedby` naming a
    missing id is an error of its own)."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    page = dom((await client.get("/account/topup")).text)
    assert all("aria-describedby" not in f.attrs for f in page.find_all("fieldset"))


# --- 3.3.1 Error Identification / 4.1.3 Status Messages -----------------------------------------


@pytest.mark.parametrize(("path", "data"), [
    ("/register", {"username": "newbie", "password": "password", "email": "not-an-address"}),
    ("/forgot", {"login": "", "channel": "email"}),
    ("/login", {"login": "nobody-here", "password": "wrong password 1"}),
])
async def test_a_refused_form_says_so_in_its_title_and_focuses_its_summary(
    client: httpx.AsyncClient, path: str, data: dict[str, str]
) -> None:
    """A refused form comes back with a title that starts "Error:" and a summary
    (`role="alert"`) that takes the focus on load (`tabindex="-1" autofocus`), so a screen
    reader starts with what went wrong. Before, the title was the same as the empty form's,
    the focus stayed at the top and an alert already in the page when it loads is not
    announced; /forgot with an empty field had no summary at all, only the field's message.
    WCAG 3.3.1 Error Identification (G194) and 4.1.3 Status Messages, level A/AA."""
    r = await post_form(client, path, path, data)
    assert r.status_code in (400, 401, 409, 422), r.status_code
    page = dom(r.text)
    assert ws(page.find_all("title")[0].text()).startswith("Error: ")
    focused = [n for n in page.iter() if "autofocus" in n.attrs]
    assert len(focused) == 1, [n.tag for n in focused]
    summary = focused[0]
    assert summary.attrs.get("role") == "alert" and summary.attrs.get("tabindex") == "-1"
    assert ws(summary.text())
    if path == "/forgot":
        assert ws(summary.text()) == "Some input is not valid."
        assert page.by_id("e-login") is not None


@pytest.mark.parametrize("path", ["/register", "/forgot", "/login"])
async def test_a_form_not_yet_sent_neither_claims_an_error_nor_moves_the_focus(
    client: httpx.AsyncClient, path: str
) -> None:
    """The same forms shown for the first time: no "Error:" in the title, no summary, nothing
    that takes the focus (WCAG 3.2.1 On Focus: the page starts at its top)."""
    page = dom((await client.get(path)).text)
    assert not ws(page.find_all("title")[0].text()).startswith("Error")
    assert not [n for n in page.iter() if "autofocus" in n.attrs]
    assert not [n for n in page.iter() if n.attrs.get("role") == "alert"]


# --- 2.2.1 Timing Adjustable (F41) ----------------------------------------------------------------


async def test_a_waiting_order_does_not_reload_itself(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A waiting order's page has no `<meta http-equiv="refresh">`: without JavaScript the
    customer reloads it ("Check again now"); with it, `portal.js` asks for the state and
    reloads only when it changed. Before, `<noscript><meta http-equiv="refresh"
    content="5"></noscript>` reloaded it every 5 seconds for as long as the order waited,
    throwing a screen reader back to the top while reading — WCAG's failure F41.
    WCAG 2.2.1 Timing Adjustable, level A."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    order_id, _ = await portal_order(client, customer.line.id)
    r = await client.get(f"/account/orders/{order_id}")
    page = dom(r.text)
    assert any("data-poll" in n.attrs for n in page.iter())  # waiting: the script asks
    assert not [m for m in page.find_all("meta")
                if m.attrs.get("http-equiv", "").lower() == "refresh"]
    assert "Check again now" in r.text


# --- 1.3.5 Identify Input Purpose ----------------------------------------------------------------


async def test_the_language_chosen_at_registration_names_its_purpose(
    client: httpx.AsyncClient,
) -> None:
    """"Language for messages" on the register form is the customer's preferred language, an
    input purpose WCAG lists: the `<select>` says so (`autocomplete="language"`), as the
    form's other fields do (username, new-password, email, tel). Before, it had no
    `autocomplete`. WCAG 1.3.5 Identify Input Purpose, level AA."""
    page = dom((await client.get("/register")).text)
    select = page.by_id("f-language")
    assert select is not None and select.attrs.get("autocomplete") == "language"
