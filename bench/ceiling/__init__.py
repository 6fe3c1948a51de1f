"""`python -m bench.ceiling`: how far `topup_fulfil_webhook` and `nchf_update` could go on this
machine — what the most any implementation of them on simcharge's schema could reach.

Each operation's database work is done by one PL/pgSQL call (`fulfil.sql`, `nchf.sql`): every
row simcharge writes for it, and less logic than simcharge runs (see each file). Each call is
served over HTTP twice, with the same driver and load as the entries: behind simcharge's own
application (its middleware, its router; the route placed first, as the real ones are), and
behind a bare ASGI endpoint like `http_baseline`'s. The ratios to `http_baseline`, measured in
the same run, are ceilings: the real entries do at least this work, through more statements
and more Python.

Not part of `make bench`: it replaces functions in the bench database and consumes its orders.
"""
