"""`simcharge staff create`."""

from __future__ import annotations

import pytest

from tests.backoffice.helpers import STAFF_PASSWORD
from tests.test_cli import cli_env, cli_url, invoke  # noqa: F401 - fixtures


def test_staff_create(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", STAFF_PASSWORD)
    code, out = invoke("staff", "create", "alice", "--role", "finance", "--name", "Alice W")
    assert code == 0 and "created finance alice" in out
    code, out = invoke("staff", "create", "alice", "--role", "finance")
    assert code == 2 and "already exists" in out
    code, out = invoke("staff", "create", "bob", "--role", "boss")
    assert code == 2 and "role" in out
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", "short")
    code, out = invoke("staff", "create", "carol", "--role", "agent")
    assert code == 2 and "password" in out
