"""The pure signing and verification functions, alone."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from simcharge.payments.providers._common import header, parse_china_time, parse_rfc3339, scrub
from simcharge.payments.providers.signing import (
    aes_256_gcm_decrypt,
    alipay_notify_sign_content,
    alipay_request_sign_content,
    json_member_spans,
    load_rsa_private_key,
    load_rsa_public_key,
    parse_stripe_signature_header,
    rsa_sha256_sign,
    rsa_sha256_verify,
    wechatpay_request_message,
    wechatpay_response_message,
)

from .conftest import NOW, private_pem, public_pem


def test_rsa_signatures_verify_with_the_right_key_only(
    merchant_key: rsa.RSAPrivateKey, stranger_key: rsa.RSAPrivateKey
) -> None:
    signature = rsa_sha256_sign(merchant_key, b"message")
    assert len(signature) == 344
    assert rsa_sha256_verify(merchant_key.public_key(), b"message", signature)
    assert not rsa_sha256_verify(merchant_key.public_key(), b"messagE", signature)
    assert not rsa_sha256_verify(stranger_key.public_key(), b"message", signature)
    assert not rsa_sha256_verify(merchant_key.public_key(), b"message", "not base64!")


def test_keys_load_from_every_form_the_providers_hand_out(merchant_key: rsa.RSAPrivateKey) -> None:
    for text in (
        private_pem(merchant_key),
        private_pem(merchant_key, pkcs1=True),
        private_pem(merchant_key).replace("\n", "\\n"),
        "".join(private_pem(merchant_key).splitlines()[1:-1]),
    ):
        assert load_rsa_private_key(text).private_numbers() == merchant_key.private_numbers()
    bare = "".join(public_pem(merchant_key).splitlines()[1:-1])
    for text in (public_pem(merchant_key), bare):
        assert load_rsa_public_key(text).public_numbers() == merchant_key.public_key().public_numbers()
    with pytest.raises(ValueError, match="base64"):
        load_rsa_public_key("nonsense!")


def test_stripe_signature_headers_are_parsed_strictly() -> None:
    assert parse_stripe_signature_header("t=12,v1=ab,v0=cd,v1=ef") == (12, ["ab", "ef"])
    for bad in ("", "v1=ab", "t=12", "t=1.5,v1=ab", "t=12,v0=ab"):
        with pytest.raises(ValueError, match="timestamp"):
            parse_stripe_signature_header(bad)


def test_alipay_sign_contents_differ_in_sign_type_and_empty_values() -> None:
    params = {"b": "2", "sign": "S", "sign_type": "RSA2", "a": "1", "empty": "", "c": "x y"}
    assert alipay_request_sign_content(params) == b"a=1&b=2&c=x y&sign_type=RSA2"
    assert alipay_notify_sign_content(params) == b"a=1&b=2&c=x y&empty="


def test_json_member_spans_give_the_raw_text_of_each_member() -> None:
    text = ' {"a_response" :\n {"x": "\\u4ea4/\\/", "n": [1, {"y": 2}]} , "sign":"S=="}  '
    spans = json_member_spans(text)
    start, end = spans["a_response"]
    assert text[start:end] == '{"x": "\\u4ea4/\\/", "n": [1, {"y": 2}]}'
    assert json.loads(text[slice(*spans["sign"])]) == "S=="
    assert json_member_spans("{}") == {}


@pytest.mark.parametrize(
    "bad", ["", "[]", '{"a": 1,}', '{"a" 1}', '{"a": 1} trailing', '{"a": 1, "a": 2}', "{1: 2}"]
)
def test_json_member_spans_refuse_what_is_not_one_object(bad: str) -> None:
    with pytest.raises(ValueError, match=r"JSON object|member|expected"):
        json_member_spans(bad)


def test_wechat_pay_messages_end_every_line_with_a_newline() -> None:
    assert wechatpay_request_message("GET", "/v3/x?mchid=1", 1554208460, "N", b"") == (
        b"GET\n/v3/x?mchid=1\n1554208460\nN\n\n"
    )
    assert wechatpay_response_message("1554208460", "N", b'{"a":1}') == b'1554208460\nN\n{"a":1}\n'


def test_aes_gcm_decrypts_only_with_the_key_nonce_and_associated_data() -> None:
    key, nonce = b"k" * 32, b"fdasflkja484"
    sealed = base64.b64encode(AESGCM(key).encrypt(nonce, b'{"ok":true}', b"transaction")).decode()
    assert aes_256_gcm_decrypt(key, nonce, b"transaction", sealed) == b'{"ok":true}'
    for args in ((b"x" * 32, nonce, b"transaction"), (key, b"fdasflkja485", b"transaction"),
                 (key, nonce, b"refund")):
        with pytest.raises(ValueError, match="decrypt"):
            aes_256_gcm_decrypt(*args, sealed)
    with pytest.raises(ValueError, match="32"):
        aes_256_gcm_decrypt(b"short", nonce, b"", sealed)
    with pytest.raises(ValueError, match="decrypt"):
        aes_256_gcm_decrypt(key, nonce, b"transaction", "***")


def test_helpers_read_headers_times_and_drop_secrets() -> None:
    assert header({"stripe-signature": "x"}, "Stripe-Signature") == "x"
    assert header({}, "X") is None
    assert parse_rfc3339("2026-11-26T18:00:00+08:00") == NOW
    assert parse_rfc3339("2026-11-26T10:00:00Z") == NOW
    assert parse_rfc3339("2026-11-26T10:00:00") is None
    assert parse_china_time("2026-11-26 18:00:00") == NOW
    assert parse_china_time("26/11/2026") is None
    assert scrub({"a": [{"client_secret": "s", "b": 1}], "access_token": "t"}) == {"a": [{"b": 1}]}
