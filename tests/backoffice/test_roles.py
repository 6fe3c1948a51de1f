"""Every back-office page and every `/api/v1/admin` operation, asked by every role and by an API
key of every scope: refused (403, the refusal page on a page, an `access.denied` audit entry)
exactly when the permission table (`backoffice/roles.py`) says so, and never refused otherwise.

The routes are read from the app itself, with the permission each one requires, so a route
added later is walked too; a route that requires no permission must be one of `OPEN`. The
README's roles table is parsed and compared with `roles.py` both ways."""

from __future__ import annotations

import re
import typing
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import select

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.deps import ApiPermission, WebPermission
from simcharge.backoffice.models import AuditEntry, Role
from simcharge.backoffice.roles import (
    ROLE_PERMISSIONS,
    SCOPE_PERMISSIONS,
    Permission,
    permissions_of_scopes,
)
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff, web_sign_in

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1/admin"
PAGES = "/backoffice"
OPEN = {
    ("POST", f"{API}/session"),
    ("DELETE", f"{API}/session"),
    ("GET", f"{PAGES}/login"),
    ("POST", f"{PAGES}/login"),
    ("GET", f"{PAGES}/login/code"),
    ("POST", f"{PAGES}/login/code"),
    ("POST", f"{PAGES}/logout"),
    ("POST", f"{PAGES}/language"),
    ("GET", PAGES),
    ("GET", f"{PAGES}/password"),
    ("POST", f"{PAGES}/password"),
    ("POST", f"{API}/password"),
    ("POST", f"{PAGES}/login/passkey/options"),
    ("POST", f"{PAGES}/login/passkey"),
    ("GET", f"{PAGES}/account"),
    ("POST", f"{PAGES}/account/time-zone"),
    ("POST", f"{PAGES}/account/passkeys/options"),
    ("POST", f"{PAGES}/account/passkeys"),
    ("POST", f"{PAGES}/account/passkeys/{{passkey_id}}/rename"),
    ("POST", f"{PAGES}/account/passkeys/{{passkey_id}}/remove"),
}
"""Signing in and out, the language, and the home page: any signed-in staff member (or nobody,
for the sign-in itself)."""
PATH_VALUES = {"kind": "plans", "code": "starter-10", "name": "topups", "decision": "approve"}


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    path: str
    permission: Permission | None

    @property
    def is_page(self) -> bool:
        return self.template.startswith(PAGES)


def _permission(dependant: Dependant) -> Permission | None:
    for sub in dependant.dependencies:
        if isinstance(sub.call, ApiPermission | WebPermission):
            return sub.call.permission
        found = _permission(sub)
        if found is not None:
            return found
    return None


def _fill(route: APIRoute) -> str:
    values: dict[str, str] = {}
    for param in route.dependant.path_params:
        literal = typing.get_args(param.field_info.annotation)
        if param.name in PATH_VALUES:
            values[param.name] = PATH_VALUES[param.name]
        elif literal:
            values[param.name] = str(literal[0])
        else:
            values[param.name] = str(uuid.uuid4())
    return route.path_format.format(**values)


def operations(app: FastAPI) -> list[Operation]:
    found = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        if not (route.path.startswith(API) or route.path.startswith(PAGES)):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            found.append(Operation(method, route.path, _fill(route), _permission(route.dependant)))
    return found


def test_every_route_names_its_permission(app: FastAPI) -> None:
    ops = operations(app)
    assert len(ops) > 50
    assert {(o.method, o.template) for o in ops if o.permission is None} == OPEN
    # every permission guards something
    assert {o.permission for o in ops} - {None} == set(Permission)


async def _denials(db: Database, actor: str) -> Counter[tuple[str, str]]:
    async with db.read() as s:
        rows = (
            await s.execute(
                select(AuditEntry).where(
                    AuditEntry.action == "access.denied", AuditEntry.actor == actor
                )
            )
        ).scalars()
        return Counter((r.details["path"], r.details["permission"]) for r in rows)


async def _ask(
    client: httpx.AsyncClient, op: Operation, headers: dict[str, str], csrf: str | None
) -> httpx.Response:
    if op.is_page:
        if op.method == "GET":
            return await client.get(op.path)
        return await client.request(op.method, op.path, data={"csrf": csrf or ""})
    body: Any = {} if op.method in ("POST", "PUT", "PATCH") else None
    return await client.request(
        op.method, op.path, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}, json=body
    )


async def _walk(
    client: httpx.AsyncClient,
    db: Database,
    ops: list[Operation],
    *,
    actor: str,
    allowed: frozenset[Permission],
    headers: dict[str, str],
    csrf: str | None = None,
) -> Counter[tuple[str, str]]:
    """Asks for each operation; returns the refusals the audit log must now hold."""
    expected: Counter[tuple[str, str]] = Counter()
    for op in ops:
        assert op.permission is not None
        r = await _ask(client, op, headers, csrf)
        where = f"{actor} {op.method} {op.path} ({op.permission})"
        assert r.status_code < 500, (where, r.text)
        if op.permission in allowed:
            assert r.status_code not in (401, 403), (where, r.status_code, r.text)
            continue
        assert r.status_code == 403, (where, r.status_code, r.text)
        if op.is_page:
            assert r.headers["content-type"].startswith("text/html"), where
            assert "You are not allowed to do this." in r.text, where
        else:
            assert r.json()["type"] == "/problems/forbidden", where
        expected[(op.path, op.permission.value)] += 1
    return expected


@pytest.mark.parametrize("role", list(Role))
async def test_each_role_is_refused_exactly_what_it_may_not_do(
    app: FastAPI, client: httpx.AsyncClient, db: Database, settings: Settings, role: Role
) -> None:
    staff = await new_staff(db, settings, role.value)
    ops = [o for o in operations(app) if o.permission is not None]
    allowed = ROLE_PERMISSIONS[role]
    if role is Role.admin:
        assert allowed == frozenset(Permission)
    actor = f"staff:{staff.username}"
    api = [o for o in ops if not o.is_page]
    expected = await _walk(client, db, api, actor=actor, allowed=allowed, headers=staff.auth)
    csrf = await web_sign_in(client, staff)
    pages = [o for o in ops if o.is_page]
    expected += await _walk(client, db, pages, actor=actor, allowed=allowed, headers={}, csrf=csrf)
    assert await _denials(db, actor) == expected
    if role is not Role.admin:
        assert expected, "a role below admin is refused something"


@pytest.mark.parametrize("scope", sorted(SCOPE_PERMISSIONS))
async def test_each_api_key_scope_opens_only_its_operations(
    app: FastAPI, client: httpx.AsyncClient, db: Database, scope: str
) -> None:
    key = await db.run(lambda s: create_api_key(s, "tool", [scope]))
    ops = [o for o in operations(app) if o.permission is not None and not o.is_page]
    actor = f"apikey:{key.key.prefix}"
    expected = await _walk(
        client,
        db,
        ops,
        actor=actor,
        allowed=permissions_of_scopes([scope]),
        headers={"Authorization": f"Bearer {key.token}"},
    )
    assert await _denials(db, actor) == expected
    # a key opens no page
    page = await client.get("/backoffice/customers", headers={"Authorization": f"Bearer {key.token}"})
    assert page.status_code == 303 and page.headers["location"] == "/backoffice/login"


def _roles_table() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n### Roles\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["permission", "what it allows", "agent", "finance", "admin", "API-key scopes"]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def test_the_readme_roles_table_is_roles_py() -> None:
    roles: dict[Role, set[Permission]] = {r: set() for r in Role}
    scopes: dict[str, set[Permission]] = {}
    seen: list[Permission] = []
    for cells in _roles_table():
        [code] = re.findall(r"`([a-z_.]+)`", cells[0])
        permission = Permission(code)
        seen.append(permission)
        for role, cell in zip(Role, cells[2:5], strict=True):
            assert cell in ("✓", ""), cells
            if cell:
                roles[role].add(permission)
        for scope in re.findall(r"`([a-z_]+:[a-z_]+)`", cells[5]):
            scopes.setdefault(scope, set()).add(permission)
    assert sorted(seen) == sorted(Permission), "one row per permission"
    assert {r: frozenset(p) for r, p in roles.items()} == ROLE_PERMISSIONS
    assert {s: frozenset(p) for s, p in scopes.items()} == SCOPE_PERMISSIONS
