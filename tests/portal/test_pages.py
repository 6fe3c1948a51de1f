"""Every page renders, in every language, with the security headers; forms need their token."""

from __future__ import annotations

import httpx
import pytest

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.i18n import LANGUAGES
from tests.portal.helpers import new_customer, sign_in

pytestmark = pytest.mark.usefixtures("shop")

PUBLIC = ["/", "/register", "/login", "/forgot", "/reset?login=x", "/verify?login=x", "/unlock"]
PRIVATE = ["/account", "/account/topup", "/account/records", "/account/security"]


@pytest.mark.parametrize("language", LANGUAGES)
async def test_every_page_renders_in_every_language(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str
) -> None:
    customer = await new_customer(db, settings)
    client.cookies.set("sc_lang", language)
    for path in PUBLIC:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text[:2000])
        assert f'<html lang="{language}">' in r.text
    sign_in(client, customer)
    for path in PRIVATE:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text[:2000])
        assert "Content-Security-Policy" in r.headers
