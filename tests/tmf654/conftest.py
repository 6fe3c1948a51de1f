from __future__ import annotations

from decimal import Decimal

import pytest

from simcharge.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Transfers cost 2 % + 0.10 in these tests, so that fees show."""
    return settings.model_copy(update={
        "balance_transfer_fee_percent": Decimal("2"),
        "balance_transfer_fee_fixed": 10,
    })
