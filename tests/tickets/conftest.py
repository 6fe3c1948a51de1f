from __future__ import annotations

import pytest

from simcharge.db import Database
from tests.factories import load_demo_catalog


@pytest.fixture(autouse=True)
async def _catalog(db: Database) -> None:
    await db.run(load_demo_catalog)
