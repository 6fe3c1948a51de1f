"""Alembic environment. Runs on a connection handed over by `simcharge.migrate` (tests, CLI),
or opens its own from `sqlalchemy.url` (plain `alembic` commands during development)."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import JSON
from sqlalchemy.engine import Connection

from simcharge.db import create_engine
from simcharge.models import metadata

config = context.config


def render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our JSON/JSONB column type by name, so migrations stay readable."""
    if (
        kind == "type"
        and isinstance(obj, JSON)
        and "postgresql" in getattr(obj, "_variant_mapping", {})
    ):
        return "simcharge.db.JSONType"
    return False


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_item=render_item,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_own_connection() -> None:
    url = os.environ.get("SIMCHARGE_DATABASE_URL") or config.get_main_option("sqlalchemy.url") or ""
    engine = create_engine(url, null_pool=True)
    async with engine.connect() as conn:
        await conn.run_sync(run_on)
        await conn.commit()
    await engine.dispose()


def main() -> None:
    given: Any = config.attributes.get("connection")
    if given is not None:
        run_on(given)
    elif context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(run_own_connection())


main()
