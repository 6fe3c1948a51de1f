"""A contact replaced, and codes sent to it: a reset or unlock code on its way to the old
address or number no longer opens the account. And asking for an address another account holds
answers exactly as asking for a free one (the same wait before another code, the same limits)."""

from __future__ import annotations

import httpx

from tests.auth.helpers import (
    PASSWORD,
    Deliver,
    login,
    new_identity,
    problem,
    register,
    signup,
)
from tests.conftest import SmtpInbox, last_sms_code

NEW_PASSWORD = "copper-lantern-5512"


async def test_a_reset_code_sent_to_the_replaced_address_no_longer_resets(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """A reset code goes to the verified address of the time. Once the customer has replaced
    that address (verified the new one), the old mailbox must no longer control the account."""
    customer = await signup(client, inbox, deliver)
    old = str(customer.email)
    r = await client.post(
        "/api/v1/auth/password/forgot", json={"login": customer.username, "channel": "email"}
    )
    assert r.status_code == 202
    await deliver()
    old_code = inbox.last_code(old)
    new = f"moved-{old}"
    r = await client.patch(
        "/api/v1/me", headers=customer.auth, json={"email": new, "current_password": PASSWORD}
    )
    assert r.status_code == 200
    await deliver()
    r = await client.post(
        "/api/v1/auth/verify",
        headers=customer.auth,
        json={"channel": "email", "code": inbox.last_code(new)},
    )
    assert r.status_code == 200 and r.json()["email"] == new
    r = await client.post(
        "/api/v1/auth/password/reset",
        json={"login": customer.username, "code": old_code, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 422, r.text


async def test_a_reset_code_sent_to_the_replaced_phone_no_longer_resets(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    old = str(customer.phone)
    await client.post("/api/v1/auth/password/forgot", json={"login": old, "channel": "sms"})
    await deliver()
    old_code = last_sms_code(old)
    _, _, new = new_identity()
    r = await client.patch(
        "/api/v1/me", headers=customer.auth, json={"phone": new, "current_password": PASSWORD}
    )
    assert r.status_code == 200
    await deliver()
    r = await client.post(
        "/api/v1/auth/verify",
        headers=customer.auth,
        json={"channel": "sms", "code": last_sms_code(str(new))},
    )
    assert r.status_code == 200 and r.json()["phone"] == new
    r = await client.post(
        "/api/v1/auth/password/reset",
        json={"login": customer.username, "code": old_code, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 422, r.text


async def test_asking_twice_for_an_address_answers_alike_whoever_holds_it(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """"An e-mail address or phone number that another account holds is NOT revealed, now or
    later" — but a free address answers the second request within a minute with 429
    (`code-resend-too-soon`), a held one with 200."""
    holder = await signup(client, inbox, deliver)
    prober = await signup(client, inbox, deliver)

    async def ask_twice(address: str) -> tuple[int, int]:
        body = {"email": address, "current_password": PASSWORD}
        first = await client.patch("/api/v1/me", headers=prober.auth, json=body)
        second = await client.patch("/api/v1/me", headers=prober.auth, json=body)
        return first.status_code, second.status_code

    free = await ask_twice("nobody-has-this@example.com")
    held = await ask_twice(str(holder.email))
    assert free == held, (free, held)


async def test_resend_after_registering_answers_alike_whoever_holds_the_address(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """The same through registration and `verify/resend` (no password of anyone needed)."""
    holder = await signup(client, inbox, deliver)
    answers = {}
    for label, address in (("free", "free-address-x@example.com"), ("held", holder.email)):
        username, _, _ = new_identity()
        assert (await register(client, username=username, email=address, phone=None)).status_code == 202
        token = (await login(client, username)).json()["token"]
        r = await client.post(
            "/api/v1/auth/verify/resend",
            json={"channel": "email"},
            headers={"Authorization": f"Bearer {token}"},
        )
        answers[label] = (r.status_code, r.headers.get("content-type"))
        if r.status_code != 200:
            answers[label] = (r.status_code, problem(r)["type"])
    assert answers["free"] == answers["held"], answers
