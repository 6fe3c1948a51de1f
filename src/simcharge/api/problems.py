"""Rendering every error as RFC 9457 `application/problem+json`.

Expected failures are `SimchargeError`s; FastAPI's validation errors become `validation-error`
with one entry per offending field; unknown routes and methods keep their status; anything
else is a logged `internal-error` that shows no trace of the code (answered by
`RequestContextMiddleware`, so that it keeps the request id and security headers).
"""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable
from typing import Any, cast

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from simcharge.api.deps import request_language
from simcharge.errors import (
    BadRequest,
    FieldError,
    HTTPProblem,
    MethodNotAllowed,
    NotFound,
    SimchargeError,
    ValidationFailed,
)
from simcharge.kit.translations import N_, translate

log = structlog.get_logger("simcharge.http")

PROBLEM_JSON = "application/problem+json"


def said(language: str, template: str, params: dict[str, Any]) -> str:
    """A problem's text in `language`, its placeholders filled."""
    text = translate(language, template)
    return text.format(**params) if params else text


def field_errors(exc: SimchargeError, language: str) -> list[dict[str, str]]:
    """Each offending field and what is wrong with it, in `language`."""
    return [{"field": e.field, "detail": said(language, e.detail, e.params)} for e in exc.errors]


def error_texts(exc: SimchargeError, language: str) -> tuple[str, dict[str, str]]:
    """A refusal as a form shows it (the portal's and the back office's), in `language`: a
    sentence above the form, and one beside each offending field."""
    fields = {e.field: said(language, e.detail, e.params) for e in exc.errors}
    summary = said(language, exc.detail_template, exc.params)
    if exc.field and exc.field not in fields:
        fields[exc.field] = summary
    if exc.errors:
        summary = translate(language, exc.title)
    return summary, fields


def problem_body(exc: SimchargeError, language: str, instance: str | None) -> dict[str, Any]:
    def tr(template: str, params: dict[str, Any]) -> str:
        return said(language, template, params)

    body: dict[str, Any] = {
        "type": exc.type_uri,
        "title": translate(language, exc.title),
        "status": exc.status,
        "detail": tr(exc.detail_template, exc.params),
    }
    if instance:
        body["instance"] = instance
    if exc.field:
        body["field"] = exc.field
    if exc.errors:
        body["errors"] = field_errors(exc, language)
        body.setdefault("field", exc.errors[0].field)
    body.update(exc.extra())
    return body


def problem_response(
    request: Request, exc: SimchargeError, extra: dict[str, Any] | None = None
) -> JSONResponse:
    """`exc` as a problem document; `extra`: members an API adds (Nchf's `cause`)."""
    language = getattr(request.state, "language", None) or request_language(request)
    body = problem_body(exc, language, request.url.path) | (extra or {})
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON, headers=exc.headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


_WHOLE = N_("Enter a whole number.")
_NUMBER = N_("Enter a number.")
_MESSAGES = {
    "missing": N_("This field is required."),
    "extra_forbidden": N_("This field is not allowed."),
    "json_invalid": N_("The body is not valid JSON."),
    "string_type": N_("Enter text."),
    "string_too_short": N_("Enter at least {min_length} characters."),
    "string_too_long": N_("Enter at most {max_length} characters."),
    "string_pattern_mismatch": N_("This is not in the expected form."),
    "int_type": _WHOLE,
    "int_parsing": _WHOLE,
    "int_from_float": _WHOLE,
    "float_type": _NUMBER,
    "float_parsing": _NUMBER,
    "decimal_type": _NUMBER,
    "decimal_parsing": _NUMBER,
    "finite_number": _NUMBER,
    "bool_type": N_("Enter true or false."),
    "bool_parsing": N_("Enter true or false."),
    "greater_than": N_("Enter more than {gt}."),
    "greater_than_equal": N_("Enter {ge} or more."),
    "less_than": N_("Enter less than {lt}."),
    "less_than_equal": N_("Enter {le} or less."),
    "too_short": N_("Give at least {min_length}."),
    "too_long": N_("Give at most {max_length}."),
    "literal_error": N_("Choose one of: {expected}."),
    "enum": N_("Choose one of: {expected}."),
    "uuid_type": N_("This is not a valid id."),
    "uuid_parsing": N_("This is not a valid id."),
    "datetime_type": N_("Not a date and time."),
    "datetime_parsing": N_("Not a date and time."),
    "datetime_from_date_parsing": N_("Not a date and time."),
    "date_type": N_("Not a date."),
    "date_parsing": N_("Not a date."),
    "dict_type": N_("This must be an object."),
    "model_type": N_("This must be an object."),
    "model_attributes_type": N_("This must be an object."),
    "list_type": N_("This must be a list."),
}
"""What a customer reads for each of pydantic's error types, in their language; the limits
named (`min_length`, `le`, `expected` …) come from the error's context. Any other type keeps
pydantic's own (English) message."""


def _field_error(e: Any) -> FieldError:
    field = _field_of(tuple(e.get("loc", ())))
    message = _MESSAGES.get(str(e.get("type")))
    if message is None:
        return FieldError(field, str(e.get("msg", "Invalid value.")))
    context = e.get("ctx") or {}
    params = {key: str(context[key]) for key in _NAMES_IN.get(message, ()) if key in context}
    if len(params) < len(_NAMES_IN.get(message, ())):  # a limit not named: pydantic's words
        return FieldError(field, str(e.get("msg", "Invalid value.")))
    return FieldError(field, message, params)


_NAMES_IN = {
    message: tuple(name for _, name, _, _ in string.Formatter().parse(message) if name)
    for message in _MESSAGES.values()
}


def validation_problem(exc: RequestValidationError) -> SimchargeError:
    errors: list[FieldError] = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            return BadRequest(N_("The body is not valid JSON."), field="body")
        errors.append(_field_error(e))
    return ValidationFailed(errors=errors)


def problem_answer(request: Request, exc: SimchargeError) -> Response:
    """A page for the portal's pages (`request.state.portal`, the app's `html_problem`), a
    problem document for everything else."""
    html: Callable[[Request, SimchargeError], Response] | None = getattr(
        request.app.state, "html_problem", None
    )
    if html is not None and getattr(request.state, "portal", False):
        return html(request, exc)
    answer = _api_answer(request)
    if answer is not None:
        return answer(request, exc)
    return problem_response(request, exc)


def _api_answer(request: Request) -> Callable[[Request, SimchargeError], Response] | None:
    """The shape the API under the request's path answers errors in, as the middleware answers
    its own (`app.state.error_answers`): under Nchf, its ProblemDetails with `cause` — an error
    a route's dependency raises (the API key: missing, not valid, lacking the scope, checked
    before the body is read) or the routing's 404 and 405 included, since a client of the CHF
    reads `cause` on every problem. Not TMF654's `Error`: its routes answer their own errors,
    and it would make the 404 of a path outside them a 400 (bad input) on a POST."""
    path = request.url.path
    if path.startswith(TMF_PREFIX):
        return None
    for prefix, answer in getattr(request.app.state, "error_answers", ()):
        if path.startswith(prefix):
            return cast(Callable[[Request, SimchargeError], Response], answer)
    return None


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(SimchargeError)
    async def _expected(request: Request, exc: SimchargeError) -> Response:
        return problem_answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return problem_answer(request, validation_problem(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        mapped: SimchargeError
        if exc.status_code == 404 and (moved := _without_slash(request)) is not None:
            return moved
        if exc.status_code == 404:
            mapped = NotFound()
        elif exc.status_code == 405:
            mapped = MethodNotAllowed(headers=dict(exc.headers or {}))
        else:
            mapped = HTTPProblem(exc.status_code, str(exc.detail))
        if exc.status_code in (404, 405) and _browsing(request):
            # A browser on the portal's side of the site (a mistyped address, a form's address
            # opened as a page): a page, not a JSON document, in the language the portal would
            # speak (the app's `html_visitor`: the switch's cookie, the signed-in account's,
            # the browser's); no route ran to find it out.
            request.state.portal = True
            find: Callable[[Request], Awaitable[None]] | None = getattr(
                request.app.state, "html_visitor", None
            )
            if find is not None and getattr(request.state, "visitor", None) is None:
                await find(request)
            request.state.language = getattr(request.state, "language", None) or (
                request_language(request)
            )
        if exc.status_code in (404, 405) and _browsing_back_office(request):
            # The back office's own page for it (its handler of SimchargeError), as for any
            # error on its pages; its API under /api/v1/admin keeps problem+json.
            handler = request.app.exception_handlers[SimchargeError]
            return cast(Response, await handler(request, mapped))
        return problem_answer(request, mapped)


def _without_slash(request: Request) -> Response | None:
    """A browser's page address with a slash at its end (`/account/records/`): sent on to the
    address without it, by a relative `Location` (the app's router redirects nothing: its
    redirect names the request's `Host`, which anybody can write — the sixteenth round). Never
    the API's, Nchf's or TMF654's paths, which answer 404 as they are; never a path that would
    leave the site (`//host/`, `/\\host/`)."""
    path = request.url.path
    if request.method not in ("GET", "HEAD") or len(path) < 2 or not path.endswith("/"):
        return None
    if not (_browsing(request) or _browsing_back_office(request)):
        return None
    # As the request wrote it, still percent-encoded: nothing decoded (a line end, `%2F%2F`)
    # reaches the header or turns into another host's address.
    raw = request.scope.get("raw_path") or path.encode()
    target = raw.decode("latin-1").partition("?")[0].rstrip("/")
    if not target.startswith("/") or target[1:2] in ("", "/", "\\"):
        return None
    query = request.url.query
    location = target + ("?" + query if query else "")
    if not all("!" <= c <= "~" for c in location):
        return None
    return Response(status_code=307, headers={"Location": location})


def _browsing_back_office(request: Request) -> bool:
    path = request.url.path
    return (
        "text/html" in request.headers.get("accept", "")
        and (path == "/backoffice" or path.startswith("/backoffice/"))
        and not path.startswith("/backoffice/static/")
    )


_NOT_PAGES = ("/api/", "/tmf-api/", "/nchf-", "/backoffice", "/problems", "/static/", "/sandbox/")


def _browsing(request: Request) -> bool:
    """A browser asking for a page outside the API, the back office and the machine paths."""
    path = request.url.path
    return "text/html" in request.headers.get("accept", "") and not path.startswith(_NOT_PAGES)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error (RFC 9457). `type` is stable; `GET /problems/<slug>` documents it.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "field": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "detail"],
                "properties": {"field": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
        "request_id": {"type": "string"},
    },
    "additionalProperties": True,
}


TMF_PREFIX = "/tmf-api/"
TMF_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "TM Forum `Error` (TMF630): what went wrong, with our problem type and field.",
    "required": ["code", "reason"],
    "properties": {
        "code": {"type": "string"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "status": {"type": "string"},
        "referenceError": {"type": "string"},
        "@type": {"type": "string"},
        "type": {"type": "string"},
        "field": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def document_problems(app: FastAPI) -> None:
    """Say in the OpenAPI document what errors really look like: every 4xx answer (and the
    invalid-input 422 FastAPI documents as `HTTPValidationError`) is `application/problem+json`
    with the `Problem` schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = build()
        ref = {"$ref": "#/components/schemas/Problem"}
        default_problem = {"application/problem+json": {"schema": ref}}
        # TMF654 answers with TM Forum's own `Error` object, as plain JSON.
        tmf = {"application/json": {"schema": {"$ref": "#/components/schemas/TmfError"}}}
        for path, item in spec.get("paths", {}).items():
            problem = tmf if path.startswith(TMF_PREFIX) else default_problem
            for operation in item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                if "422" in responses:
                    responses["422"] = {"description": "Some input is not valid", "content": problem}
                responses.setdefault(
                    "4XX", {"description": "A problem (RFC 9457)", "content": problem}
                )
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        schemas["TmfError"] = TMF_ERROR_SCHEMA
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
