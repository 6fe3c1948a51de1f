"""Fixtures of the charging tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simcharge.config import get_settings
from tests.conftest import Backend


@pytest.fixture
async def cli_db(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A migrated database of its own, which `simcharge` commands run in-process use (through
    `SIMCHARGE_DATABASE_URL`); dropped afterwards."""
    url = await backend.copy("usagecli")
    monkeypatch.setenv("SIMCHARGE_DATABASE_URL", url)
    monkeypatch.setenv("SIMCHARGE_ENV", "test")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    await backend.discard(url)
