"""Sixteenth round: a slash too many at the end of an address. Starlette's router answered it,
before any authentication, with a 307 to the request's own `Host` (`Host: evil.example` →
`Location: http://evil.example/…`, and http:// behind a TLS proxy). Now the APIs answer 404 in
their own shape (problem+json; Nchf's with its `cause`), and a browser asking for a page is sent
on by a relative `Location` — never to another host, never with a decoded line end."""

from __future__ import annotations

import httpx
import pytest

PAGE = {"accept": "text/html,application/xhtml+xml"}


@pytest.mark.parametrize(
    "path",
    ["/api/v1/usage/", "/api/v1/catalog/packages/", "/api/v1/me/", "/tmf-api/accountManagement/v4/"],
)
async def test_the_apis_answer_404_and_send_nobody_anywhere(
    client: httpx.AsyncClient, path: str
) -> None:
    for method in ("GET", "POST"):
        answer = await client.request(method, path, headers={"host": "evil.example"})
        assert answer.status_code == 404, (method, path, answer.text)
        assert "location" not in answer.headers
        assert answer.headers["content-type"].startswith("application/")


async def test_nchf_with_a_slash_too_many_is_404_with_its_cause(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post(
        "/nchf-convergedcharging/v3/chargingdata/",
        headers={"host": "evil.example", "content-type": "application/json"},
        content=b"{}",
    )
    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert answer.json().get("cause")


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/login/", "/login"),
        ("/login//", "/login"),
        ("/backoffice/login/", "/backoffice/login"),
        ("/login/?next=%2Faccount", "/login?next=%2Faccount"),
    ],
)
async def test_a_page_is_sent_on_relatively(
    client: httpx.AsyncClient, path: str, location: str
) -> None:
    answer = await client.get(path, headers={**PAGE, "host": "evil.example"})
    assert answer.status_code == 307
    assert answer.headers["location"] == location
    followed = await client.get(location, headers=PAGE)
    assert followed.status_code == 200


@pytest.mark.parametrize(
    "path", ["//evil.example/", "/%2F%2Fevil.example/", "/%5Cevil.example/", "/\\evil.example/"]
)
async def test_never_to_another_site(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path, headers=PAGE)
    location = answer.headers.get("location", "")
    assert not location.startswith(("//", "/\\")), location
    assert "evil.example" not in location or location.startswith("/%")


async def test_a_line_end_never_reaches_the_header(client: httpx.AsyncClient) -> None:
    answer = await client.get("/login%0d%0aSet-Cookie:%20x=1/", headers=PAGE)
    assert not any("x=1" in v for v in answer.headers.get_list("set-cookie"))
    assert answer.headers.get("location", "") in ("", "/login%0d%0aSet-Cookie:%20x=1")
    assert "\r" not in answer.headers.get("location", "")


async def test_a_form_posted_with_a_slash_too_many_is_not_redirected(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post("/login/", headers=PAGE, data={"login": "x", "password": "y"})
    assert answer.status_code in (404, 405)
    assert "location" not in answer.headers


async def test_the_root_is_itself(client: httpx.AsyncClient) -> None:
    answer = await client.get("/", headers=PAGE)
    assert answer.status_code == 200
