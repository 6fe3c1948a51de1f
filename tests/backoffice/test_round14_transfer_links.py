"""The customer page's ledger transfers (fourteenth round): the Reference column showed the raw
`order:<uuid>`. An order, a refund or a line a reference names is now shown by its reference or
number, linked to where the page shows it; any other reference stays as it is."""

from __future__ import annotations

import re
import uuid
from html import unescape
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.backoffice.links import Named, References, ids_of_references
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.orders.models import Order, Refund
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import fulfilled, idem, new_payer, run_worker


def _reference_cells(html: str, line_id: uuid.UUID) -> list[str]:
    table = html.split(f'id="transfers-{line_id}"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    return [re.findall(r"<td>(.*?)</td>", row, re.S)[-1] for row in rows]


async def test_transfer_references_name_the_order_and_the_refund(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    finance = await new_staff(db, settings, "finance")
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**finance.auth, **idem()}, json={"reason": "test"})
    assert r.status_code == 202, r.text
    await run_worker(app, db, settings)
    async with db.read() as s:
        row = (await s.execute(select(Order).where(Order.id == uuid.UUID(order["id"])))).scalar_one()
        refund = (await s.execute(select(Refund).where(Refund.order_id == row.id))).scalar_one()
    await web_sign_in(client, finance)
    page = await client.get(f"/backoffice/customers/{row.account_id}")
    assert page.status_code == 200
    cells = _reference_cells(page.text, payer.line.id)
    panel = f"/backoffice/customers/{row.account_id}#order-{row.id}"
    assert f'<small>Order <a href="{panel}">{row.reference}</a></small>' in cells
    assert f'<small>Refund <a href="{panel}">{refund.reference}</a></small>' in cells
    assert not any(f"order:{row.id}" in c or f"refund:{refund.id}" in c for c in cells)
    # The order's panel the links go to is on the page.
    assert f'id="order-{row.id}"' in page.text
    assert unescape(page.text).count(row.reference) >= 2


def test_unknown_references_stay_raw() -> None:
    order, refund, line, account = (uuid.uuid4() for _ in range(4))
    about = References(
        {order: Named("O-REF", account)}, {line: Named("+14155550100", account)},
        {refund: (order, Named("RF-REF", account))},
    )
    got = about.reference(f"order:{order}")
    assert got is not None and (got.kind, got.label, got.rest) == ("order", "O-REF", "")
    assert got.href == f"/backoffice/customers/{account}#order-{order}"
    got = about.reference(f"order:{order}:dispute")
    assert got is not None and got.rest == ":dispute"
    got = about.reference(f"refund:{refund}")
    assert got is not None and (got.label, got.href) == (
        "RF-REF", f"/backoffice/customers/{account}#order-{order}")
    got = about.reference(f"line:{line}")
    assert got is not None and got.href == f"/backoffice/customers/{account}#line-{line}"
    for raw in (None, "", "nchf:abc", f"adjustment:{uuid.uuid4()}", f"order:{uuid.uuid4()}",
                f"refund:{uuid.uuid4()}", "order:not-a-uuid-at-all-but-36-characters!",
                "order:" + "-" * 36, f"ORDER:{order}", f" order:{order}"):
        assert about.reference(raw) is None, raw
    ids = ids_of_references([f"order:{order}", f"refund:{refund}:x", f"line:{line}", "nchf:1",
                             "order:" + "-" * 36, None])
    assert ids == {"order": {order}, "refund": {refund}, "line": {line}}


def test_a_raw_reference_is_escaped() -> None:
    """Unknown text is shown as it is — escaped, never as markup."""
    from simcharge.backoffice.web import environment

    env = environment("en")
    html = env.from_string(
        '{% from "_links.html" import reference with context %}{{ reference(text, about) }}'
    ).render(text="<b>x</b>:1", about=References({}, {}))
    assert html == "&lt;b&gt;x&lt;/b&gt;:1"
