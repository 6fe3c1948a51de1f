"""Passkeys through the API, on SQLite and PostgreSQL, with real signatures: a software
authenticator (an EC P-256 key from `cryptography`, CBOR by `cbor2`, "none" attestation) answers
the server's options as a browser's would. Registering (the password asked again, the notice
e-mailed), signing in (a session like a password+TOTP one), listing, renaming and removing; and
every refusal: a wrong origin or relying party, a challenge replayed, expired, another client's
or another session's, someone else's passkey, a signature counter going back, no user
verification, a locked account, a removed passkey, malformed input (nothing changes), passkeys
off on a site reached by IP address, and the settings that would make passkeys unusable."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import cbor2
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError
from sqlalchemy import func, select

from simcharge.app import create_app
from simcharge.auth.models import Passkey, PasskeyChallenge, SecurityEvent
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import PASSWORD, Customer, Deliver, problem, signup
from tests.conftest import SmtpInbox
from tests.portal.helpers import csrf_of

ORIGIN = "http://testserver"
RP_ID = "testserver"
UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Authenticator:
    """A platform authenticator in software: one discoverable credential, a counter."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    sign_count: int = 0
    user_handle: bytes = b""

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
             -3: numbers.y.to_bytes(32, "big")}
        )

    def _auth_data(self, rp_id: str, flags: int, count: int, attested: bool = False) -> bytes:
        data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + count.to_bytes(4, "big")
        if attested:
            data += bytes(16) + len(self.credential_id).to_bytes(2, "big")
            data += self.credential_id + self.cose_key()
        return data

    def create(
        self, options: dict[str, Any], *, origin: str = ORIGIN, rp_id: str = RP_ID,
        flags: int = UP | UV | BE | BS,
    ) -> dict[str, Any]:
        """What `navigator.credentials.create()` answers, as `toJSON()` writes it."""
        self.user_handle = unb64(options["user"]["id"])
        client_data = json.dumps(
            {"type": "webauthn.create", "challenge": options["challenge"], "origin": origin,
             "crossOrigin": False}
        ).encode()
        attestation = cbor2.dumps(
            {"fmt": "none", "attStmt": {},
             "authData": self._auth_data(rp_id, flags | AT, self.sign_count, attested=True)}
        )
        return {
            "id": b64(self.credential_id), "rawId": b64(self.credential_id), "type": "public-key",
            "response": {"clientDataJSON": b64(client_data),
                         "attestationObject": b64(attestation), "transports": ["internal"]},
            "clientExtensionResults": {}, "authenticatorAttachment": "platform",
        }

    def get(
        self, options: dict[str, Any], *, origin: str = ORIGIN, rp_id: str = RP_ID,
        flags: int = UP | UV | BE | BS, count: int | None = None,
    ) -> dict[str, Any]:
        """What `navigator.credentials.get()` answers: a real ECDSA signature."""
        if count is None:
            self.sign_count += 1
            count = self.sign_count
        auth_data = self._auth_data(rp_id, flags, count)
        client_data = json.dumps(
            {"type": "webauthn.get", "challenge": options["challenge"], "origin": origin,
             "crossOrigin": False}
        ).encode()
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64(self.credential_id), "rawId": b64(self.credential_id), "type": "public-key",
            "response": {"clientDataJSON": b64(client_data), "authenticatorData": b64(auth_data),
                         "signature": b64(signature), "userHandle": b64(self.user_handle)},
            "clientExtensionResults": {},
        }


# --- helpers ----------------------------------------------------------------------------------


async def add_options(client: httpx.AsyncClient, customer: Customer) -> httpx.Response:
    return await client.post(
        "/api/v1/me/passkeys/options", json={"password": customer.password}, headers=customer.auth
    )


async def add_passkey(
    client: httpx.AsyncClient, customer: Customer, device: Authenticator, **create: Any
) -> httpx.Response:
    r = await add_options(client, customer)
    assert r.status_code == 200, r.text
    credential = device.create(r.json()["public_key"], **create)
    return await client.post(
        "/api/v1/me/passkeys", json={"credential": credential, "name": "My phone"},
        headers=customer.auth,
    )


async def sign_in_options(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/api/v1/auth/passkeys/options")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def sign_in(
    client: httpx.AsyncClient, device: Authenticator, **get: Any
) -> httpx.Response:
    ceremony = await sign_in_options(client)
    credential = device.get(ceremony["public_key"], **get)
    return await client.post(
        "/api/v1/auth/passkeys/login",
        json={"ceremony": ceremony["ceremony"], "credential": credential},
    )


async def with_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> tuple[Customer, Authenticator]:
    customer = await signup(client, inbox, deliver, with_phone=False)
    device = Authenticator()
    r = await add_passkey(client, customer, device)
    assert r.status_code == 201, r.text
    return customer, device


async def events(db: Database, kind: str) -> list[SecurityEvent]:
    async with db.read() as s:
        rows = await s.execute(
            select(SecurityEvent).where(SecurityEvent.kind == kind)
            .order_by(SecurityEvent.created_at)
        )
        return list(rows.scalars().all())


async def count(db: Database, model: Any) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


# --- registering and signing in ---------------------------------------------------------------


async def test_register_then_sign_in_with_the_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    r = await add_options(client, customer)
    assert r.status_code == 200, r.text
    options = r.json()["public_key"]
    assert options["rp"] == {"id": RP_ID, "name": "simcharge"}
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none"
    device = Authenticator()
    r = await client.post(
        "/api/v1/me/passkeys",
        json={"credential": device.create(options), "name": "  My   phone "},
        headers=customer.auth,
    )
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["name"] == "My phone"
    assert added["backed_up"] is True
    assert added["transports"] == ["internal"]
    # The next registration options exclude it: the authenticator says it holds one already.
    again = (await add_options(client, customer)).json()["public_key"]
    assert [c["id"] for c in again["excludeCredentials"]] == [b64(device.credential_id)]

    inbox.messages.clear()
    await deliver()
    assert [m["Subject"] for m in inbox.to(customer.email or "")] == [
        "A passkey was added to your account"
    ]

    ceremony = await sign_in_options(client)
    assert ceremony["public_key"]["userVerification"] == "required"
    assert ceremony["public_key"]["allowCredentials"] == []
    r = await client.post(
        "/api/v1/auth/passkeys/login",
        json={"ceremony": ceremony["ceremony"], "credential": device.get(ceremony["public_key"])},
    )
    assert r.status_code == 200, r.text
    signed_in = r.json()
    assert signed_in["account"]["username"] == customer.username
    token = {"Authorization": f"Bearer {signed_in['token']}"}
    sessions = (await client.get("/api/v1/me/sessions", headers=token)).json()
    assert [s["two_step"] for s in sessions if s["current"]] == [True]
    listed = (await client.get("/api/v1/me/passkeys", headers=token)).json()
    assert [(p["id"], p["name"]) for p in listed] == [(added["id"], "My phone")]
    assert listed[0]["last_used_at"] is not None
    logins = [e for e in await events(db, "login") if e.details.get("method") == "passkey"]
    assert [(e.success, e.details["mfa"]) for e in logins] == [(True, True)]
    assert [e.success for e in await events(db, "passkey_added")] == [True]


async def test_a_cookie_sign_in_sets_the_session_cookie(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    _, device = await with_passkey(client, inbox, deliver)
    ceremony = await sign_in_options(client)
    r = await client.post(
        "/api/v1/auth/passkeys/login",
        json={"ceremony": ceremony["ceremony"], "credential": device.get(ceremony["public_key"]),
              "mode": "cookie"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["token"] is None and r.json()["csrf_token"]
    assert "sc_session" in r.cookies


async def test_two_step_is_not_asked_again_after_a_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """A passkey with user verification is two factors: an account with TOTP on signs in."""
    customer, device = await with_passkey(client, inbox, deliver)
    r = await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 200, r.text
    import pyotp

    code = pyotp.TOTP(r.json()["secret"]).now()
    r = await client.post("/api/v1/me/totp/confirm", json={"code": code}, headers=customer.auth)
    assert r.status_code == 200, r.text
    assert (await sign_in(client, device)).status_code == 200


# --- registering: refusals --------------------------------------------------------------------


async def test_adding_a_passkey_asks_the_password_again(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    r = await client.post(
        "/api/v1/me/passkeys/options", json={"password": "not-the-password"},
        headers=customer.auth,
    )
    assert r.status_code == 401
    assert problem(r)["type"].endswith("/invalid-credentials")
    assert problem(r)["field"] == "password"
    assert await count(db, PasskeyChallenge) == 0
    assert [e.success for e in await events(db, "passkey_added")] == [False]
    r = await client.post("/api/v1/me/passkeys/options", json={"password": PASSWORD})
    assert r.status_code == 401  # signed in only


@pytest.mark.parametrize(
    ("create", "slug"),
    [
        ({"origin": "https://evil.example"}, "passkey-invalid"),
        ({"rp_id": "evil.example"}, "passkey-invalid"),
        ({"flags": UP}, "passkey-invalid"),  # no user verification
    ],
    ids=["wrong-origin", "wrong-rp-id", "no-user-verification"],
)
async def test_a_registration_that_does_not_verify_is_refused(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    create: dict[str, Any], slug: str,
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    r = await add_passkey(client, customer, Authenticator(), **create)
    assert r.status_code == 422, r.text
    assert problem(r)["type"].endswith(f"/{slug}")
    assert await count(db, Passkey) == 0
    # Its challenge is spent: the same answer does not get in with a good origin later.
    failed = await events(db, "passkey_added")
    assert [(e.success, e.details.get("reason")) for e in failed] == [(False, slug)]


async def test_a_registration_challenge_is_used_once_and_for_a_while(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    options = (await add_options(client, customer)).json()["public_key"]
    device = Authenticator()
    credential = device.create(options)
    body = {"credential": credential, "name": "Phone"}
    assert (await client.post("/api/v1/me/passkeys", json=body, headers=customer.auth)
            ).status_code == 201
    replayed = await client.post("/api/v1/me/passkeys", json=body, headers=customer.auth)
    assert replayed.status_code == 400
    assert problem(replayed)["type"].endswith("/passkey-challenge-invalid")
    # Expired: five minutes and the options are over.
    options = (await add_options(client, customer)).json()["public_key"]
    clock.freeze(utcnow() + timedelta(minutes=5, seconds=1))
    late = await client.post(
        "/api/v1/me/passkeys", json={"credential": Authenticator().create(options)},
        headers=customer.auth,
    )
    assert late.status_code == 400, late.text
    assert problem(late)["type"].endswith("/passkey-challenge-invalid")
    assert await count(db, Passkey) == 1


async def test_a_registration_challenge_is_bound_to_its_account_and_session(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    alice = await signup(client, inbox, deliver, with_phone=False)
    bob = await signup(client, inbox, deliver, with_phone=False)
    options = (await add_options(client, alice)).json()["public_key"]
    r = await client.post(
        "/api/v1/me/passkeys", json={"credential": Authenticator().create(options)},
        headers=bob.auth,
    )
    assert r.status_code == 400
    assert problem(r)["type"].endswith("/passkey-challenge-invalid")
    # Alice's other session cannot finish what this one started.
    other = await client.post(
        "/api/v1/auth/login", json={"login": alice.username, "password": PASSWORD}
    )
    options = (await add_options(client, alice)).json()["public_key"]
    r = await client.post(
        "/api/v1/me/passkeys", json={"credential": Authenticator().create(options)},
        headers={"Authorization": f"Bearer {other.json()['token']}"},
    )
    assert r.status_code == 400
    assert await count(db, Passkey) == 0


async def test_someone_elses_passkey_cannot_be_registered_again(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    _, device = await with_passkey(client, inbox, deliver)
    bob = await signup(client, inbox, deliver, with_phone=False)
    r = await add_passkey(client, bob, device)
    assert r.status_code == 409
    assert problem(r)["type"].endswith("/passkey-taken")
    assert await count(db, Passkey) == 1


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"credential": {"id": "x"}}, "credential"),
        ({"credential": {"id": "!!", "rawId": "!!", "type": "public-key",
                         "response": {"clientDataJSON": "!!", "attestationObject": "!!"}}},
         "credential"),
        ({"credential": {}, "name": "\u0007bell"}, "name"),
        ({"credential": {}, "name": "x" * 65}, "name"),
    ],
    ids=["missing-parts", "not-base64url", "control-character", "too-long"],
)
async def test_malformed_registration_input_changes_nothing(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    body: dict[str, Any], field_name: str,
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    options = (await add_options(client, customer)).json()["public_key"]
    r = await client.post("/api/v1/me/passkeys", json=body, headers=customer.auth)
    assert r.status_code == 422, r.text
    found = problem(r)
    assert found["type"].endswith(("/passkey-invalid", "/validation-error"))
    assert field_name in json.dumps(found)
    # The challenge was not spent: the real answer still goes through.
    r = await client.post(
        "/api/v1/me/passkeys", json={"credential": Authenticator().create(options)},
        headers=customer.auth,
    )
    assert r.status_code == 201, r.text


# --- signing in: refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "get",
    [{"origin": "https://evil.example"}, {"rp_id": "evil.example"}, {"flags": UP}],
    ids=["wrong-origin", "wrong-rp-id-hash", "no-user-verification"],
)
async def test_a_sign_in_that_does_not_verify_is_refused(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    get: dict[str, Any],
) -> None:
    _, device = await with_passkey(client, inbox, deliver)
    r = await sign_in(client, device, **get)
    assert r.status_code == 401
    assert problem(r)["type"].endswith("/passkey-refused")
    failed = [e for e in await events(db, "login") if e.details.get("method") == "passkey"]
    assert [(e.success, e.details["reason"]) for e in failed] == [(False, "invalid")]
    assert (await sign_in(client, device)).status_code == 200


async def test_a_sign_in_challenge_is_used_once_for_a_while_by_its_client(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    _, device = await with_passkey(client, inbox, deliver)
    ceremony = await sign_in_options(client)
    body = {"ceremony": ceremony["ceremony"], "credential": device.get(ceremony["public_key"])}
    assert (await client.post("/api/v1/auth/passkeys/login", json=body)).status_code == 200
    replayed = await client.post("/api/v1/auth/passkeys/login", json=body)
    assert replayed.status_code == 400
    assert problem(replayed)["type"].endswith("/passkey-challenge-invalid")

    ceremony = await sign_in_options(client)
    stranger = {"ceremony": "someone-elses-handle",
                "credential": device.get(ceremony["public_key"])}
    r = await client.post("/api/v1/auth/passkeys/login", json=stranger)
    assert problem(r)["type"].endswith("/passkey-challenge-invalid")

    ceremony = await sign_in_options(client)
    clock.freeze(utcnow() + timedelta(minutes=5, seconds=1))
    late = await client.post(
        "/api/v1/auth/passkeys/login",
        json={"ceremony": ceremony["ceremony"], "credential": device.get(ceremony["public_key"])},
    )
    assert late.status_code == 400
    assert problem(late)["type"].endswith("/passkey-challenge-invalid")


async def test_a_sign_count_going_back_is_refused_and_logged(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    _, device = await with_passkey(client, inbox, deliver)
    assert (await sign_in(client, device, count=7)).status_code == 200
    r = await sign_in(client, device, count=7)
    assert r.status_code == 401
    assert problem(r)["type"].endswith("/passkey-refused")
    [event] = await events(db, "passkey_sign_count_regressed")
    assert (event.success, event.details["stored"], event.details["presented"]) == (False, 7, 7)
    assert (await sign_in(client, device, count=8)).status_code == 200


async def test_a_passkey_signs_in_only_as_its_own_account(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    alice, device = await with_passkey(client, inbox, deliver)
    bob, bob_device = await with_passkey(client, inbox, deliver)
    # Alice's credential presented as Bob's user: refused.
    as_bob = Authenticator(key=device.key, credential_id=device.credential_id,
                           sign_count=device.sign_count, user_handle=bob_device.user_handle)
    r = await sign_in(client, as_bob)
    assert r.status_code == 401
    assert problem(r)["type"].endswith("/passkey-refused")
    # Bob's key signing for Alice's credential: the signature is not her passkey's.
    forged = Authenticator(key=bob_device.key, credential_id=device.credential_id,
                           sign_count=5, user_handle=device.user_handle)
    r = await sign_in(client, forged)
    assert r.status_code == 401
    assert problem(r)["type"].endswith("/passkey-refused")
    # Neither can see, rename or remove the other's.
    [alices] = (await client.get("/api/v1/me/passkeys", headers=alice.auth)).json()
    for call in (
        client.patch(f"/api/v1/me/passkeys/{alices['id']}", json={"name": "Mine"},
                     headers=bob.auth),
        client.post(f"/api/v1/me/passkeys/{alices['id']}/remove", json={"password": PASSWORD},
                    headers=bob.auth),
    ):
        r = await call
        assert r.status_code == 404
        assert problem(r)["type"].endswith("/not-found")
    assert [p["name"] for p in (await client.get("/api/v1/me/passkeys", headers=bob.auth)).json()
            ] == ["My phone"]
    assert await count(db, Passkey) == 2


async def test_an_unknown_passkey_is_refused(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    r = await sign_in(client, Authenticator(user_handle=os.urandom(16)))
    assert r.status_code == 401
    assert problem(r)["type"].endswith("/passkey-refused")


async def test_a_locked_account_is_refused_as_with_a_password(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    assert (await client.post("/api/v1/me/lock", headers=customer.auth)).status_code == 200
    r = await sign_in(client, device)
    assert r.status_code == 401
    assert problem(r)["type"].endswith("/account-locked")
    password = await client.post(
        "/api/v1/auth/login", json={"login": customer.username, "password": PASSWORD}
    )
    assert problem(password)["type"] == problem(r)["type"]


async def test_a_removed_passkey_signs_in_no_more(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    [mine] = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    inbox.messages.clear()
    remove = f"/api/v1/me/passkeys/{mine['id']}/remove"
    r = await client.post(remove, json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 200, r.text
    again = await client.post(remove, json={"password": PASSWORD}, headers=customer.auth)
    assert again.status_code == 404
    await deliver()
    assert "A passkey was removed from your account" in [
        m["Subject"] for m in inbox.to(customer.email or "")
    ]
    r = await sign_in(client, device)
    assert problem(r)["type"].endswith("/passkey-refused")
    # The password still signs in (the last passkey may go).
    password = await client.post(
        "/api/v1/auth/login", json={"login": customer.username, "password": PASSWORD}
    )
    assert password.status_code == 200
    assert [e.success for e in await events(db, "passkey_removed")] == [True]


async def test_malformed_sign_in_input_is_refused_and_spends_nothing(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    _, device = await with_passkey(client, inbox, deliver)
    ceremony = await sign_in_options(client)
    for body in (
        {"ceremony": ceremony["ceremony"], "credential": {"id": "x"}},
        {"ceremony": ceremony["ceremony"]},
        {"ceremony": ceremony["ceremony"], "credential": {}, "extra": 1},
    ):
        r = await client.post("/api/v1/auth/passkeys/login", json=body)
        assert r.status_code == 422, r.text
        assert "credential" in json.dumps(problem(r)) or "extra" in json.dumps(problem(r))
    r = await client.post(
        "/api/v1/auth/passkeys/login",
        json={"ceremony": ceremony["ceremony"], "credential": device.get(ceremony["public_key"])},
    )
    assert r.status_code == 200, r.text


async def test_passkey_sign_ins_count_against_the_address_like_password_ones(
    client: httpx.AsyncClient, app: Any, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """The per-address sign-in limit (30 a minute) counts passkey options and answers too."""
    _, device = await with_passkey(client, inbox, deliver)
    await app.state.rate_limits.reset()
    for _ in range(15):
        assert (await sign_in(client, device)).status_code == 200
    r = await client.post("/api/v1/auth/passkeys/options")
    assert r.status_code == 429
    assert problem(r)["type"].endswith("/too-many-attempts")
    assert int(r.headers["retry-after"]) >= 1


# --- renaming --------------------------------------------------------------------------------


async def test_rename_a_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, _ = await with_passkey(client, inbox, deliver)
    [mine] = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    url = f"/api/v1/me/passkeys/{mine['id']}"
    r = await client.patch(url, json={"name": "Work laptop"}, headers=customer.auth)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Work laptop"
    for bad in ("   ", "x" * 65, "tab\u200bhidden"):
        r = await client.patch(url, json={"name": bad}, headers=customer.auth)
        assert r.status_code == 422, bad
        assert problem(r)["type"].endswith("/validation-error")
        assert "name" in json.dumps(problem(r))
    r = await client.patch(url, json={}, headers=customer.auth)
    assert r.status_code == 422
    r = await client.patch("/api/v1/me/passkeys/not-a-uuid", json={"name": "x"},
                           headers=customer.auth)
    assert r.status_code == 422
    assert [p["name"] for p in (await client.get("/api/v1/me/passkeys", headers=customer.auth)
                                ).json()] == ["Work laptop"]
    assert len(await events(db, "passkey_renamed")) == 1


# --- off, and settings ------------------------------------------------------------------------


async def test_passkeys_are_off_on_a_site_reached_by_ip_address(
    settings: Settings, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    by_address = settings.model_copy(update={"base_url": "http://127.0.0.1:8000"})
    assert by_address.passkey_rp is None
    app = create_app(by_address, db=db, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        customer = await signup(client, inbox, deliver, with_phone=False)
        for r in (
            await client.post("/api/v1/auth/passkeys/options"),
            await add_options(client, customer),
            await client.post("/api/v1/me/passkeys", json={"credential": {}},
                              headers=customer.auth),
        ):
            assert r.status_code == 404
            assert problem(r)["type"].endswith("/passkeys-off")
        assert (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json() == []
    assert await count(db, PasskeyChallenge) == 0


def test_the_relying_party_comes_from_the_base_url_or_a_domain_named() -> None:
    def make(**kw: Any) -> Settings:
        return Settings(_env_file=None, **kw)

    assert make(base_url="https://topup.example.com").passkey_rp == "topup.example.com"
    assert make(base_url="https://topup.example.com").passkey_origin_list == [
        "https://topup.example.com"
    ]
    assert make(base_url="http://localhost:8000").passkey_rp == "localhost"
    assert make(base_url="http://[::1]:8000").passkey_rp is None
    parent = make(base_url="https://topup.example.com", passkey_rp_id="Example.com",
                  passkey_origins="https://topup.example.com, https://m.example.com/path")
    assert parent.passkey_rp == "example.com"
    assert parent.passkey_origin_list == ["https://topup.example.com", "https://m.example.com"]
    with pytest.raises(ValidationError, match="SIMCHARGE_PASSKEY_RP_ID must be a domain"):
        make(base_url="http://127.0.0.1:8000", passkey_rp_id="127.0.0.1")
    with pytest.raises(ValidationError, match=r"origin https://other\.test is not on example\.com"):
        make(base_url="https://other.test", passkey_rp_id="example.com")


# --- the portal's pages and forms -------------------------------------------------------------


async def portal_session(client: httpx.AsyncClient, customer: Customer) -> None:
    """The browser's session cookie for `customer` (the portal's sign-in form)."""
    shown = await client.get("/login")
    r = await client.post("/login", data={
        "csrf": csrf_of(shown.text), "login": customer.username, "password": PASSWORD})
    assert r.status_code == 303, r.text


async def test_the_portal_lists_renames_and_removes_only_its_own_passkeys(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    alice, _ = await with_passkey(client, inbox, deliver)
    [alices] = (await client.get("/api/v1/me/passkeys", headers=alice.auth)).json()
    login = await client.get("/login")
    assert 'id="passkey-login"' in login.text and "/static/portal/passkeys.js" in login.text
    bob = await signup(client, inbox, deliver, with_phone=False)
    await portal_session(client, bob)
    page = await client.get("/account/security")
    assert 'id="passkey-add"' in page.text and "You have no passkey yet." in page.text
    assert "<strong>My phone</strong>" not in page.text
    for action in ("rename", "remove"):
        r = await client.post(
            f"/account/security/passkeys/{alices['id']}/{action}",
            data={"csrf": csrf_of(page.text), "name": "Stolen", "password": PASSWORD},
        )
        assert r.status_code == 404, action
        r = await client.post(f"/account/security/passkeys/{alices['id']}/{action}",
                              data={"csrf": "forged", "name": "Stolen"})
        assert r.status_code == 403, action
    assert [p["name"] for p in (await client.get("/api/v1/me/passkeys", headers=alice.auth)
                                ).json()] == ["My phone"]

    client.cookies.clear()
    await portal_session(client, alice)
    page = await client.get("/account/security")
    assert "<strong>My phone</strong>" in page.text
    url = f"/account/security/passkeys/{alices['id']}"
    r = await client.post(f"{url}/rename", data={"csrf": csrf_of(page.text), "name": ""})
    assert r.status_code == 422
    assert 'aria-invalid="true" aria-describedby="e-pk-' in r.text
    r = await client.post(f"{url}/rename", data={"csrf": csrf_of(page.text), "name": "Tablet"})
    assert r.status_code == 303
    assert r.headers["location"] == "/account/security?done=passkey_renamed"
    r = await client.post(f"{url}/remove", data={"csrf": csrf_of(page.text), "password": PASSWORD})
    assert r.headers["location"] == "/account/security?done=passkey_removed"
    page = await client.get(r.headers["location"])
    assert "The passkey was removed; it can no longer sign in." in page.text
    assert await count(db, Passkey) == 0


async def test_the_portal_offers_no_passkeys_on_a_site_reached_by_ip_address(
    settings: Settings, db: Database
) -> None:
    by_address = settings.model_copy(update={"base_url": "http://127.0.0.1:8000"})
    app = create_app(by_address, db=db, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        login = await client.get("/login")
    assert "passkey" not in login.text.lower()


# --- the holder's data: export and closure ----------------------------------------------------


async def test_the_export_lists_passkeys_and_closing_deletes_them(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    """"Download my data" names the account's passkeys (what the holder knows of them: not the
    public key nor the credential id); closing the account deletes them and their challenges,
    and the authenticator that held one signs in as no one."""
    customer, device = await with_passkey(client, inbox, deliver)
    await add_options(client, customer)  # a challenge left unused
    doc = (await client.get("/api/v1/me/export", headers=customer.auth)).json()
    [listed] = doc["passkeys"]
    assert listed["name"] == "My phone" and listed["synced"] is True
    assert listed["transports"] == ["internal"] and listed["created_at"]
    assert b64(device.credential_id) not in json.dumps(doc)
    r = await client.post(
        "/api/v1/me/close", headers=customer.auth, json={"password": customer.password}
    )
    assert r.status_code == 200, r.text
    assert await count(db, Passkey) == 0
    async with db.read() as s:
        left = await s.scalar(
            select(func.count()).select_from(PasskeyChallenge).where(
                PasskeyChallenge.account_id.is_not(None)
            )
        )
    assert left == 0
    r = await sign_in(client, device)
    assert r.status_code == 401 and problem(r)["type"] == "/problems/passkey-refused"
