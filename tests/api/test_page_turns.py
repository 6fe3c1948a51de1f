"""`PageTurns`: at most N pages of the user center are built at once in a process, the rest
wait in arrival order; the API and everything else never waits (a bare ASGI app stands in for
simcharge, so that each request's start and end can be held and observed)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from simcharge.api.middleware import PageTurns


class Held:
    """An app whose requests each wait for the test to let them answer."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.fail: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        name = scope["path"] + "?" + scope["query_string"].decode()
        self.started.append(name)
        gate = self.gates.setdefault(name, asyncio.Event())
        await gate.wait()
        if name in self.fail:
            raise RuntimeError("the page failed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0)  # the body after the turn has passed on
        await send({"type": "http.response.body", "body": name.encode()})

    def let(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_pages_take_turns_in_arrival_order_and_a_turn_ends_when_the_answer_starts() -> None:
    held = Held()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=PageTurns(held, at_once=2)),
                               base_url="http://t")
    async with client:
        tasks = []
        for k in range(5):
            tasks.append(asyncio.create_task(client.get("/account", params={str(k): ""})))
            await _settle()
        names = [f"/account?{k}=" for k in range(5)]
        assert held.started == names[:2]  # two at once; the others wait
        held.let(names[1])
        await _settle()
        assert held.started == names[:3]  # the next in arrival order
        # Neither the API nor a form post waits for a turn.
        api = asyncio.create_task(client.get("/api/v1/me"))
        post = asyncio.create_task(client.post("/account/topup"))
        await _settle()
        assert held.started[-2:] == ["/api/v1/me?", "/account/topup?"]
        held.let("/api/v1/me?")
        held.let("/account/topup?")
        assert (await api).status_code == 200 and (await post).status_code == 200
        for name in names:
            held.let(name)
        answers = await asyncio.gather(*tasks)
        assert [a.text for a in answers] == names
        assert held.started[:5] == [*names[:3], "/api/v1/me?", "/account/topup?"]


async def test_a_page_that_fails_gives_its_turn_back() -> None:
    held = Held()
    app = PageTurns(held, at_once=1)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                               base_url="http://t")
    async with client:
        held.fail.add("/?")
        first = asyncio.create_task(client.get("/"))
        await _settle()
        second = asyncio.create_task(client.get("/account/records"))
        await _settle()
        assert held.started == ["/?"]
        held.let("/?")
        assert (await first).status_code == 500
        await _settle()
        assert held.started == ["/?", "/account/records?"]
        held.let("/account/records?")
        assert (await second).status_code == 200
    assert app.turns is not None and not app.turns.locked()


async def test_no_limit_when_set_to_zero() -> None:
    held = Held()
    app = PageTurns(held, at_once=0)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    async with client:
        tasks = [asyncio.create_task(client.get("/account", params={str(k): ""})) for k in range(20)]
        await _settle()
        assert len(held.started) == 20
        for name in list(held.started):
            held.let(name)
        assert all(r.status_code == 200 for r in await asyncio.gather(*tasks))
