"""What staff type into the customer pages, refused on the page as any bad filter or amount is:
an amount beyond what the API takes, a page cursor without its offset. Nothing is written."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from simcharge.backoffice.models import Adjustment, AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.translations import translate
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.tmf654.helpers import new_holder, totals


async def _count(db: Database, model: type[Adjustment] | type[AuditEntry]) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def _written(db: Database) -> int:
    """Audit entries of what was done (a refused form's page drawn again is a `customer.view`)."""
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action != "customer.view"))).scalar_one())


async def test_an_adjustment_beyond_the_apis_bound_is_not_a_valid_amount(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    url = f"/backoffice/lines/{holder.line.id}/adjust"
    wallet, data = "wallet", str(holder.data_bucket)
    audited = await _written(db)
    for target, amount in [
        (wallet, "9" * 30),
        (wallet, "1e30"),
        (wallet, "-1e30"),
        (wallet, "1e99999999"),  # an integer of it would take minutes to make
        (wallet, "10000000000.01"),  # 10^12 + 1 cents: one over the bound
        (wallet, "Infinity"),
        (data, "9" * 30),
        (data, "1000000"),  # MB: 1 048 576 000 000 bytes
    ]:
        r = await client.post(
            url, data={"csrf": csrf, "target": target, "amount": amount, "reason": "test"}
        )
        assert r.status_code == 422, (target, amount, r.text)
        assert r.headers["content-type"].startswith("text/html")
        # the customer's page again, the amount marked (tests/backoffice/test_forms_in_place.py)
        assert f'id="adjust-{holder.line.id}-amount-error">This is not a valid amount.' in r.text
    assert await _count(db, Adjustment) == 0
    assert await _written(db) == audited  # no entry but the page's view drawn again
    assert await totals(db, holder.line.wallet_account_id) == (2000, 0)
    assert await totals(db, holder.data_bucket) == (500 * 1_048_576, 0)


async def test_a_usage_page_cursor_without_its_offset_is_a_bad_filter(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    admin = await new_staff(db, settings, "admin")
    await web_sign_in(client, admin)
    url = f"/backoffice/lines/{holder.line.id}/usage"
    audited = await _count(db, AuditEntry)
    for before in ("2026-01-01", "2026-01-01T00:00:00"):
        r = await client.get(url, params={"before": before})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("text/html")
        assert "<h1>Some input is not valid.</h1>" in r.text
        assert '<p class="flash error" role="alert">before: Input should have timezone info' in (
            r.text
        )
    assert await _count(db, AuditEntry) == audited
    r = await client.get(url, params={"before": "2026-01-01T00:00:00+00:00"})
    assert r.status_code == 200


async def test_a_browser_on_a_back_office_address_that_is_no_page_gets_a_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A mistyped back-office address, or a form's address opened as a page: the back office's
    own error page in the reader's language, as for any error on its pages; the admin API and
    clients that do not ask for HTML keep problem+json."""
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8", "accept-language": "es"}
    admin = await new_staff(db, settings, "admin")
    await web_sign_in(client, admin)
    for path, status in (("/backoffice/no-such-page", 404), ("/backoffice/logout", 405)):
        r = await client.get(path, headers=browser)
        assert (r.status_code, r.headers["content-type"].split(";")[0]) == (status, "text/html")
        assert '<html lang="es"' in r.text, r.text[:300]
        assert translate("es", "Back to the back office") in r.text
    said = translate("es", "Nothing was found here.")
    assert said != "Nothing was found here."
    assert said in (await client.get("/backoffice/no-such-page", headers=browser)).text
    for path, headers in (("/api/v1/admin/nowhere", browser), ("/backoffice/nowhere", {})):
        r = await client.get(path, headers=headers)
        assert r.headers["content-type"] == "application/problem+json", path
