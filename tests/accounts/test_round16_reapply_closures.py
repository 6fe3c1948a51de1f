"""Round 16 (DPO review): a restore brings back accounts closed after the backup. Every closure
writes the JSON log line `account.closed` (with the account's id) once committed — never for
one rolled back —, and `simcharge privacy reapply-closures --log FILE [--dry-run]` closes
again each account such a line names that the database holds open: idempotent, audited, other
lines passed over, an unreadable file refused (exit 2) with nothing changed. Later in the round
(B14): the log read as shippers keep it (a prefix, Docker's `{"log": …}`), a file with no line
of the application's log refused (exit 1), a damaged line reported and the others applied."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from simcharge import cli
from simcharge.accounts import closures
from simcharge.accounts.models import Account
from simcharge.backoffice.models import AuditEntry
from simcharge.config import get_settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from tests.auth.helpers import PASSWORD, Deliver, signup
from tests.conftest import SmtpInbox
from tests.factories import create_account, create_line

runner = CliRunner()


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The privacy logger writing JSON lines as production does (`kit.logging`, json=True)."""
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
    )
    monkeypatch.setattr(closures, "log", logger)
    return out


def _closures_in(text: str) -> list[str]:
    return [
        json.loads(line)["account_id"] for line in text.splitlines()
        if json.loads(line).get("event") == "account.closed"
    ]


async def test_a_closure_logs_its_line_once_committed_and_never_when_rolled_back(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver,
    shipped: io.StringIO,
) -> None:
    customer = await signup(client, inbox, deliver)
    async with db.read() as s:
        account = (await s.execute(
            select(Account).where(Account.username == customer.username)
        )).scalar_one()  # fmt: skip
    r = await client.post("/api/v1/me/close", headers=customer.auth, json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    assert _closures_in(shipped.getvalue()) == [str(account.id)]

    other = await db.run(lambda s: create_account(s))

    async def rolled_back(s: AsyncSession) -> None:
        row = await s.get(Account, other.id)
        assert row is not None
        row.status = "closed"
        await s.flush()
        raise RuntimeError("the transaction fails after the closure")

    with pytest.raises(RuntimeError):
        await db.run(rolled_back)
    assert _closures_in(shipped.getvalue()) == [str(account.id)]


def _invoke(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(cli.app, list(args), input=stdin)
    return result.exit_code, result.output


async def _people(db: Database) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """An open account with a line (closed after the backup, per the log), one closed already."""

    async def run(s: AsyncSession) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        n = uuid.uuid4().hex[:8]
        back = await create_account(s, username=f"rc{n}", email=f"rc{n}@example.com",
                                    email_verified_at=utcnow(), display_name="Ana Cruz")
        line = await create_line(s, account_id=back.id)
        done = await create_account(s, status="closed", display_name=None)
        return back.id, line.id, done.id

    return await db.run(run)


def _signed(account_id: Any) -> dict[str, str]:
    """What a closure's line carries since round 17 (`closures.note_closure`): `closed_at` and
    its MAC under the command's secret key (none for a line naming no account id)."""
    try:
        signed_id = uuid.UUID(str(account_id))
    except ValueError:
        return {}
    at = "2026-12-10T07:59:59+00:00"
    return {"closed_at": at, "mac": closures.closure_mac(get_settings().secret_key, signed_id, at)}


def _log(*ids: Any) -> str:
    lines = ['{"event": "http.request", "route": "/api/v1/me", "status": 200}', "not json",
             "", "uvicorn: started"]
    for i in ids:
        lines.append(json.dumps({"event": "account.closed", "account_id": str(i),
                                 "level": "info", "timestamp": "2026-12-10T08:00:00Z",
                                 **_signed(i)}))
    return "\n".join(lines) + "\n"


async def _state(db: Database, account_id: uuid.UUID, line_id: uuid.UUID) -> tuple[Any, ...]:
    async with db.read() as s:
        a = await s.get(Account, account_id, populate_existing=True)
        line = await s.get(Line, line_id, populate_existing=True)
        audits = await s.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "account.closure_reapplied",
            AuditEntry.target_id == str(account_id)))
    assert a is not None and line is not None
    return a.status, a.email, a.display_name, line.account_id, audits


def test_reapply_closures_dry_run_then_close_then_nothing_more(
    cli_env: str, tmp_path: Path
) -> None:
    back, line, done = cli._run(_people)
    unknown = uuid.uuid4()
    log = tmp_path / "shipped.log"
    log.write_text(_log(back, done, unknown, back), encoding="utf-8")

    code, out = _invoke("privacy", "reapply-closures", "--log", str(log), "--dry-run")
    assert code == 0, out
    assert f"{back}  would close again" in out and f"{done}  closed already" in out
    assert f"{unknown}  not in the database" in out
    status, email, *_ = cli._run(lambda db: _state(db, back, line))
    assert status == "active" and email is not None  # the dry run changed nothing

    code, out = _invoke("privacy", "reapply-closures", "--log", str(log))
    assert code == 0, out
    assert "8 line(s) read, 3 closure(s) logged: closed again 1, closed already 1" in out
    status, email, name, owner, audits = cli._run(lambda db: _state(db, back, line))
    assert (status, email, name, owner, audits) == ("closed", None, None, None, 1)
    entry = cli._run(_audit_of(back))
    assert entry.actor.startswith("cli:")
    assert entry.details["logged_at"] == "2026-12-10T07:59:59+00:00"  # the time the line signs

    # Again, from stdin: nothing more.
    code, out = _invoke("privacy", "reapply-closures", stdin=log.read_text(encoding="utf-8"))
    assert code == 0, out
    assert "closed again 0, closed already 2" in out
    assert cli._run(lambda db: _state(db, back, line))[4] == 1


def _audit_of(account_id: uuid.UUID) -> Any:
    async def run(db: Database) -> AuditEntry:
        async with db.read() as s:
            return (await s.execute(select(AuditEntry).where(
                AuditEntry.action == "account.closure_reapplied",
                AuditEntry.target_id == str(account_id)))).scalar_one()

    return run


def test_an_unreadable_log_changes_nothing(cli_env: str, tmp_path: Path) -> None:
    back, line, _ = cli._run(_people)
    code, out = _invoke("privacy", "reapply-closures", "--log", str(tmp_path / "missing.log"))
    assert code == 2 and "cannot read the log" in out
    latin = tmp_path / "latin.log"
    latin.write_bytes(b"\xff\xfe account.closed\n")
    code, out = _invoke("privacy", "reapply-closures", "--log", str(latin))
    assert code == 2 and "cannot read the log" in out
    assert cli._run(lambda db: _state(db, back, line))[0] == "active"


def _closed_line(account_id: Any, **extra: Any) -> str:
    return json.dumps({"event": "account.closed", "account_id": str(account_id),
                       "level": "info", "timestamp": "2026-12-10T08:00:00Z",
                       **_signed(account_id), **extra})


def test_a_damaged_line_is_reported_and_the_others_applied(
    cli_env: str, tmp_path: Path
) -> None:
    """Round 16 (B14): one `account.closed` line naming no id stopped the whole run (exit 2);
    now it is reported, nothing changed for it, the others applied, exit 1 at the end."""
    back, line, _ = cli._run(_people)
    log = tmp_path / "shipped.log"
    log.write_text(_log() + _closed_line("nope") + "\n" + _closed_line(back) + "\n"
                   + _closed_line("") + "\n", encoding="utf-8")
    code, out = _invoke("privacy", "reapply-closures", "--log", str(log), "--dry-run")
    assert code == 1 and "line(s) 5, 7 name no account id" in out, out
    assert f"{back}  would close again" in out
    assert cli._run(lambda db: _state(db, back, line))[0] == "active"
    result = runner.invoke(cli.app, ["privacy", "reapply-closures", "--log", str(log)])
    assert result.exit_code == 1, result.output
    assert "line(s) 5, 7 name no account id" in result.stderr
    assert "closed again 1, closed already 0, not in the database 0, naming no account id 2" \
        in result.stdout
    assert cli._run(lambda db: _state(db, back, line))[::4] == ("closed", 1)


def test_a_log_in_a_wrapper_or_behind_a_prefix_is_read(cli_env: str, tmp_path: Path) -> None:
    """Round 16 (B14): a log as shippers keep it — Docker's json-file `{"log": …}` (a line
    longer than 16 KiB in pieces), a syslog or Kubernetes prefix, journald's export — was
    passed over line by line, and the command said 0 closures."""
    ids = [cli._run(_people) for _ in range(5)]
    backs = [back for back, _, _ in ids]
    padding = "x" * 20_000
    long_line = _closed_line(backs[1], note=padding) + "\n"
    pieces = [long_line[i:i + 16_384] for i in range(0, len(long_line), 16_384)]
    docker = [json.dumps({"log": _closed_line(backs[0]) + "\n", "stream": "stderr",
                          "time": "2026-12-07T10:00:00.1Z"})]
    docker += [json.dumps({"log": p, "stream": "stderr", "time": "2026-12-07T10:00:01Z"})
               for p in pieces]
    docker.append(json.dumps({"log": "plain text from the entrypoint\n", "stream": "stdout"}))
    prefixed = [
        f"2026-12-07T10:00:00Z host app[123]: {_closed_line(backs[2])}",
        f"2026-12-07T10:00:00.5Z stderr F {_closed_line(backs[3])} trailing",
        "Dec  7 10:00:00 host app{1}[9]: {not json} " + _closed_line(backs[4]),
    ]
    log = tmp_path / "shipped.log"
    log.write_text("\n".join(docker + prefixed) + "\n", encoding="utf-8")
    code, out = _invoke("privacy", "reapply-closures", "--log", str(log), "--dry-run")
    assert code == 0, out
    assert all(f"{back}  would close again" in out for back in backs), out
    assert "5 closure(s) logged" in out
    found = closures.logged_closures(
        [json.dumps({"MESSAGE": _closed_line(backs[0]), "_PID": "9"})])
    assert list(found.closed_at) == [backs[0]] and found.ours == 1


def test_only_the_applications_lines_count(cli_env: str, tmp_path: Path) -> None:
    """A line that names a logger not the application's is another program's, whatever its
    event; the application's lines name none (`kit.logging`), or `simcharge…`."""
    back, line, _ = cli._run(_people)
    other, other_line, _ = cli._run(_people)
    log = tmp_path / "shipped.log"
    log.write_text(_closed_line(other, logger="billing-sidecar") + "\n"
                   + _closed_line(back, logger="simcharge.privacy") + "\n"
                   + json.dumps({"event": "account.closed", "account_id": str(other)})  # no time
                   + "\n",
                   encoding="utf-8")
    code, out = _invoke("privacy", "reapply-closures", "--log", str(log))
    assert code == 0 and "1 closure(s) logged: closed again 1" in out, out
    assert cli._run(lambda db: _state(db, back, line))[0] == "closed"
    assert cli._run(lambda db: _state(db, other, other_line))[0] == "active"


@pytest.mark.parametrize(
    "text",
    [
        "plain text\nuvicorn: started\n",
        '{"log": "not json\\n", "stream": "stderr"}\n',
        '{"msg": "account.closed", "account_id": "x", "level": "info"}\n',
        "<14>Dec  7 host app: {\"event\": \"account.closed\"\n",  # cut short
    ],
)
def test_a_log_of_which_no_line_is_the_applications_is_refused(
    cli_env: str, tmp_path: Path, text: str
) -> None:
    """Round 16 (B14): the wrong file, or the log in the console format, said "0 closure(s)"
    and exit 0 — as if there were none to apply. Now a warning on stderr, exit 1."""
    back, line, _ = cli._run(_people)
    log = tmp_path / "console.log"
    log.write_text(text + f"account.closed account_id={back}\n", encoding="utf-8")
    result = runner.invoke(cli.app, ["privacy", "reapply-closures", "--log", str(log)])
    assert result.exit_code == 1, result.output
    assert f"no line of {log} is simcharge's JSON log" in result.stderr
    assert "SIMCHARGE_LOG_JSON=true" in result.stderr and result.stdout == ""
    result = runner.invoke(cli.app, ["privacy", "reapply-closures"], input=text)
    assert result.exit_code == 1 and "no line of stdin" in result.stderr
    assert cli._run(lambda db: _state(db, back, line))[0] == "active"
    # An empty log (or blank lines only) is no closure, not the wrong file.
    code, out = _invoke("privacy", "reapply-closures", stdin="\n\n")
    assert code == 0 and "2 line(s) read, 0 closure(s) logged" in out
