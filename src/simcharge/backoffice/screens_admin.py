"""Admin pages: the catalog (plans, methods, tariffs with their versions; one entry edited at a
time), staff, the outbox's jobs (retry or discard a dead one), and API keys (create, rotate,
revoke; a new key's token is shown once, on the answer to the form)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import DB
from simcharge.auth.apikeys import (
    COMMAND_LINE_SCOPES,
    SCOPES,
    STAFF_OVERLAPS,
    ApiKeyAlreadyCreated,
    asked_expiry,
    create_request_hash,
    create_request_key,
    key_views,
    overlap_named,
    staff_create_api_key,
    staff_revoke_api_key,
    staff_rotate_api_key,
    view_of,
)
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.catalog import (
    KINDS,
    CatalogEntryNotFound,
    as_text,
    blank_entry,
    export_catalog,
    find_entry,
    save_entry,
    tariff_code,
    tariff_versions,
)
from simcharge.backoffice.deps import require_web
from simcharge.backoffice.forms import Redraw, form_error, in_place
from simcharge.backoffice.jobs import JobView, count_by_view, discard_job, find_jobs, retry_job
from simcharge.backoffice.models import Role, StaffUser
from simcharge.backoffice.passkeys import passkey_counts
from simcharge.backoffice.refusal import NO_REFUSAL, FormError
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.staff import (
    change_facts,
    change_staff,
    reset_password_expired,
    reset_staff_password,
)
from simcharge.backoffice.web import back, render
from simcharge.catalog.models import PaymentMethod, Plan
from simcharge.catalog.service import CatalogInvalid
from simcharge.charging.models import Tariff
from simcharge.errors import IDEMPOTENCY_KEY_MAX, IdempotencyKeyReused, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.kit.translations import N_

router = APIRouter(prefix="/backoffice", include_in_schema=False)
Editor = Annotated[Actor, require_web(Permission.catalog_edit)]


@router.get("/catalog", response_class=HTMLResponse)
async def catalog(request: Request, db: DB, actor: Editor) -> HTMLResponse:
    return await catalog_page(request, actor)


async def catalog_page(
    request: Request, actor: Actor, refused: FormError = NO_REFUSAL
) -> HTMLResponse:
    async with request.app.state.db.read() as s:
        plans = (await s.execute(select(Plan).order_by(Plan.sort_order, Plan.code))).scalars().all()
        methods = (
            (await s.execute(select(PaymentMethod).order_by(PaymentMethod.sort_order)))
            .scalars()
            .all()
        )
        tariffs = (
            (
                await s.execute(
                    select(Tariff).order_by(Tariff.service, Tariff.zone, Tariff.currency)
                )
            )
            .scalars()
            .all()
        )
    return render(
        request,
        "catalog.html",
        actor,
        status=refused.status if refused.form else 200,
        form_error=refused,
        plans=plans,
        methods=methods,
        tariffs=tariffs,
        tariff_code=tariff_code,
        kinds=KINDS,
    )


@router.get("/catalog/new", response_model=None)
async def new_entry(
    request: Request,
    actor: Editor,
    kind: Annotated[str, Query(max_length=20)] = "plans",
    code: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """The form for a new entry, by its code; a code that cannot be one comes back on the
    catalog's page."""

    async def act() -> Response:
        if kind not in KINDS:
            raise CatalogEntryNotFound(field="kind")
        named = code.strip()
        if not named or "/" in named or "?" in named or "#" in named:
            raise ValidationFailed(N_("Give the new entry's code."), field="code")
        return back(f"/backoffice/catalog/{kind}/{quote(named, safe='.-_')}")

    async def redraw(refused: FormError) -> HTMLResponse:
        return await catalog_page(request, actor, refused)

    return await in_place(
        request, actor, act, form="new", values={"kind": kind, "code": code}, redraw=redraw
    )


async def _entry_page(
    request: Request,
    db: DB,
    actor: Actor,
    kind: str,
    code: str,
    *,
    refused: FormError = NO_REFUSAL,
    problems: list[str] | None = None,
) -> HTMLResponse:
    """The entry's page; refused (`entry_save`): the text as it was typed, the refusal on top
    and, for an invalid entry, each of its problems beside the text."""
    async with db.read() as s:
        entry = find_entry(await export_catalog(s), kind, code)
        versions = await tariff_versions(s, code) if kind == "tariffs" else []
    typed = refused.value("c", "text", None)
    return render(
        request,
        "catalog_entry.html",
        actor,
        status=refused.status if refused.form else 200,
        form_error=refused,
        kind=kind,
        label=KINDS[kind],
        code=code,
        text=as_text(entry or blank_entry(kind, code)) if typed is None else typed,
        new=entry is None,
        problems=problems or [],
        versions=versions,
    )


@router.get("/catalog/{kind}/{code}", response_class=HTMLResponse)
async def entry_page(request: Request, kind: str, code: str, db: DB, actor: Editor) -> HTMLResponse:
    return await _entry_page(request, db, actor, kind, code)


@router.post("/catalog/{kind}/{code}", response_model=None)
async def entry_save(
    request: Request,
    kind: str,
    code: str,
    db: DB,
    actor: Editor,
    text: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    """Save the entry; refused (invalid, or changed by someone else since it was read), the
    page comes back with what was typed. An unknown kind is the error page (404)."""
    problems: list[str] = []

    async def act() -> Response:
        try:
            _, after = await db.run(lambda s: save_entry(s, actor, kind, code, text))
        except CatalogInvalid as exc:
            problems.extend(exc.problems)  # each one listed beside the text
            raise
        version = after.get("version")  # the answer names the version the save made
        done = f"catalog_saved.{version}" if isinstance(version, int) else "catalog_saved_new"
        return back(f"/backoffice/catalog/{kind}/{quote(code, safe='.-_')}", done)

    async def redraw(refused: FormError) -> HTMLResponse:
        return await _entry_page(
            request, db, actor, kind, code, refused=refused, problems=problems
        )

    return await in_place(request, actor, act, form="c", values={"text": text}, redraw=redraw)


StaffAdmin = Annotated[Actor, require_web(Permission.staff_manage)]


async def _staff_page(
    request: Request, db: DB, actor: Actor, *, refused: FormError = NO_REFUSAL
) -> HTMLResponse:
    async with db.read() as s:
        rows = (await s.execute(select(StaffUser).order_by(StaffUser.username))).scalars().all()
        passkeys = await passkey_counts(s)
    return render(
        request,
        "staff.html",
        actor,
        status=refused.status if refused.form else 200,
        form_error=refused,
        staff=rows,
        passkeys=passkeys,
        expired={
            st.id for st in rows if reset_password_expired(request.app.state.settings, st, utcnow())
        },
        roles=list(Role),
    )


@router.get("/staff", response_class=HTMLResponse)
async def staff_list(request: Request, db: DB, actor: StaffAdmin) -> HTMLResponse:
    return await _staff_page(request, db, actor)


@router.post("/staff/{staff_id}/password", response_model=None)
async def staff_password(
    request: Request,
    staff_id: uuid.UUID,
    db: DB,
    actor: StaffAdmin,
    new_password: Annotated[str, Form(max_length=1024)] = "",
    confirm_password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Set another staff member's password (`staff.reset_staff_password`): every session of
    theirs ends and their passkeys are removed; a refusal comes back on the row's form (the
    passwords typed are not shown again)."""

    async def act() -> Response:
        if new_password != confirm_password:
            raise ValidationFailed(
                N_("The two passwords are not the same."), field="confirm_password"
            )
        await db.run(lambda s: reset_staff_password(s, actor, staff_id, new_password, utcnow()))
        return back("/backoffice/staff", "staff_password")

    async def redraw(refused: FormError) -> HTMLResponse:
        return await _staff_page(request, db, actor, refused=refused)

    typed = {"new_password": new_password, "confirm_password": confirm_password}
    return await in_place(
        request, actor, act, form=f"p-{staff_id}", values=typed, redraw=redraw, secrets=typed
    )


@router.post("/staff/{staff_id}", response_model=None)
async def staff_change(
    request: Request,
    staff_id: uuid.UUID,
    db: DB,
    actor: StaffAdmin,
    role: Annotated[str, Form(max_length=16)] = "",
    access: Annotated[str, Form(max_length=8)] = "",
    reset_totp: Annotated[bool, Form()] = False,
) -> Response:
    async def run(s: AsyncSession) -> bool:
        staff, before = await change_staff(
            s,
            staff_id,
            by=actor.staff_id,
            role=role or None,
            active={"on": True, "off": False}.get(access),
            reset_totp=reset_totp,
            now=utcnow(),
        )
        await audit.record(
            s,
            actor,
            "staff.change",
            target_type="staff",
            target_id=staff.id,
            before=before,
            after=change_facts(staff, before),
        )
        # The selects start on the member's current role and access: sent back as they
        # were, they change nothing.
        return reset_totp or (staff.role, staff.active) != (before["role"], before["active"])

    async def act() -> Response:
        changed = await db.run(run)
        return back("/backoffice/staff", "staff_changed" if changed else "staff_unchanged")

    async def redraw(refused: FormError) -> HTMLResponse:
        return await _staff_page(request, db, actor, refused=refused)

    typed = {"role": role, "access": access, "reset_totp": reset_totp}
    return await in_place(request, actor, act, form=f"staff-{staff_id}", values=typed, redraw=redraw)


# --- the outbox -----------------------------------------------------------------------------

JobReader = Annotated[Actor, require_web(Permission.jobs_read)]
JobManager = Annotated[Actor, require_web(Permission.jobs_manage)]


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    db: DB,
    actor: JobReader,
    view: JobView = JobView.dead,
    kind: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    return await _jobs_page(request, actor, view, kind or None)


async def _jobs_page(
    request: Request,
    actor: Actor,
    view: JobView,
    kind: str | None = None,
    refused: FormError = NO_REFUSAL,
) -> HTMLResponse:
    async with request.app.state.db.read() as s:
        rows = await find_jobs(s, view=view, kind=kind, limit=200)
        counts = await count_by_view(s)
    return render(
        request,
        "jobs.html",
        actor,
        status=refused.status if refused.form else 200,
        form_error=refused,
        jobs=rows,
        counts=counts,
        view=view,
        views=list(JobView),
    )


def _on_dead_jobs(request: Request, actor: Actor) -> Any:
    """A job's forms are on the list of dead jobs."""

    async def redraw(refused: FormError) -> HTMLResponse:
        return await _jobs_page(request, actor, JobView.dead, refused=refused)

    return redraw


@router.post("/jobs/{job_id}/retry", response_model=None)
async def job_retry(request: Request, job_id: uuid.UUID, db: DB, actor: JobManager) -> Response:
    async def act() -> Response:
        await db.run(lambda s: retry_job(s, actor, job_id, utcnow()))
        return back("/backoffice/jobs", "retried")

    return await in_place(
        request, actor, act, form=f"retry-{job_id}", values={},
        redraw=_on_dead_jobs(request, actor),
    )  # fmt: skip


@router.post("/jobs/{job_id}/discard", response_model=None)
async def job_discard(
    request: Request,
    job_id: uuid.UUID,
    db: DB,
    actor: JobManager,
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    async def act() -> Response:
        await db.run(lambda s: discard_job(s, actor, job_id, note, utcnow()))
        return back("/backoffice/jobs", "discarded")

    return await in_place(
        request, actor, act, form=f"discard-{job_id}", values={"note": note},
        redraw=_on_dead_jobs(request, actor),
    )  # fmt: skip


# --- API keys -------------------------------------------------------------------------------

KeyAdmin = Annotated[Actor, require_web(Permission.apikeys_manage)]


async def _keys_page(request: Request, actor: Actor, refused: FormError = NO_REFUSAL) -> HTMLResponse:
    async with request.app.state.db.read() as s:
        keys = await key_views(s, utcnow())
    return render(
        request,
        "api_keys.html",
        actor,
        status=refused.status if refused.form else 200,
        form_error=refused,
        keys=keys,
        scopes=SCOPES,
        reserved=COMMAND_LINE_SCOPES,
        overlaps=list(STAFF_OVERLAPS),
        # A refused form keeps its one-time key (`form_error`); a fresh page gets a new one.
        idem=uuid7().hex,
    )


def _on_keys_page(request: Request, actor: Actor) -> Redraw:
    async def redraw(refused: FormError) -> HTMLResponse:
        return await _keys_page(request, actor, refused)

    return redraw


@router.get("/api-keys", response_class=HTMLResponse)
async def api_keys(request: Request, db: DB, actor: KeyAdmin) -> HTMLResponse:
    return await _keys_page(request, actor)


@router.post("/api-keys", response_class=HTMLResponse)
async def api_key_create(
    request: Request,
    db: DB,
    actor: KeyAdmin,
    name: Annotated[str, Form(max_length=1000)] = "",
    expires_in: Annotated[str, Form(max_length=32)] = "",
    expires_at: Annotated[str, Form(max_length=64)] = "",
    idem: Annotated[str, Form(max_length=IDEMPOTENCY_KEY_MAX)] = "",
) -> Response:
    """A new key, its token on the answer (once: only its hash is kept); a refusal comes back
    on the form with what was typed. The page's one-time key (`idem`) makes a double submit or
    a reload of the answer one key: the second is told the key was made (409
    `api-key-already-created`, its prefix), never shown its token."""
    scopes = [str(v) for v in (await request.form()).getlist("scopes")][: len(SCOPES) + 1]
    asked = (
        (
            create_request_key(actor.name, idem) or "",
            create_request_hash(name, scopes, expires_in, expires_at),
        )
        if idem
        else None
    )
    redraw = _on_keys_page(request, actor)

    async def act() -> Response:
        ends = asked_expiry(expires_in, expires_at, utcnow())
        try:
            issued = await db.run(
                lambda s: staff_create_api_key(
                    s, actor, name, scopes, expires_at=ends, request=asked
                )
            )
        except ApiKeyAlreadyCreated as exc:
            # Done already: the form starts afresh (with a new one-time key) for another key.
            return await redraw(form_error(request, actor, exc, form="k", values={}))
        except IdempotencyKeyReused as exc:
            # The page's key made another key already: what was typed stays, under a new key
            # (kept, it would refuse every corrected submit the same way).
            fresh = {k: v for k, v in typed.items() if k != "idem"}
            return await redraw(form_error(request, actor, exc, form="k", values=fresh))
        return render(
            request,
            "api_keys_token.html",
            actor,
            token=issued.token,
            key=view_of(issued.key, utcnow()),
            old=None,
        )

    typed = {
        "name": name, "scopes": scopes, "expires_in": expires_in, "expires_at": expires_at,
        "idem": idem,
    }  # fmt: skip
    return await in_place(request, actor, act, form="k", values=typed, redraw=redraw)


@router.post("/api-keys/{prefix}/rotate", response_model=None)
async def api_key_rotate(
    request: Request,
    prefix: str,
    db: DB,
    actor: KeyAdmin,
    overlap: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """A new key with this one's name and scopes, its token on the answer (once); this one
    keeps working for the overlap chosen. No live key with this prefix: the error page (404)."""

    async def act() -> Response:
        grace = overlap_named(overlap)
        rotated = await db.run(lambda s: staff_rotate_api_key(s, actor, prefix, overlap=grace))
        now = utcnow()
        return render(
            request,
            "api_keys_token.html",
            actor,
            token=rotated.issued.token,
            key=view_of(rotated.issued.key, now, replaces=prefix),
            old=view_of(rotated.old, now, replaced_by=rotated.issued.key.prefix),
        )

    return await in_place(
        request, actor, act, form=f"rotate-{prefix}", values={"overlap": overlap},
        redraw=_on_keys_page(request, actor),
    )  # fmt: skip


@router.post("/api-keys/{prefix}/revoke", response_model=None)
async def api_key_revoke(
    request: Request,
    prefix: str,
    db: DB,
    actor: KeyAdmin,
    confirm: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Refused from now on, once the box is ticked. No live key with this prefix: the error
    page (404)."""

    async def act() -> Response:
        if confirm != "yes":
            raise ValidationFailed(
                N_("Tick the box to confirm that this key stops working now."), field="confirm"
            )
        await db.run(lambda s: staff_revoke_api_key(s, actor, prefix))
        return back("/backoffice/api-keys", "revoked")

    return await in_place(
        request, actor, act, form=f"revoke-{prefix}", values={"confirm": confirm},
        redraw=_on_keys_page(request, actor),
    )  # fmt: skip
