"""Migration `0024_line_attached_at`: each attached line learns since when its account holds it
— its latest successful `line_attached` event for that account, else the line's creation — and
an unattached line has none. Run on a database taken back to 0023, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from simcharge.auth.models import SecurityEvent
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from tests.factories import create_account, create_line
from tests.migration_helpers import fresh_database, migrate_to, opened

fresh = fresh_database("attachedat")


async def test_attached_lines_get_their_latest_attach_time(fresh: str) -> None:
    now = utcnow()
    async with opened(fresh) as db, db.transaction() as s:
        account = await create_account(s)
        by_code = await create_line(s, account_id=account.id)
        by_number = await create_line(s, account_id=account.id)
        created = await create_line(s, account_id=account.id)
        free = await create_line(s)
        events = [  # what each event says, days ago, whether it attached the line
            ({"msisdn": by_code.msisdn, "line_id": str(by_code.id)}, 3, True),
            ({"msisdn": by_code.msisdn, "line_id": str(by_code.id)}, 2, True),
            ({"msisdn": by_code.msisdn, "reason": "x"}, 1, False),
            ({"msisdn": by_number.msisdn}, 5, True),
        ]
        for details, days_ago, success in events:
            s.add(SecurityEvent(
                account_id=account.id, kind="line_attached", success=success,
                details=details, created_at=now - timedelta(days=days_ago),
            ))
        ids = (by_code.id, by_number.id, created.id, free.id)
        created_at = created.created_at

    await migrate_to(fresh, "0023_audit_contacts_removed")
    await migrate_to(fresh)

    async with opened(fresh) as db, db.read() as s:
        got = {i: (await s.get(Line, i)) for i in ids}
    seen = {i: line.attached_at for i, line in got.items() if line is not None}
    assert seen[ids[0]] == now - timedelta(days=2)  # the latest successful one
    assert seen[ids[1]] == now - timedelta(days=5)  # an event naming the number only
    assert seen[ids[2]] == created_at  # no event: since the line was made
    assert seen[ids[3]] is None  # no one holds it
