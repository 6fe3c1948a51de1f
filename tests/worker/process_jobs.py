"""Jobs for the tests that run `simcharge worker` as a process: imported by that process (see
`test_process.py`) into the real registry, next to the real jobs. Each leaves files in the
directory its payload names, so the test can see what ran and steer it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from simcharge.worker.registry import JobContext, job


def _mark(payload: dict[str, Any], what: str) -> None:
    (Path(payload["dir"]) / f"{what}-{payload['name']}").touch()


@job("test.quick")
async def quick(ctx: JobContext, payload: dict[str, Any]) -> None:
    _mark(payload, "started")
    _mark(payload, "finished")


@job("test.until_released")
async def until_released(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Runs until the test creates `release-<name>` (or is stopped)."""
    _mark(payload, "started")
    release = Path(payload["dir"]) / f"release-{payload['name']}"
    while not release.exists():  # noqa: ASYNC110 - another process makes the file
        await asyncio.sleep(0.05)
    _mark(payload, "finished")
