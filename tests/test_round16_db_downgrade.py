"""`simcharge db downgrade REVISION`: back to a named revision, on SQLite and PostgreSQL, from
any working directory (the image has no alembic.ini: the migrations are in the package)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simcharge import migrate
from simcharge.cli import app

SIMCHARGE = str(Path(sys.executable).with_name("simcharge"))
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_downgrade_to_a_revision_then_up_again(cli_env: str, tmp_path: Path) -> None:
    head = migrate.head_revision()
    assert head != "0027_api_key_client"
    # As in the image: another working directory, no alembic.ini anywhere near.
    env = {**os.environ, "SIMCHARGE_DATABASE_URL": cli_env, "SIMCHARGE_ENV": "test"}
    done = subprocess.run(
        [SIMCHARGE, "db", "downgrade", "0027_api_key_client"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "database at revision 0027_api_key_client"

    code, out = invoke("db", "current")
    assert code == 1 and "current: 0027_api_key_client" in out and f"head:    {head}" in out
    code, out = invoke("db", "upgrade")
    assert code == 0 and out.strip() == f"database at revision {head}", out
    code, out = invoke("db", "current")
    assert code == 0 and f"current: {head}" in out


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "Missing argument"),
        (["base"], "name the revision to go back to"),
        (["head"], "name the revision to go back to"),
        (["-1"], "No such option"),
        (["--", "-1"], "name the revision to go back to"),
        (["0099_nothing"], "no migration '0099_nothing' in this release"),
    ],
)
def test_downgrade_wants_a_revision_of_this_release(
    cli_env: str, args: list[str], said: str
) -> None:
    result = runner.invoke(app, ["db", "downgrade", *args])
    assert result.exit_code == 2
    assert said in result.output
    code, out = invoke("db", "current")  # nothing changed
    assert code == 0, out
