"""The start of `serve` and `worker` checks that PostgreSQL knows the operator's time zone: the
reports count the operator's days by PostgreSQL's own copy of the time zone database, and the
setting was only checked against Python's. Before, a zone PostgreSQL lacked (one younger than its
tzdata) let the site start and then refused every report with a 500."""

from __future__ import annotations

import pytest
import typer

from simcharge import cli
from simcharge.config import get_settings


def test_a_zone_postgresql_knows_starts(cli_env: str) -> None:
    settings = get_settings().model_copy(update={"operator_timezone": "Asia/Manila"})
    cli._check_operator_zone_in_database(settings)  # no exit


def test_a_zone_postgresql_lacks_stops_the_start_in_one_line(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = get_settings().model_copy(update={"operator_timezone": "Mars/Olympus_Mons"})
    if settings.is_sqlite:
        cli._check_operator_zone_in_database(settings)  # SQLite's reports shift in Python
        return
    with pytest.raises(typer.Exit) as stopped:
        cli._check_operator_zone_in_database(settings)
    assert stopped.value.exit_code == 2
    said = capsys.readouterr().err
    assert "PostgreSQL does not know the time zone 'Mars/Olympus_Mons'" in said
    assert "SIMCHARGE_OPERATOR_TIMEZONE" in said and said.count("\n") == 1


def test_a_database_out_of_reach_is_not_this_checks_to_judge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "SIMCHARGE_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:9/nothing_here"
    )
    get_settings.cache_clear()
    try:
        settings = get_settings().model_copy(update={"operator_timezone": "Mars/Olympus_Mons"})
        cli._check_operator_zone_in_database(settings)  # no exit: /readyz tells of the database
    finally:
        get_settings.cache_clear()


def test_the_worker_starts_with_a_zone_the_database_knows(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    monkeypatch.setenv("SIMCHARGE_OPERATOR_TIMEZONE", "America/Mexico_City")
    get_settings.cache_clear()
    result = CliRunner().invoke(cli.app, ["worker", "--drain"])
    assert result.exit_code == 0, result.output
    assert "ran " in result.output
