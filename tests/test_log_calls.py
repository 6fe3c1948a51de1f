"""Every structlog call in the package can run.

structlog's logging methods take the event name as their first argument, `event`: a call that
also passes `event=` raises `TypeError` when it runs — in production, as a 500 or a job that
fails on every attempt. Tests that replace a module's `log` with a recorder do not notice, so
this reads the source instead (two such calls were found in `payments/webhooks.py`, 2026-12-07).
"""

from __future__ import annotations

import ast
from pathlib import Path

import simcharge

LEVELS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "msg", "fatal"}
PACKAGE = Path(simcharge.__file__).parent


def _log_calls(tree: ast.AST) -> list[ast.Call]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        target = node.func.value
        if isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute):
            target = target.func.value  # log.bind(...).warning(...)
        name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
        if node.func.attr in LEVELS and name in {"log", "logger", "_log", "audit"}:
            found.append(node)
    return found


def test_no_log_call_passes_event_as_a_keyword() -> None:
    offenders, calls = [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for call in _log_calls(tree):
            calls += 1
            if any(k.arg == "event" for k in call.keywords):
                offenders.append(f"{path.relative_to(PACKAGE)}:{call.lineno}")
    assert calls > 50, calls  # the scan finds the package's log calls at all
    assert offenders == [], offenders


def test_the_scan_finds_an_offending_call() -> None:
    tree = ast.parse('log.warning("payments.x", provider="p", event="e1")\nlog.info("ok", a=1)\n')
    calls = _log_calls(tree)
    assert len(calls) == 2
    assert [any(k.arg == "event" for k in c.keywords) for c in calls] == [True, False]
