"""Work outside the request: the outbox table and `simcharge worker`."""
