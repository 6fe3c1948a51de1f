"""Which server errors a chaos run forgives: a 503 (database unavailable) while PostgreSQL
restarts and shortly after; nothing else."""

from __future__ import annotations

from chaos.checks import Verdict, server_error_verdict
from chaos.customers import ServerError


def test_server_errors_other_than_a_503_during_the_restart_are_violations() -> None:
    restart = (100.0, 104.0)
    unavailable = "/problems/service-unavailable"
    errors = [
        ServerError(103.0, 503, unavailable, "POST /api/v1/orders"),
        ServerError(110.0, 503, unavailable, "GET /api/v1/orders/{id}"),  # reconnecting
        ServerError(160.0, 503, unavailable, "POST /api/v1/orders"),  # long after: not expected
        ServerError(50.0, 500, "/problems/internal-error", "POST /api/v1/usage"),
    ]
    verdict = Verdict()
    server_error_verdict(verdict, errors, [restart])
    assert verdict.facts["503 while PostgreSQL restarted (retried)"] == 2
    assert verdict.violations == [
        "server error: 500 /problems/internal-error on POST /api/v1/usage (1×)",
        "server error: 503 /problems/service-unavailable on POST /api/v1/orders (1×)",
    ]
    # Without a restart no 503 is expected either.
    quiet = Verdict()
    server_error_verdict(quiet, errors[:1], [])
    assert quiet.violations == [
        "server error: 503 /problems/service-unavailable on POST /api/v1/orders (1×)"
    ]
