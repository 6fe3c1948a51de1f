"""Secrets never reach the logs, even in the traceback of a request that failed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import TEST_SECRET

PASSWORD = "hunter2-never-in-a-log"

# A fresh process, so that the logging configuration (and structlog's cached loggers) is the one
# the app sets up: a sign-in whose database cannot be opened fails inside `service.login`, whose
# frame holds the password.
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import httpx
    from simcharge.app import create_app
    from simcharge.config import Settings

    async def main() -> None:
        settings = Settings(
            _env_file=None, env="test", secret_key=sys.argv[1], log_json=sys.argv[2] == "json",
            database_url="sqlite+aiosqlite:////nonexistent-directory/simcharge.db",
            worker_in_process=False,
        )
        app = create_app(settings, run_worker=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post(
                "/api/v1/auth/login", json={"login": "someone", "password": sys.argv[3]}
            )
        print("status", r.status_code)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("mode", ["console", "json"])
def test_a_failed_request_logs_its_traceback_without_the_password(mode: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, TEST_SECRET, mode, PASSWORD],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "status 500" in done.stdout, done.stderr
    # The failure is logged with its traceback, down to the sign-in service…
    assert "http.unhandled_error" in done.stderr and "Traceback" in done.stderr
    assert "in login" in done.stderr
    # …and nothing of what the customer typed.
    assert PASSWORD not in done.stderr and PASSWORD not in done.stdout
