"""One error base for the whole package.

Every expected failure is a `SimchargeError`: it carries an HTTP status, a stable `type` slug
(rendered as the RFC 9457 `type` URI `/problems/<slug>`), a translatable title and detail, and
the offending field(s). The API renders it as `application/problem+json`; the portal as a page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from simcharge.kit.translations import N_

PROBLEM_BASE = "/problems/"


@dataclass(frozen=True)
class FieldError:
    """One offending input: a dotted path (`amount`, `items.2.msisdn`) and what is wrong with it."""

    field: str
    detail: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


class SimchargeError(Exception):
    """Base of every expected failure; subclasses set `status`, `slug` and `title`."""

    status: int = 400
    """The HTTP status; a class constant, which an instance may override (`HTTPProblem`)."""
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = N_("The request cannot be processed.")

    def __init__(
        self,
        detail: str | None = None,
        *,
        field: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> None:
        self.detail_template = detail or self.title
        self.params = params
        self.field = field
        self.errors = errors or []
        self.headers = headers or {}
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        return self.detail_template.format(**self.params) if self.params else self.detail_template

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug

    def extra(self) -> dict[str, Any]:
        """Additional members of the problem document, for subclasses that carry more."""
        return {}


class HTTPProblem(SimchargeError):
    """An HTTP-level refusal raised by the framework (a body too large, a bad header…)."""

    slug = "http-error"
    title = N_("The request cannot be processed.")

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class BadRequest(SimchargeError):
    status = 400
    slug = "bad-request"
    title = N_("The request is malformed.")


class ValidationFailed(SimchargeError):
    status = 422
    slug = "validation-error"
    title = N_("Some input is not valid.")


class NotAuthenticated(SimchargeError):
    status = 401
    slug = "not-authenticated"
    title = N_("You need to sign in first.")


class Forbidden(SimchargeError):
    status = 403
    slug = "forbidden"
    title = N_("You are not allowed to do this.")


class NotFound(SimchargeError):
    status = 404
    slug = "not-found"
    title = N_("Nothing was found here.")


class MethodNotAllowed(SimchargeError):
    status = 405
    slug = "method-not-allowed"
    title = N_("This method is not allowed here.")


class Conflict(SimchargeError):
    status = 409
    slug = "conflict"
    title = N_("The request conflicts with the current state.")


class IdempotencyKeyMissing(BadRequest):
    slug = "idempotency-key-missing"
    title = N_("An Idempotency-Key header is required, so that a retry never orders twice.")


IDEMPOTENCY_KEY_MAX = 128
"""The longest `Idempotency-Key` kept (the tables' columns)."""


def required_idempotency_key(key: str | None) -> str:
    """`key`, if there is one that fits; else 400 `idempotency-key-missing` (whether it came in
    a request's header or in a page's form): a request that must never be done twice carries
    one, and a retry or a copy with the same key answers what the first one did."""
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise IdempotencyKeyMissing(
            N_("An Idempotency-Key header is required."), field="Idempotency-Key"
        )
    return key


class IdempotencyKeyReused(SimchargeError):
    status = 422
    slug = "idempotency-key-reused"
    title = N_("This idempotency key was already used with a different request.")


class BodyTooLarge(SimchargeError):
    """A request body above the limit (`SIMCHARGE_MAX_BODY_BYTES`), refused before it is read:
    parsing a body costs memory and time before any rate limit or sign-in is checked."""

    status = 413
    slug = "request-too-large"
    title = N_("The request is too large.")


class RateLimited(SimchargeError):
    status = 429
    slug = "rate-limited"
    title = N_("Too many requests; please wait and try again.")


class ServiceUnavailable(SimchargeError):
    """503: try again later. Always with a `Retry-After` (`retry_after` seconds unless the
    raiser gives its own), the database's (unreachable, or past its timeouts: see
    `db.is_unreachable`) and a payment provider's alike."""

    status = 503
    slug = "service-unavailable"
    title = N_("The service is temporarily unavailable.")
    retry_after: ClassVar[int] = 5

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detail, headers=headers, **kwargs)
        self.headers.setdefault("Retry-After", str(self.retry_after))


class SecondFactorUnavailable(ServiceUnavailable):
    """503: a second step that cannot be checked — the stored authenticator secret opens under
    no key of the ring (`SIMCHARGE_SECRET_KEY`, `SIMCHARGE_SECRET_KEY_PREVIOUS`: a key dropped
    too early). Not the person's fault, and not a wrong code: nothing is counted against them;
    logged as `crypto.seal_broken` for the operator (README, "Rotating the secret key")."""

    slug = "second-factor-unavailable"
    title = N_("Two-step verification cannot be checked at the moment. Please try again later.")
    retry_after: ClassVar[int] = 300


class InternalError(SimchargeError):
    status = 500
    slug = "internal-error"
    title = N_("Something went wrong on our side; it has been logged.")


class TooManyAttempts(RateLimited):
    slug = "too-many-attempts"
    title = N_("Too many attempts; please wait and try again.")

    def __init__(self, retry_after: int, detail: str | None = None, **params: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))}, **params)
        self.retry_after = max(1, retry_after)

    def extra(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}


@dataclass(frozen=True)
class Refused:
    """A refusal whose bookkeeping (a failed attempt counted, an audit entry) must be committed
    before it is raised: services return it, the edge commits, then raises `error`."""

    error: SimchargeError


def registered_problem_types() -> dict[str, type[SimchargeError]]:
    """Every problem type by slug, for the `/problems/<slug>` documentation pages."""
    found: dict[str, type[SimchargeError]] = {}
    stack: list[type[SimchargeError]] = [SimchargeError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.slug, cls)
        stack.extend(cls.__subclasses__())
    return dict(sorted(found.items()))


NUL_REFUSED = N_("This value contains a character that is not allowed.")


def refuse_nul(fields: Mapping[str, object]) -> None:
    """A form whose field (name or value) holds a NUL: 422 naming each such field. No one types
    one, and PostgreSQL cannot store one in text — refused as the API refuses one in JSON."""
    refused = [
        FieldError(k, NUL_REFUSED) for k, v in fields.items() if "\x00" in k or "\x00" in str(v)
    ]
    if refused:
        raise ValidationFailed(errors=refused)
