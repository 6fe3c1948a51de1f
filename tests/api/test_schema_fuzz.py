"""schemathesis over `/openapi.json`: every operation, with generated input, against the app
(in process, on the test database), authenticated as whoever may use it — a customer, a
signed-in staff member of the role that may (admin, with an MFA-confirmed token), or an API key
holding every scope for the operator's tools (lines, usage, TMF654, Nchf, the jobs API). No
answer may be a server error, and every answer must be documented: its status code, its
headers, its content type and its body.

Bounded: `EXAMPLES` cases per operation and generation mode, generated deterministically
(`SIMCHARGE_FUZZ_RANDOM=1`: another draw each run). Known-good requests are added first (the
payer's real line, a real plan and method, a real order; a real staff sign-in, a staff member
to change, an adjustment awaiting approval, an order needing attention), so that the
successful answers of the operations that need real ids are checked too. Each operation that
ends a session (logout, logout everywhere, lock, ending a staff token) gets a session of its
own for every case.
"""

from __future__ import annotations

import os
import uuid
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
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.apikeys import SCOPES, create_api_key
from simcharge.backoffice.models import StaffUser
from simcharge.backoffice.staff import open_staff_session
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.models import Order
from tests.backoffice.helpers import STAFF_PASSWORD, Staff, code_for, new_staff
from tests.factories import load_demo_catalog
from tests.orders.helpers import idem, new_payer

EXAMPLES = int(os.environ.get("SIMCHARGE_FUZZ_EXAMPLES", "4"))
"""Cases per operation and generation mode (valid input, and input the schema forbids)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_headers_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Each case of these gets a session of its own: they end the session they are sent with.
SESSION_ENDERS = {
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/logout-all"),
    ("POST", "/api/v1/me/lock"),
    ("DELETE", "/api/v1/admin/session"),
}
STAFF_SUCCESSES = {
    ("GET", "/api/v1/admin/audit"),
    ("GET", "/api/v1/admin/staff"),
    ("PATCH", "/api/v1/admin/staff/{staff_id}"),
    ("POST", "/api/v1/admin/adjustments/{adjustment_id}/decision"),
    ("POST", "/api/v1/admin/orders/{order_id}/resolve"),
    ("POST", "/api/v1/admin/session"),
    ("GET", "/api/v1/admin/jobs"),
}
# The operator's tools: an API key. (The jobs API takes a key; staff reach it through the back
# office.)
KEY_PATHS = (
    "/api/v1/admin/jobs", "/api/v1/lines", "/api/v1/usage", "/tmf-api/", "/nchf-",
)


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


async def _customer_session(db: Database, settings: Settings) -> dict[str, str]:
    """A customer of their own, signed in: /me/lock locks the account it is sent for."""
    return (await new_payer(db, settings)).auth


async def _staff_session(db: Database, settings: Settings, staff: Staff) -> dict[str, str]:
    async def run(s: AsyncSession) -> str:
        row = await s.get(StaffUser, staff.id)
        assert row is not None
        issued = await open_staff_session(
            s, settings, row, ip="192.0.2.1", user_agent="fuzz", now=utcnow(), mfa=True
        )
        return issued.token

    return {"Authorization": f"Bearer {await db.run(run)}"}


@pytest.mark.slow
async def test_every_operation_answers_without_server_errors_and_as_documented(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    issued = await db.run(lambda s: create_api_key(s, "fuzz", list(SCOPES)))
    key = {"Authorization": f"Bearer {issued.token}"}
    admin = await new_staff(db, settings, "admin")
    # Another admin's sessions for the cases that end one: `DELETE /admin/session?everywhere=true`
    # ends every session of whoever sends it, the token the other admin cases use too.
    ender = await new_staff(db, settings, "admin")
    agent = await new_staff(db, settings, "agent")
    signing_in = await new_staff(db, settings, "admin")
    assert signing_in.secret
    line_id = str(payer.line.id)
    order_body = {"plan": "traveller-20", "method": "sandbox", "line_id": line_id}

    # An order needing finance's attention, and an adjustment awaiting a second staff member.
    r = await client.post(
        "/api/v1/orders", json=order_body, headers={**payer.auth, **idem()}
    )
    assert r.status_code == 201, r.text
    flagged = r.json()["id"]
    await db.run(
        lambda s: s.execute(
            update(Order).where(Order.id == uuid.UUID(flagged)).values(attention="late_success")
        )
    )
    r = await client.post(
        f"/api/v1/admin/lines/{line_id}/adjustments",
        json={"amount": settings.adjustment_approval_above + 1, "reason": "goodwill"},
        headers={**agent.auth, **idem()},
    )
    assert r.status_code == 201 and r.json()["state"] == "awaiting_approval", r.text
    adjustment = r.json()["id"]

    spec = (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda op: op.path)
    assert len(operations) >= 40
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    succeeded: set[tuple[str, str]] = set()
    known: dict[tuple[str, str], list[dict[str, Any]]] = {
        ("POST", "/api/v1/quotes"): [{"body": order_body}],
        ("POST", "/api/v1/orders"): [
            {"body": order_body, "headers": {"Idempotency-Key": "fuzz-known-order"}}
        ],
        ("GET", "/api/v1/me/lines/{line_id}"): [{"path_parameters": {"line_id": line_id}}],
        ("GET", "/api/v1/lines/{line_id}"): [{"path_parameters": {"line_id": line_id}}],
        ("GET", "/api/v1/lines/{line_id}/balances"): [{"path_parameters": {"line_id": line_id}}],
        ("POST", "/api/v1/admin/session"): [{"body": {
            "username": signing_in.username, "password": STAFF_PASSWORD,
            "code": code_for(signing_in.secret),
        }}],
        ("PATCH", "/api/v1/admin/staff/{staff_id}"): [
            {"path_parameters": {"staff_id": str(agent.id)}, "body": {"role": "finance"}}
        ],
        ("POST", "/api/v1/admin/adjustments/{adjustment_id}/decision"): [
            {"path_parameters": {"adjustment_id": adjustment}, "body": {"approve": True}}
        ],
        ("POST", "/api/v1/admin/orders/{order_id}/resolve"): [
            {"path_parameters": {"order_id": flagged}, "body": {"note": "credited by hand"}}
        ],
    }
    for operation in operations:
        method, path = operation.method.upper(), operation.path
        if path.startswith(KEY_PATHS):
            headers = key
        elif path.startswith("/api/v1/admin"):
            headers = admin.auth
        else:
            headers = payer.auth
        good = known.get((method, path), [])
        if not good and "{order_id}" in path:
            good = [{"path_parameters": {"order_id": flagged}}]
        cases = [operation.Case(**fields) for fields in good]
        cases += [c for mode in GenerationMode for c in _cases(operation, EXAMPLES, mode)]
        for case in cases:
            if (method, path) in SESSION_ENDERS:
                headers = (
                    await _staff_session(db, settings, ender)
                    if path.startswith("/api/v1/admin")
                    else await _customer_session(db, settings)
                )
            kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
            kwargs.pop("cookies", None)
            if isinstance(kwargs.get("data"), bytes | str):
                kwargs["content"] = kwargs.pop("data")
            response = await client.request(**kwargs)
            statuses[response.status_code // 100] += 1
            if response.is_success:
                succeeded.add((method, path))
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, FailureGroup) as exc:
                failures.append(
                    f"{method} {path} -> {response.status_code}: "
                    f"{_first_failure(exc)}\n    {response.text[:300]}\n    "
                    f"{case.as_curl_command()}"
                )
    assert not failures, "\n".join(failures)
    assert statuses[2] > len(operations) // 2, statuses  # the valid cases get through too
    # The staff-only operations were reached as staff, and their successful answers checked.
    assert succeeded >= STAFF_SUCCESSES, STAFF_SUCCESSES - succeeded
    assert succeeded >= SESSION_ENDERS, SESSION_ENDERS - succeeded
