"""schemathesis over `/openapi.json`: every operation, with generated input, against the app
(in process, on the test database), authenticated as a customer or with an API key holding
every scope. No answer may be a server error, and every answer must match the schema (body and
content type for the documented status codes).

Bounded: `EXAMPLES` cases per operation, generated deterministically (`SIMCHARGE_FUZZ_RANDOM=1`:
another draw each run). Known-good requests (the payer's real line, a real plan and method, the
order they make) are added first, so that the successful answers of the operations that need
real ids are checked against the schema too.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.core.failures import FailureGroup

from simcharge.auth.apikeys import SCOPES, create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from tests.factories import load_demo_catalog
from tests.orders.helpers import new_payer

EXAMPLES = int(os.environ.get("SIMCHARGE_FUZZ_EXAMPLES", "4"))
"""Cases per operation and generation mode (valid input, and input the schema forbids)."""
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# Run last: they end the session the other operations use.
SESSION_ENDERS = ("/api/v1/auth/logout", "/api/v1/auth/logout-all", "/api/v1/me/lock")


def _cases(operation: Any, n: int, mode: GenerationMode) -> list[Any]:
    found: list[Any] = []

    @hypothesis_settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("SIMCHARGE_FUZZ_RANDOM"),
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def collect(case: Any) -> None:
        found.append(case)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            collect()
        except Unsatisfiable:  # nothing the schema forbids (an operation without input)
            return []
    return found[:n]


def _first_failure(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)
    if inner:
        return " / ".join(str(e).splitlines()[0] for e in inner)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _order(path: str) -> tuple[int, str]:
    return (1 if path in SESSION_ENDERS else 0, path)


@pytest.mark.slow
async def test_every_operation_answers_without_server_errors_and_as_documented(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    issued = await db.run(lambda s: create_api_key(s, "fuzz", list(SCOPES)))
    staff = {"Authorization": f"Bearer {issued.token}"}
    spec = (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = sorted(
        (r.ok() for r in schema.get_all_operations()), key=lambda op: _order(op.path)
    )
    assert len(operations) >= 40
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    line_id = str(payer.line.id)
    order_body = {"plan": "traveller-20", "method": "sandbox", "line_id": line_id}
    known: dict[tuple[str, str], list[dict[str, Any]]] = {
        ("POST", "/api/v1/quotes"): [{"body": order_body}],
        ("POST", "/api/v1/orders"): [
            {"body": order_body, "headers": {"Idempotency-Key": "fuzz-known-order"}}
        ],
        ("GET", "/api/v1/me/lines/{line_id}"): [{"path_parameters": {"line_id": line_id}}],
        ("GET", "/api/v1/lines/{line_id}"): [{"path_parameters": {"line_id": line_id}}],
        ("GET", "/api/v1/lines/{line_id}/balances"): [{"path_parameters": {"line_id": line_id}}],
    }
    order_id: str | None = None
    for operation in operations:
        admin = operation.path.startswith(
            ("/api/v1/admin", "/api/v1/lines", "/api/v1/usage", "/tmf-api/", "/nchf-")
        )
        headers = staff if admin else payer.auth
        good = known.get((operation.method.upper(), operation.path), [])
        if order_id and "{order_id}" in operation.path:
            good = [{"path_parameters": {"order_id": order_id}}]
        cases = [operation.Case(**fields) for fields in good]
        cases += [c for mode in GenerationMode for c in _cases(operation, EXAMPLES, mode)]
        for case in cases:
            kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
            kwargs.pop("cookies", None)
            if isinstance(kwargs.get("data"), bytes | str):
                kwargs["content"] = kwargs.pop("data")
            response = await client.request(**kwargs)
            statuses[response.status_code // 100] += 1
            if operation.path == "/api/v1/orders" and response.status_code == 201:
                order_id = order_id or response.json()["id"]
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, FailureGroup) as exc:
                failures.append(
                    f"{operation.method.upper()} {operation.path} -> {response.status_code}: "
                    f"{_first_failure(exc)}\n    {response.text[:300]}\n    "
                    f"{case.as_curl_command()}"
                )
    assert not failures, "\n".join(failures)
    assert statuses[2] > len(operations) // 2, statuses  # the valid cases get through too
