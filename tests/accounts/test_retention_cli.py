"""`simcharge privacy sweep [--dry-run]`, on a database of its own on each backend: the dry run
counts per rule and changes nothing, the sweep changes what is due and prints it, a second run
finds nothing, a rule set to 0 says it keeps its data for ever, and a negative setting stops the
start in one line (exit 2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from simcharge import cli
from simcharge.accounts.retention import RULES
from simcharge.auth.models import SecurityEvent
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.notifications.models import Notice
from tests.accounts.test_retention import _seed

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli.app, list(args))
    return result.exit_code, result.output


def _counts(out: str) -> dict[str, str]:
    """Each rule's line: its name and what it says (a number, or "kept for ever")."""
    return dict(re.findall(r"^  (\S+) +(\d+|kept for ever)  \(SIMCHARGE_", out, re.MULTILINE))


async def _seed_now(db: Database) -> None:
    await db.run(lambda s: _seed(s, utcnow()))


async def _left(db: Database) -> tuple[int, int]:
    async with db.read() as s:
        notices = await s.scalar(select(func.count()).select_from(Notice))
        identified = await s.scalar(
            select(func.count()).select_from(SecurityEvent).where(SecurityEvent.ip.is_not(None))
        )
    return int(notices or 0), int(identified or 0)


def test_dry_run_then_sweep_then_nothing_left(cli_env: str) -> None:
    cli._run(_seed_now)
    before = cli._run(_left)
    code, out = _invoke("privacy", "sweep", "--dry-run")
    assert code == 0, out
    assert _counts(out) == {r.name: "1" for r in RULES}
    assert f"would change {len(RULES)} row(s)" in out
    assert "(SIMCHARGE_RETENTION_NOTICES_DAYS=365)" in out
    assert cli._run(_left) == before  # a dry run changes nothing
    code, out = _invoke("privacy", "sweep")
    assert code == 0, out
    assert _counts(out) == {r.name: "1" for r in RULES} and f"changed {len(RULES)} row(s)" in out
    assert cli._run(_left) == (before[0] - 1, before[1] - 1)
    code, out = _invoke("privacy", "sweep")
    assert code == 0 and _counts(out) == {r.name: "0" for r in RULES}
    assert "changed 0 row(s)" in out


def test_a_rule_set_to_zero_keeps_its_data(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from simcharge.config import get_settings

    monkeypatch.setenv("SIMCHARGE_RETENTION_NOTICES_DAYS", "0")
    get_settings.cache_clear()
    cli._run(_seed_now)
    before = cli._run(_left)
    code, out = _invoke("privacy", "sweep")
    assert code == 0, out
    counts = _counts(out)
    assert counts.pop("notices") == "kept for ever"
    assert set(counts.values()) == {"1"} and f"changed {len(RULES) - 1} row(s)" in out
    assert cli._run(_left)[0] == before[0]


def test_a_negative_retention_setting_stops_the_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMCHARGE_")}
    env["SIMCHARGE_RETENTION_SESSIONS_DAYS"] = "-1"
    script = Path(sys.executable).with_name("simcharge")
    done = subprocess.run(
        [str(script), "privacy", "sweep"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "simcharge: cannot start: SIMCHARGE_RETENTION_SESSIONS_DAYS: Input should be greater "
        "than or equal to 0"
    ]
    assert not (tmp_path / "var").exists()  # stopped before opening any database
