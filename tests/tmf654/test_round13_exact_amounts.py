"""TMF654 reads an amount exactly as it was written (thirteenth round's review, finding 4).
Through a binary float, `90071992547409.93` USD became 9,007,199,254,740,994 cents — one more
than sent — and `20.000000000000001` was taken as 20.00. Now the digits written are the amount:
the first is credited to the cent, the second refused as not exact in USD, nothing moved."""

from __future__ import annotations

import httpx
import pytest

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.ledger.service import MAX_AMOUNT
from tests.orders.helpers import idem
from tests.tmf654.helpers import BASE, api_key, new_holder, totals


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No top-up maximum in the way (fifteenth round: `SIMCHARGE_TMF654_TOPUP_MAX_MINOR`): this is
    about reading the digits of a large amount."""
    return settings.model_copy(update={"tmf654_topup_max_minor": MAX_AMOUNT})


def _topup(raw: str, wallet: object, account: object) -> str:
    return (
        f'{{"amount": {{"amount": {raw}, "units": "USD"}}, "usageType": "monetary", '
        f'"bucket": {{"id": "{wallet}"}}, "partyAccount": {{"id": "{account}"}}}}'
    )


async def test_an_amount_is_read_as_written_not_through_a_float(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db, wallet=0)
    key = await api_key(db, "balance:write", "balance:read")
    headers = {**key, "content-type": "application/json"}

    async def send(raw: str) -> tuple[int, dict, int]:
        before = (await totals(db, h.line.wallet_account_id))[0]
        r = await client.post(
            f"{BASE}/topupBalance", content=_topup(raw, h.line.wallet_account_id, h.account_id),
            headers={**headers, **idem()},
        )
        after = (await totals(db, h.line.wallet_account_id))[0]
        return r.status_code, r.json(), after - before

    status, body, moved = await send("90071992547409.93")
    assert status == 201, body
    assert moved == 9_007_199_254_740_993
    assert body["amount"]["amount"] == 90071992547409.93

    for raw in ("20.000000000000001", "0.1000000000000000055511151231257827"):
        status, body, moved = await send(raw)
        assert status == 400, body
        assert body["field"] == "amount.amount" and moved == 0

    status, body, moved = await send("12.5")
    assert status == 201 and moved == 1250
    status, body, moved = await send("1e1")
    assert status == 201 and moved == 1000
