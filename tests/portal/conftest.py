from __future__ import annotations

import pytest

from simcharge.db import Database
from tests.factories import load_demo_catalog


@pytest.fixture
async def shop(db: Database) -> None:
    """The demo catalog in the test's database."""
    await db.run(load_demo_catalog)
