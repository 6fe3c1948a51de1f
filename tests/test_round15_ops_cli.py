"""The command line as an operator meets it (the fifteenth round's SRE walkthrough): API keys
named as the operator holds them, `serve` on a taken port, a base URL without a host, commands'
log lines, `db upgrade` behind a transaction pooler."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from simcharge import migrate
from simcharge.cli import app
from simcharge.config import Environment, Settings

SIMCHARGE = str(Path(sys.executable).with_name("simcharge"))
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _create(name: str) -> str:
    code, out = invoke("apikey", "create", "--name", name, "--scope", "lines:read")
    assert code == 0, out
    return out.strip()


def test_rotate_and_revoke_take_the_key_as_issued_or_its_prefix_either_way(cli_env: str) -> None:
    token = _create("crm")
    prefix = token.split("_", 2)[1]
    secret = token.split("_", 2)[2]

    # The whole key, as the operator holds it: rotated; the secret is never echoed.
    code, out = invoke("apikey", "rotate", token, "--overlap", "1h")
    assert code == 0, out
    assert f"the key {prefix} expires at" in out and secret not in out
    successor = out.splitlines()[0]

    # `sck_<prefix>` (as the messages name it) and the bare prefix (as `list` shows it).
    code, out = invoke("apikey", "revoke", f"sck_{successor.split('_', 2)[1]}")
    assert code == 0 and out.strip() == f"revoked {successor.split('_', 2)[1]}", out
    code, out = invoke("apikey", "list")
    assert code == 0 and prefix in out and "sck_" not in out
    code, out = invoke("apikey", "revoke", prefix.upper())  # as copied from a capitalised note
    assert code == 0, out

    # Why a key cannot be rotated or revoked, named by its prefix only.
    code, out = invoke("apikey", "revoke", token)
    assert code == 1 and f"no live key {prefix}: it was replaced by {successor.split('_', 2)[1]}" \
        " and was revoked at" in out, out
    assert secret not in out and "sck_" not in out
    code, out = invoke("apikey", "rotate", token)
    assert code == 1 and "was revoked at" in out and secret not in out, out


def test_a_key_that_is_not_there_is_no_such_key_never_echoing_a_secret(cli_env: str) -> None:
    code, out = invoke("apikey", "revoke", "sck_000000000000")
    assert code == 1 and "no such key 000000000000;" in out and "live" not in out, out
    code, out = invoke("apikey", "rotate", "000000000000")
    assert code == 1 and "no such key 000000000000;" in out, out
    # A secret pasted alone (no prefix in it): not echoed, not even its first part.
    pasted = "Zq3vT9xW_kPe2LmR7sYbN4cA1uHdG8fJ0oVwXiQz5tU"
    code, out = invoke("apikey", "revoke", pasted)
    assert code == 1 and "no such key" in out and "Zq3vT9xW" not in out, out


def test_an_expired_key_says_it_expired(cli_env: str) -> None:
    code, out = invoke("apikey", "create", "--name", "short", "--scope", "lines:read",
                       "--expires-in", "30m")
    assert code == 0, out
    prefix = out.strip().split("_", 2)[1]
    from datetime import UTC, datetime, timedelta

    from simcharge.kit.clock import clock

    clock.freeze(datetime.now(UTC) + timedelta(hours=1))
    try:
        code, out = invoke("apikey", "rotate", prefix)
    finally:
        clock.unfreeze()
    assert code == 1 and f"no live key {prefix}: it expired at" in out, out


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_taken_port_says_so_in_one_line_and_exits_1(
    tmp_path: Path, taken_port: int, workers: str
) -> None:
    env = {
        **os.environ,
        "SIMCHARGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_WORKER_IN_PROCESS": "false",
        "SIMCHARGE_LOG_JSON": "true",
    }
    done = subprocess.run(
        [SIMCHARGE, "serve", "--workers", workers, "--port", str(taken_port)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done
    errors = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert errors == [f"simcharge: cannot listen on 127.0.0.1:{taken_port}: Address already in use"]
    assert "Traceback" not in done.stderr + done.stdout


def _production(**changes: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, env=Environment.production, secret_key="s" * 40, **changes
    )


def test_a_base_url_without_a_host_is_refused_in_production() -> None:
    for url in ("https://", "https://:443", "https:///path"):
        with pytest.raises(ValidationError) as caught:
            _production(base_url=url)
        assert "SIMCHARGE_BASE_URL must name the site's host" in str(caught.value), url
    assert _production(base_url="https://charge.example.com").base_url


def test_a_base_url_without_a_host_stops_a_command_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SIMCHARGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "SIMCHARGE_ENV": "production",
        "SIMCHARGE_SECRET_KEY": "s" * 40,
        "SIMCHARGE_BASE_URL": "https://",
    }
    done = subprocess.run([SIMCHARGE, "db", "current"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done
    assert done.stderr.strip() == (
        "simcharge: cannot start: SIMCHARGE_BASE_URL must name the site's host in production "
        "(https://charge.example.com)"
    )


def test_a_commands_log_lines_go_to_stderr_as_json(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SIMCHARGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_LOG_JSON": "true",
        "SIMCHARGE_LOG_LEVEL": "INFO",
    }
    subprocess.run([SIMCHARGE, "db", "upgrade"], env=env, check=True, capture_output=True,
                   timeout=120)
    done = subprocess.run([SIMCHARGE, "privacy", "sweep", "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done
    assert "privacy.retention_swept" not in done.stdout  # stdout: the report only
    assert done.stdout.strip().splitlines()[-1].startswith("would change ")
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert any(r["event"] == "privacy.retention_swept" for r in records), done.stderr


@pytest.mark.postgres_only
async def test_db_upgrade_stops_when_the_lock_is_not_held_by_the_next_transaction(
    cli_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a transaction pooler does (PgBouncer, `pool_mode = transaction`): the next
    transaction runs in another server session, which does not hold the lock. Shown here with
    the check asked on a second connection of a real PostgreSQL."""
    engine = create_async_engine(cli_url)
    try:
        holds = migrate.holds_migration_lock
        async with engine.connect() as other:
            async def elsewhere(_conn: object) -> bool:
                return await holds(other)

            monkeypatch.setattr(migrate, "holds_migration_lock", elsewhere)
            before = await migrate.current_revision(engine)
            with pytest.raises(migrate.BehindPooler) as caught:
                await migrate.downgrade(engine, "-1")
            assert "PgBouncer" in str(caught.value) and "nothing was migrated" in str(caught.value)
            assert await migrate.current_revision(engine) == before
        monkeypatch.undo()
        # Released: the next upgrade takes it at once, and it holds it.
        async with engine.connect() as conn, migrate.migration_lock(conn):
            assert await migrate.holds_migration_lock(conn)
    finally:
        await engine.dispose()


@pytest.mark.postgres_only
def test_db_upgrade_behind_a_pooler_says_so_in_one_line(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(_conn: object) -> bool:
        return False

    monkeypatch.setattr(migrate, "holds_migration_lock", never)
    code, out = invoke("db", "upgrade")
    assert code == 1, out
    assert out.strip().splitlines() == [
        "simcharge: the migration lock is not held from one transaction to the next: a "
        "connection pooler in transaction mode (PgBouncer) is in between; run `simcharge db "
        "upgrade` with SIMCHARGE_DATABASE_URL pointing at PostgreSQL itself (nothing was "
        "migrated)"
    ]
