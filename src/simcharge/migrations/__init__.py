"""Alembic migrations: the only way a schema is made (`simcharge db upgrade`)."""
