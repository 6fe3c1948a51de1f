"""structlog configuration: JSON lines in production, readable lines in development.

Values under keys that look secret are masked before anything is written. Tracebacks are plain
in both modes: never the local variables of each frame (structlog's rich console traceback would
print them, and a frame's locals hold passwords, codes and tokens). Records of the standard
`logging` module (uvicorn, SQLAlchemy, libraries) go through the same renderer, so in production
every line on stderr is one JSON object."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = ("password", "secret", "token", "authorization", "cookie", "code", "key", "otp")
NOT_SECRET = frozenset({"event", "key_prefix"})
"""Names that look secret and are not: an API key's public prefix is what ASVS 7.1.3 wants
recorded of a refused key (`apikey.refused`)."""


def _mask_secrets(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for k in list(event):
        lowered = k.lower()
        if k in NOT_SECRET or lowered.endswith("_id"):
            continue
        if any(s in lowered for s in SECRET_KEYS):
            event[k] = "***"
    return event


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler this module installs (replaced, never stacked, when reconfigured)."""


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
        structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _StdlibHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=processors,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # uvicorn (and a test's earlier server) may have given its loggers handlers of their own
    # and cut them from the root: everything goes through the one renderer above.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(logging.NOTSET)
        library.disabled = False
    # Libraries say too much at INFO (httpx logs every request's URL): warnings and up only.
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


def log_denied(resource: str, account_id: object, resource_id: object) -> None:
    """A customer asked for another customer's `resource` (ASVS 7.2.2: failed access-control
    decisions are logged). The answer stays "not found"; the line says who reached for what."""
    structlog.get_logger("simcharge.audit").warning(
        "access.denied", resource=resource, account_id=str(account_id), resource_id=str(resource_id)
    )
