"""Pure signing and verification functions of every provider: bytes in, bytes or bool out.

No I/O, no clock, no configuration: the adapters load keys once and call these, and the tests
call them alone with keys they generate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import zlib
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from simcharge.payments.providers._common import epoch_seconds

# --- keys --------------------------------------------------------------------------------------


def _pem_text(text: str) -> str:
    """Environment variables often carry PEM with literal `\\n`; restore the line breaks."""
    text = text.strip()
    if "\\n" in text and "\n" not in text:
        text = text.replace("\\n", "\n")
    return text


def _bare_base64(text: str) -> bytes:
    """A key as Alipay's console shows it: base64 DER without PEM armour."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a PEM key nor base64 DER") from exc


def load_rsa_private_key(text: str) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (PKCS#1 or PKCS#8) or bare base64 DER."""
    text = _pem_text(text)
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    else:
        key = serialization.load_der_private_key(_bare_base64(text), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the private key is not an RSA key")
    return key


def load_rsa_public_key(text: str) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM public key, a PEM certificate, or bare base64 DER."""
    text = _pem_text(text)
    key: object
    if "-----BEGIN CERTIFICATE-----" in text:
        key = x509.load_pem_x509_certificate(text.encode("ascii")).public_key()
    elif text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode("ascii"))
    else:
        key = serialization.load_der_public_key(_bare_base64(text))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the public key is not an RSA key")
    return key


def rsa_sha256_sign(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """SHA256withRSA (PKCS#1 v1.5), base64-encoded (standard alphabet)."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256()))


def rsa_sha256_verify(key: rsa.RSAPublicKey, message: bytes, signature_b64: str | bytes) -> bool:
    """Whether `signature_b64` is a valid SHA256withRSA (PKCS#1 v1.5) signature of `message`."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# --- Stripe ------------------------------------------------------------------------------------


def stripe_signature(secret: str, timestamp: int, payload: bytes) -> str:
    """The `v1` signature: hex HMAC-SHA256 of `"{t}.{body}"` keyed with the whole `whsec_…`."""
    signed = str(timestamp).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def parse_stripe_signature_header(header: str) -> tuple[int, list[str]]:
    """`t=…,v1=…,v1=…,v0=…` → (t, every v1). Raises ValueError when there is no t or no v1."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = epoch_seconds(value)
            if timestamp is None:
                raise ValueError("the timestamp is not an integer")
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise ValueError("no timestamp or no v1 signature")
    return timestamp, signatures


def stripe_signature_valid(
    secret: str, timestamp: int, payload: bytes, candidates: list[str]
) -> bool:
    """Whether any candidate `v1` matches (several during a secret roll), in constant time."""
    expected = stripe_signature(secret, timestamp, payload).encode()
    found = False
    for candidate in candidates:
        # As bytes: `compare_digest` refuses a str with non-ASCII characters (a TypeError).
        found |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    return found


# --- PayPal ------------------------------------------------------------------------------------


def paypal_signed_message(
    transmission_id: str, transmission_time: str, webhook_id: str, body: bytes
) -> bytes:
    """`id|time|webhook_id|crc32` with the CRC-32 of the raw body as an unsigned decimal."""
    crc = zlib.crc32(body) & 0xFFFFFFFF
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}".encode()


# --- Alipay ------------------------------------------------------------------------------------


def alipay_request_sign_content(params: Mapping[str, str]) -> bytes:
    """Request parameters minus `sign` and empty values, sorted, `k=v` joined by `&`, unencoded.

    `sign_type` stays in: Alipay signs requests with it and verifies notifications without it.
    """
    items = sorted((k, v) for k, v in params.items() if k != "sign" and v != "")
    return "&".join(f"{k}={v}" for k, v in items).encode("utf-8")


def alipay_notify_sign_content(params: Mapping[str, str], charset: str = "utf-8") -> bytes:
    """Notification parameters minus `sign` and `sign_type`, sorted, empty values kept — in
    the notification's own `charset`, as Alipay signs them (`rsaCheckV1(params, key, charset)`
    verifies `content.getBytes(charset)`)."""
    items = sorted((k, v) for k, v in params.items() if k not in ("sign", "sign_type"))
    return "&".join(f"{k}={v}" for k, v in items).encode(charset)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def json_member_spans(text: str) -> dict[str, tuple[int, int]]:
    """Where each member value of a top-level JSON object starts and ends in `text`.

    Alipay signs the raw text of `<method>_response` as it sent it, so verification needs that
    exact substring, never a re-serialisation. Raises ValueError unless `text` is one object.
    """
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    pos = _skip_space(text, 0)
    if text[pos : pos + 1] != "{":
        raise ValueError("not a JSON object")
    pos = _skip_space(text, pos + 1)
    if text[pos : pos + 1] == "}":
        return spans
    while True:
        try:
            key, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ValueError("bad member name") from exc
        if not isinstance(key, str):
            raise ValueError("member names must be strings")
        pos = _skip_space(text, pos)
        if text[pos : pos + 1] != ":":
            raise ValueError("expected ':'")
        start = _skip_space(text, pos + 1)
        try:
            _, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise ValueError("bad member value") from exc
        if key in spans:
            raise ValueError(f"duplicate member {key!r}")
        spans[key] = (start, end)
        pos = _skip_space(text, end)
        if text[pos : pos + 1] == ",":
            pos = _skip_space(text, pos + 1)
            continue
        if text[pos : pos + 1] == "}" and not text[pos + 1 :].strip():
            return spans
        raise ValueError("expected ',' or '}'")


# --- WeChat Pay --------------------------------------------------------------------------------


def wechatpay_request_message(
    method: str, canonical_url: str, timestamp: int, nonce: str, body: bytes
) -> bytes:
    """`METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n` (BODY empty for a GET)."""
    head = f"{method}\n{canonical_url}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


def wechatpay_response_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """`TIMESTAMP\\nNONCE\\nBODY\\n`, the message WeChat Pay signs on responses and callbacks."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def wechatpay_authorization(
    mchid: str, serial_no: str, nonce: str, timestamp: int, signature_b64: str
) -> str:
    """The `Authorization` header value of a signed request."""
    return (
        f'WECHATPAY2-SHA256-RSA2048 mchid="{mchid}",nonce_str="{nonce}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}",signature="{signature_b64}"'
    )


def aes_256_gcm_decrypt(
    key: bytes, nonce: bytes, associated_data: bytes, ciphertext_b64: str
) -> bytes:
    """Decrypt a WeChat Pay `resource`: base64 ciphertext whose last 16 bytes are the GCM tag.

    Raises ValueError when the key is not 32 bytes or the ciphertext does not authenticate.
    """
    if len(key) != 32:
        raise ValueError("the APIv3 key must be 32 bytes")
    try:
        data = base64.b64decode(ciphertext_b64, validate=True)
        return AESGCM(key).decrypt(nonce, data, associated_data)
    except (binascii.Error, InvalidTag) as exc:
        raise ValueError("the resource does not decrypt") from exc
