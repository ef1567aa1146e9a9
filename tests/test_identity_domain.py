"""The pure identity building blocks (domain/identity) and the key store (core/keys.py).

No services: everything here runs in-process. Argon2 uses tiny parameters except where
the parameters themselves are under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path

import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization

from core.keys import KeyStore, server_secret
from domain.identity import device, opaque, pkce, ratings, roles, sealing, totp
from domain.identity.passwords import (
    Argon2Params,
    PasswordRejected,
    Passwords,
    calibrate,
    check_password,
    common_passwords,
    normalize_password,
)
from domain.identity.tokens import (
    AccessClaims,
    AccessTokenVerifier,
    InvalidToken,
    KeySet,
    issue_access_token,
    issue_id_token,
    jwks,
    load_private_pem,
    new_signing_key,
    private_pem,
)

FAST = Argon2Params(time_cost=1, memory_kib=1024, parallelism=1)

# --- passwords ------------------------------------------------------------------------


def test_argon2id_round_trip() -> None:
    pw = Passwords(FAST)
    phc = pw.hash("correct horse battery staple")
    assert phc.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert pw.verify(phc, "correct horse battery staple")
    assert not pw.verify(phc, "correct horse battery stapler")
    assert pw.hash("same password!") != pw.hash("same password!")  # salted


def test_verify_never_raises_on_broken_hashes() -> None:
    pw = Passwords(FAST)
    for broken in ("", "not a hash", "$argon2id$v=19$m=1024,t=1,p=1$garbage", "$2b$12$abc"):
        assert pw.verify(broken, "whatever password") is False
    phc = pw.hash("a long enough password")
    assert pw.verify(phc, "x" * 5000) is False  # oversize input refused without hashing


def test_needs_rehash_when_parameters_change() -> None:
    old = Passwords(FAST)
    phc = old.hash("correct horse battery staple")
    assert not old.needs_rehash(phc)
    stronger = Passwords(Argon2Params(time_cost=2, memory_kib=2048, parallelism=1))
    assert stronger.needs_rehash(phc)
    assert stronger.verify(phc, "correct horse battery staple")  # old hashes still verify
    assert stronger.needs_rehash("not a hash")


def test_unicode_forms_hash_the_same() -> None:
    pw = Passwords(FAST)
    composed = "caf\u00e9 au lait 2024"  # é as one code point
    decomposed = "cafe\u0301 au lait 2024"  # e + combining acute accent
    phc = pw.hash(composed)
    assert pw.verify(phc, decomposed)
    assert normalize_password("\uff21\uff11") == "A1"  # full-width letters and digits
    assert pw.verify(pw.hash("ＡＢＣＤ１２３４５６７８"), "ABCD12345678")


def test_dummy_verify_runs_a_real_verification() -> None:
    pw = Passwords(Argon2Params(time_cost=2, memory_kib=2048, parallelism=1))
    pw.dummy_verify("unknown user pw")
    # the fixed hash is a real argon2id hash with the same parameters, so the
    # verification behind it costs what a wrong password costs (timing is not asserted:
    # it would be flaky on a loaded machine)
    dummy = pw._dummy_hash
    assert dummy is not None and dummy.startswith("$argon2id$v=19$m=2048,t=2,p=1$")
    assert not pw.needs_rehash(dummy)
    pw.dummy_verify("another unknown user")
    assert pw._dummy_hash == dummy  # made once


def test_calibrate_keeps_time_cost_and_whole_mebibytes() -> None:
    params = calibrate(target_ms=1.0)
    assert params == Argon2Params(time_cost=2, memory_kib=19456, parallelism=1)
    assert params.memory_kib % 1024 == 0
    roomy = calibrate(target_ms=400.0)  # more time buys more memory or more passes
    assert roomy.memory_kib % 1024 == 0 and roomy.time_cost >= 2
    assert (roomy.memory_kib, roomy.time_cost) > (19456, 2)


def test_password_length_bounds() -> None:
    check_password("a" * 3 + "Zq9!" + "b" * 5)  # 12 characters
    with pytest.raises(PasswordRejected, match="at least 12") as exc:
        check_password("Zq9!xv2#Lm4")  # 11
    assert exc.value.field == "password"
    assert isinstance(exc.value, ValueError)
    check_password("Zq9!" * 32)  # 128
    with pytest.raises(PasswordRejected, match="at most 128"):
        check_password("Zq9!" * 32 + "x")


def test_password_length_counts_characters_after_nfkc() -> None:
    # 12 decomposed characters (e + combining accent) are 12 characters after NFKC, not 24
    check_password("e\u0301" * 6 + "Zq9!xv")
    with pytest.raises(PasswordRejected):
        check_password("e\u0301" * 5 + "Zq9!xv")  # 11 after composition
    # U+FB03 (the "ffi" ligature) is three characters after NFKC
    check_password("\ufb03" * 4)


def test_common_password_rejected_case_insensitively() -> None:
    assert "qwerty123456" in common_passwords()
    assert len(common_passwords()) > 19_000
    with pytest.raises(PasswordRejected, match="common passwords"):
        check_password("qwerty123456")
    with pytest.raises(PasswordRejected, match="common passwords"):
        check_password("QWERTY123456")
    with pytest.raises(PasswordRejected, match="common passwords"):
        check_password("1q2w3e4r5t6y")
    check_password("qwerty123456 but longer")  # not on the list


def test_password_may_not_contain_email_name_or_display_name() -> None:
    with pytest.raises(PasswordRejected, match="email name"):
        check_password("marguerite2024!", email="Marguerite@example.com")
    with pytest.raises(PasswordRejected):
        check_password("jeanluc", email="jeanluc+tv@example.com", display_name=None)
    with pytest.raises(PasswordRejected):
        check_password("xx-jeanluc-xx-9", email="jeanluc+tv@example.com")
    with pytest.raises(PasswordRejected, match="display name"):
        check_password("I am Ada Lovelace!", display_name="Ada Lovelace")
    with pytest.raises(PasswordRejected):
        check_password("adalovelace1815", display_name="Ada  Lovelace")
    # short local parts (under 4 characters) are too common to forbid
    check_password("bob sells fish 99", email="bob@example.com")
    check_password("totally unrelated 77", email="marguerite@example.com", display_name="Ada")


# --- TOTP -----------------------------------------------------------------------------

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_700_000_015.0  # mid-step


def _code(step: int) -> str:
    return pyotp.TOTP(SECRET).generate_otp(step)


def test_totp_secret_and_uri() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32 and len(base64.b32decode(secret)) == 20  # 160 bits
    uri = totp.provisioning_uri(secret, "ada@example.com")
    assert uri.startswith("otpauth://totp/Media%20Gateway:ada%40example.com?")
    assert f"secret={secret}" in uri and "issuer=Media%20Gateway" in uri
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg


def test_totp_accepts_current_and_adjacent_steps() -> None:
    step = totp.current_step(NOW)
    assert step == int(NOW // 30)
    for offset in (-1, 0, 1):
        matched = totp.verify_code(SECRET, _code(step + offset), now=NOW, last_step=None)
        assert matched == step + offset


def test_totp_rejects_two_steps_away_and_malformed_codes() -> None:
    step = totp.current_step(NOW)
    for offset in (-2, 2):
        assert totp.verify_code(SECRET, _code(step + offset), now=NOW, last_step=None) is None
    good = _code(step)
    for bad in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦", good + "0"):
        assert totp.verify_code(SECRET, bad, now=NOW, last_step=None) is None
    spaced = f"{good[:3]} {good[3:]}"
    assert totp.verify_code(SECRET, spaced, now=NOW, last_step=None) == step


def test_totp_code_is_accepted_once_per_step() -> None:
    step = totp.current_step(NOW)
    assert totp.verify_code(SECRET, _code(step), now=NOW, last_step=None) == step
    assert totp.verify_code(SECRET, _code(step), now=NOW, last_step=step) is None
    assert totp.verify_code(SECRET, _code(step - 1), now=NOW, last_step=step) is None
    assert totp.verify_code(SECRET, _code(step + 1), now=NOW, last_step=step) == step + 1


def test_backup_codes_format_and_normalize() -> None:
    codes = totp.new_backup_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        assert len(code) == 11 and code[5] == "-"
        assert all(ch in totp.BACKUP_ALPHABET for ch in code.replace("-", ""))
        assert totp.normalize_backup_code(code) == code
    assert not set("0o1li") & set(totp.BACKUP_ALPHABET)
    assert totp.normalize_backup_code(" K7VQ2 9MXR4 ") == "k7vq2-9mxr4"
    assert totp.normalize_backup_code("k7vq29mxr4") == "k7vq2-9mxr4"
    assert totp.normalize_backup_code("k7-vq-29-mx-r4") == "k7vq2-9mxr4"
    for bad in ("", "k7vq2-9mxr", "k7vq2-9mxr44", "k0vq2-9mxr4", "k7vq2_9mxr4", "x" * 100):
        assert totp.normalize_backup_code(bad) is None
    assert len(totp.new_backup_codes(3)) == 3


# --- opaque tokens and API keys -------------------------------------------------------


def test_tokens_and_hashes() -> None:
    token = opaque.new_token()
    assert len(token) == 43 and token != opaque.new_token()
    assert len(opaque.new_token(16)) == 22
    assert opaque.token_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    expected = hmac.new(b"k" * 32, b"code", hashlib.sha256).hexdigest()
    assert opaque.keyed_hash(b"k" * 32, "code") == expected
    assert opaque.keyed_hash(b"j" * 32, "code") != expected
    assert opaque.same("abc", "abc") and not opaque.same("abc", "abd")
    assert opaque.same("é", "é") and not opaque.same("é", "e")


def test_api_key_round_trip() -> None:
    key = opaque.new_api_key()
    assert key.full == f"mgw_{key.prefix}_{key.secret}"
    assert len(key.prefix) == 8 and key.prefix.isalnum() and key.prefix.islower()
    assert len(key.secret) >= 32 and key.secret.isalnum() and key.secret.isascii()
    assert opaque.parse_api_key(key.full) == (key.prefix, key.secret)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "mgw_",
        "mgw_abcd1234_",
        "mgw_abcd1234_" + "A" * 31,  # secret too short
        "mgw_abcd1234_" + "A" * 65,  # secret too long
        "mgw_ABCD1234_" + "A" * 32,  # prefix upper case
        "mgw_abc1234_" + "A" * 32,  # prefix too short
        "mgw_abcd1234_" + "A" * 31 + "_",  # underscore in secret
        "mgw_abcd1234_" + "A" * 31 + "é",  # non-ASCII
        "mgw_abcd1234_" + "A" * 32 + "\n",  # trailing newline
        " mgw_abcd1234_" + "A" * 32,
        "mgx_abcd1234_" + "A" * 32,
        "mgw_abcd1234-" + "A" * 32,
        "mgw_abcd1234_" + "A" * 10_000,  # oversize
    ],
)
def test_parse_api_key_rejects_malformed(value: str) -> None:
    assert opaque.parse_api_key(value) is None


# --- sealing --------------------------------------------------------------------------

KEY = bytes(range(32))


def test_seal_round_trip_and_randomized() -> None:
    sealed = sealing.seal(KEY, "JBSWY3DPEHPK3PXP", aad="totp:user-1")
    assert sealed.startswith("v1.") and "=" not in sealed
    assert sealing.unseal(KEY, sealed, aad="totp:user-1") == "JBSWY3DPEHPK3PXP"
    assert sealing.seal(KEY, "JBSWY3DPEHPK3PXP", aad="totp:user-1") != sealed


def test_unseal_detects_tampering_wrong_key_and_wrong_aad() -> None:
    sealed = sealing.seal(KEY, "secret", aad="totp:user-1")
    with pytest.raises(sealing.SealError):
        sealing.unseal(bytes(32), sealed, aad="totp:user-1")
    with pytest.raises(sealing.SealError):
        sealing.unseal(KEY, sealed, aad="totp:user-2")
    body = bytearray(base64.urlsafe_b64decode(sealed[3:] + "=" * (-len(sealed[3:]) % 4)))
    for index in (0, 12, len(body) - 1):  # nonce, ciphertext, tag
        tampered = bytearray(body)
        tampered[index] ^= 1
        text = "v1." + base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
        with pytest.raises(sealing.SealError):
            sealing.unseal(KEY, text, aad="totp:user-1")
    for broken in ("v2." + sealed[3:], sealed[3:], "v1.", "v1.AAAA", "v1.***", "v1." + "A" * 20):
        with pytest.raises(sealing.SealError):
            sealing.unseal(KEY, broken, aad="totp:user-1")
    with pytest.raises(ValueError):
        sealing.seal(b"short", "x", aad="a")


def test_derive_key_separates_purposes() -> None:
    secret = os.urandom(32)
    a = sealing.derive_key(secret, "totp-seal")
    assert len(a) == 32
    assert a == sealing.derive_key(secret, "totp-seal")
    assert a != sealing.derive_key(secret, "backup-codes")
    assert a != sealing.derive_key(os.urandom(32), "totp-seal")
    with pytest.raises(ValueError):
        sealing.derive_key(b"tiny", "x")


# --- JWT ------------------------------------------------------------------------------

ISS = "https://id.example.test"
AUD = "mgw-api"
T0 = 1_700_000_000


def _access(keyset: KeySet, *, now: int = T0, ttl_s: int = 900, **overrides: object) -> str:
    args: dict[str, object] = {
        "issuer": ISS,
        "audience": AUD,
        "subject": "user-1",
        "session_id": "sess-1",
        "scope": ["profile", "search"],
        "client_id": "web",
        "roles": ["user"],
        "amr": ["pwd", "otp"],
        "ttl_s": ttl_s,
        "now": now,
    } | overrides
    return issue_access_token(keyset, **args)  # type: ignore[arg-type]


def _b64json(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _reason(verifier: AccessTokenVerifier, token: object, now: int = T0) -> str:
    with pytest.raises(InvalidToken) as exc:
        verifier.verify(token, now=now)  # type: ignore[arg-type]
    return exc.value.reason


@pytest.fixture(scope="module")
def keyset() -> KeySet:
    return KeySet.of(new_signing_key())


def _verifier(keyset: KeySet, **kw: object) -> AccessTokenVerifier:
    return AccessTokenVerifier(keyset, issuer=ISS, audience=AUD, **kw)  # type: ignore[arg-type]


def test_access_token_round_trip(keyset: KeySet) -> None:
    token = _access(keyset)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": keyset.active.kid, "typ": "at+jwt"}
    claims = _verifier(keyset).verify(token, now=T0 + 10)
    assert claims == AccessClaims(
        subject="user-1",
        session_id="sess-1",
        scope=frozenset({"profile", "search"}),
        client_id="web",
        roles=("user",),
        amr=("pwd", "otp"),
        issued_at=T0,
        expires_at=T0 + 900,
        jti=claims.jti,
    )
    assert len(claims.jti) >= 16
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["scope"] == "profile search" and payload["nbf"] == T0
    assert payload["jti"] != jwt.decode(_access(keyset), options={"verify_signature": False})["jti"]


def test_access_token_time_checks(keyset: KeySet) -> None:
    token = _access(keyset, ttl_s=900)
    verifier = _verifier(keyset, leeway_s=30, cache_size=0)
    verifier.verify(token, now=T0 + 929)  # inside the leeway
    assert _reason(verifier, token, now=T0 + 930) == "expired"
    assert _reason(verifier, token, now=T0 - 31) == "not yet valid"
    verifier.verify(token, now=T0 - 30)


def test_wrong_issuer_and_audience(keyset: KeySet) -> None:
    verifier = _verifier(keyset)
    assert _reason(verifier, _access(keyset, issuer="https://evil.test")) == "wrong issuer"
    assert _reason(verifier, _access(keyset, audience="other-api")) == "wrong audience"


def test_alg_none_is_rejected(keyset: KeySet) -> None:
    claims = jwt.decode(_access(keyset), options={"verify_signature": False})
    verifier = _verifier(keyset)
    for header in (
        {"alg": "none", "typ": "at+jwt", "kid": keyset.active.kid},
        {"alg": "None", "typ": "at+jwt", "kid": keyset.active.kid},
        {"alg": "none"},
    ):
        for signature in ("", "AAAA"):
            token = f"{_b64json(header)}.{_b64json(claims)}.{signature}"
            assert _reason(verifier, token) in {"unsupported alg", "malformed"}


def test_hs256_with_the_public_key_as_secret_is_rejected(keyset: KeySet) -> None:
    """Algorithm confusion: a verifier that trusted the header's alg would check an HMAC
    keyed with the (public) PEM and accept a forged token."""
    claims = jwt.decode(_access(keyset), options={"verify_signature": False})
    claims["roles"] = ["admin"]
    public_pem = keyset.verifying[keyset.active.kid].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64json({"alg": "HS256", "typ": "at+jwt", "kid": keyset.active.kid})
    signing_input = f"{header}.{_b64json(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert _reason(_verifier(keyset), token) == "unsupported alg"


def test_unknown_or_missing_kid(keyset: KeySet) -> None:
    stranger = KeySet.of(new_signing_key())
    verifier = _verifier(keyset)
    assert _reason(verifier, _access(stranger)) == "unknown kid"
    # a stranger's key under our kid is a bad signature
    impostor = KeySet.of(new_signing_key(keyset.active.kid))
    assert _reason(verifier, _access(impostor)) == "bad signature"
    header, payload, signature = _access(keyset).split(".")
    no_kid = _b64json({"alg": "ES256", "typ": "at+jwt"})
    assert _reason(verifier, f"{no_kid}.{payload}.{signature}") == "missing kid"


def test_tampered_payload_is_a_bad_signature(keyset: KeySet) -> None:
    header, payload, signature = _access(keyset).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    verifier = _verifier(keyset)
    assert _reason(verifier, f"{header}.{_b64json(claims)}.{signature}") == "bad signature"
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert _reason(verifier, f"{header}.{payload}.{flipped}") in {"bad signature", "malformed"}


def test_id_token_is_not_an_access_token(keyset: KeySet) -> None:
    id_token = issue_id_token(
        keyset,
        issuer=ISS,
        audience=AUD,  # even for a client named like the API
        subject="user-1",
        nonce="n-0S6_WzA2Mj",
        email="ada@example.com",
        email_verified=True,
        auth_time=T0 - 5,
        amr=["pwd"],
        ttl_s=300,
        now=T0,
    )
    claims = jwt.decode(
        id_token,
        keyset.verifying[keyset.active.kid],
        algorithms=["ES256"],
        audience=AUD,
        issuer=ISS,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["email_verified"] is True
    assert claims["auth_time"] == T0 - 5 and claims["exp"] == T0 + 300
    assert _reason(_verifier(keyset), id_token) == "not an access token"


def _signed(keyset: KeySet, claims: dict[str, object]) -> str:
    key = keyset.active
    headers = {"kid": key.kid, "typ": "at+jwt"}
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers=headers)


def test_missing_or_mistyped_claims(keyset: KeySet) -> None:
    full = jwt.decode(_access(keyset), options={"verify_signature": False})
    verifier = _verifier(keyset, cache_size=0)
    for name in ("sub", "sid", "scope", "client_id", "roles", "amr", "exp", "nbf", "jti"):
        partial = {k: v for k, v in full.items() if k != name}
        assert _reason(verifier, _signed(keyset, partial)) == "missing claims"
    for name, value in (("exp", "never"), ("exp", True), ("roles", "admin"), ("sub", 7)):
        assert _reason(verifier, _signed(keyset, full | {name: value})) == "malformed"
    assert _reason(verifier, _signed(keyset, full | {"aud": ["x", "y"]})) == "wrong audience"
    assert _reason(verifier, _signed(keyset, full | {"aud": 5})) == "wrong audience"
    verifier.verify(_signed(keyset, full | {"aud": ["x", AUD]}), now=T0)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "..",
        "eyJhbGciOiJFUzI1NiJ9..",
        "!!!.###.$$$",
        "€.€.€",
        _b64json([1, 2]) + ".e30.AAAA",
        _b64json("x") + ".e30.AAAA",
        _b64json({"alg": "ES256", "typ": "at+jwt", "kid": 5}) + ".e30.AAAA",
        _b64json({"alg": "ES256", "typ": "at+jwt", "kid": "k", "crit": ["exp"]}) + ".e30.AAAA",
        "x" * 4097,
        None,
        b"bytes.are.not.str",
    ],
)
def test_garbage_is_invalid_token(keyset: KeySet, garbage: object) -> None:
    assert _reason(_verifier(keyset), garbage)


def test_garbage_payload_under_a_good_signature_is_invalid(keyset: KeySet) -> None:
    key = keyset.active
    for payload in (b"not json", b"[1,2]", b"\xff\xfe"):
        token = jwt.api_jws.encode(
            payload, key.private_key, algorithm="ES256", headers={"kid": key.kid, "typ": "at+jwt"}
        )
        assert _reason(_verifier(keyset), token) == "malformed"


def test_oversize_token_is_rejected(keyset: KeySet) -> None:
    token = _access(keyset, scope=["profile"] + [f"x{i}" for i in range(800)])
    assert len(token) > 4096
    assert _reason(_verifier(keyset), token) == "too large"


def test_rotated_keyset_still_verifies_old_tokens() -> None:
    old = new_signing_key("k-old")
    before = KeySet.of(old)
    old_token = _access(before)
    new = new_signing_key("k-new")
    after = KeySet.of(new, [old])
    assert set(after.verifying) == {"k-old", "k-new"}
    verifier = _verifier(after)
    assert verifier.verify(old_token, now=T0).subject == "user-1"
    new_token = _access(after)
    assert jwt.get_unverified_header(new_token)["kid"] == "k-new"
    assert verifier.verify(new_token, now=T0).subject == "user-1"
    assert _reason(_verifier(before), new_token) == "unknown kid"


def test_keyset_always_verifies_with_its_active_key() -> None:
    key = new_signing_key("only")
    assert set(KeySet(key, {}).verifying) == {"only"}


def test_verifier_cache_returns_same_claims_and_still_expires(keyset: KeySet) -> None:
    token = _access(keyset, ttl_s=60)
    verifier = _verifier(keyset, leeway_s=0)
    first = verifier.verify(token, now=T0)
    assert verifier.verify(token, now=T0 + 1) is first
    assert _reason(verifier, token, now=T0 + 60) == "expired"
    assert _reason(verifier, token, now=T0 + 61) == "expired"


def test_verifier_cache_is_bounded_lru(keyset: KeySet) -> None:
    verifier = _verifier(keyset, cache_size=2)
    a, b, c = (_access(keyset, subject=s) for s in "abc")
    claims_a = verifier.verify(a, now=T0)
    verifier.verify(b, now=T0)
    assert verifier.verify(a, now=T0) is claims_a  # a is now the most recent
    verifier.verify(c, now=T0)  # evicts b
    assert len(verifier._cache) == 2
    assert verifier.verify(a, now=T0) is claims_a
    assert verifier.verify(b, now=T0) is not None  # re-verified, not an error


def test_retired_key_ends_cached_tokens() -> None:
    old, new = new_signing_key("r-old"), new_signing_key("r-new")
    current = {"keys": KeySet.of(new, [old])}
    verifier = AccessTokenVerifier(lambda: current["keys"], issuer=ISS, audience=AUD)
    token = _access(KeySet.of(old))
    verifier.verify(token, now=T0)
    current["keys"] = KeySet.of(new)
    assert _reason(verifier, token) == "unknown kid"


def test_verifier_default_clock(keyset: KeySet) -> None:
    token = _access(keyset, now=int(time.time()))
    assert _verifier(keyset).verify(token).subject == "user-1"


def test_jwks_publishes_every_verifying_key() -> None:
    old, new = new_signing_key("j-old"), new_signing_key("j-new")
    document = jwks(KeySet.of(new, [old]))
    assert [k["kid"] for k in document["keys"]] == ["j-new", "j-old"]
    for entry in document["keys"]:
        assert {k: entry[k] for k in ("kty", "crv", "use", "alg")} == {
            "kty": "EC",
            "crv": "P-256",
            "use": "sig",
            "alg": "ES256",
        }
        assert "d" not in entry
    # a standard client can verify our token with the published key
    token = _access(KeySet.of(new))
    public = jwt.PyJWK(document["keys"][0]).key
    claims = jwt.decode(
        token, public, algorithms=["ES256"], audience=AUD, options={"verify_exp": False}
    )
    assert claims["sub"] == "user-1"


def test_private_pem_round_trip() -> None:
    key = new_signing_key()
    assert key.kid[:8].isdigit() and "-" in key.kid
    loaded = load_private_pem(key.kid, private_pem(key))
    assert loaded.kid == key.kid
    assert loaded.private_key.private_numbers() == key.private_key.private_numbers()
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="P-256"):
        load_private_pem("k", p384)


# --- PKCE and device codes ------------------------------------------------------------

RFC7636_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC7636_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_pkce_rfc7636_appendix_b() -> None:
    assert pkce.valid_verifier(RFC7636_VERIFIER)
    assert pkce.valid_challenge(RFC7636_CHALLENGE)
    assert pkce.challenge_s256(RFC7636_VERIFIER) == RFC7636_CHALLENGE
    assert pkce.verify_s256(RFC7636_VERIFIER, RFC7636_CHALLENGE)
    assert not pkce.verify_s256(RFC7636_VERIFIER[:-1] + "Y", RFC7636_CHALLENGE)
    assert not pkce.verify_s256(RFC7636_VERIFIER, RFC7636_CHALLENGE[:-1] + "d")


def test_pkce_verifier_and_challenge_syntax() -> None:
    assert pkce.valid_verifier("a" * 43) and pkce.valid_verifier("A-._~9" * 21 + "xy")
    for bad in ("a" * 42, "a" * 129, "a" * 42 + "+", "a" * 42 + "/", "a" * 42 + "é", ""):
        assert not pkce.valid_verifier(bad)
        assert not pkce.verify_s256(bad, pkce.challenge_s256("a" * 43))
    assert not pkce.valid_challenge(RFC7636_CHALLENGE + "=")
    assert not pkce.valid_challenge(RFC7636_CHALLENGE[:-1])
    assert not pkce.valid_challenge(RFC7636_CHALLENGE[:-1] + "+")
    assert not pkce.verify_s256(RFC7636_VERIFIER, "é" * 43)


def test_device_user_codes() -> None:
    code = device.new_user_code()
    assert len(code) == 8 and set(code) <= set("BCDFGHJKLMNPQRSTVWXZ")
    assert device.format_user_code("WDJBMJHT") == "WDJB-MJHT"
    assert device.normalize_user_code("wdjb-mjht") == "WDJBMJHT"
    assert device.normalize_user_code(" WDJB MJHT ") == "WDJBMJHT"
    assert device.normalize_user_code(device.format_user_code(code)) == code
    for bad in ("", "WDJB-MJH", "WDJB-MJHTX", "WDJA-MJHT", "WDJB-MJH1", "W" * 100):
        assert device.normalize_user_code(bad) is None


# --- roles and ratings ----------------------------------------------------------------


def test_roles_nest_and_map_to_scopes() -> None:
    user, support, admin = (roles.ROLE_SCOPES[r] for r in ("user", "support", "admin"))
    assert user == {"profile", "playback", "library", "search"}
    assert user < support < admin == roles.ALL_SCOPES
    assert support - user == {"users:read", "audit:read", "analytics:read", "moderation:read"}
    writes = {"users:write", "catalog:write", "ranking:write", "ratelimits:write",
              "experiments:write", "moderation:write"}  # fmt: skip
    assert writes <= admin and not writes & support
    assert roles.scopes_for(["user"]) == user
    assert roles.scopes_for(["user", "support"]) == support
    assert roles.scopes_for([]) == frozenset()
    assert roles.scopes_for(["superuser"]) == frozenset()  # unknown roles grant nothing
    assert roles.valid_role("admin") and not roles.valid_role("root")


def test_parse_scopes() -> None:
    assert roles.parse_scopes("profile  search") == {"profile", "search"}
    assert roles.parse_scopes("") == frozenset()
    with pytest.raises(ValueError, match="unknown scope.*'?admin:all'?"):
        roles.parse_scopes("profile admin:all")


def test_rating_ladder() -> None:
    assert ratings.RATINGS[0] == "TV-Y" and ratings.RATINGS[-1] == "NC-17"
    assert len(ratings.RATINGS) == 11
    expected = {
        "TV-Y": 0,
        "TV-Y7": 1,
        "G": 2,
        "TV-G": 2,
        "PG": 3,
        "TV-PG": 3,
        "PG-13": 4,
        "TV-14": 4,
        "R": 5,
        "TV-MA": 5,
        "NC-17": 6,
    }
    assert {r: ratings.level(r) for r in ratings.RATINGS} == expected
    with pytest.raises(ValueError, match="unknown rating"):
        ratings.level("X")


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("pg13", "PG-13"),
        ("PG-13", "PG-13"),
        (" pg 13 ", "PG-13"),
        ("tv-ma", "TV-MA"),
        ("TV MA", "TV-MA"),
        ("tvy7", "TV-Y7"),
        ("TV-Y7-FV", "TV-Y7"),
        ("nc-17", "NC-17"),
        ("g", "G"),
        ("Unrated", None),
        ("NR", None),
        ("", None),
        (None, None),
        ("X" * 100, None),
    ],
)
def test_normalize_rating(raw: str | None, canonical: str | None) -> None:
    assert ratings.normalize_rating(raw) == canonical


def test_allowed_across_scales() -> None:
    assert ratings.allowed("R", None)
    assert ratings.allowed("TV-14", "PG-13") and ratings.allowed("PG-13", "TV-14")
    assert ratings.allowed("pg", "tv-pg")
    assert not ratings.allowed("TV-MA", "PG-13")
    assert not ratings.allowed("R", "TV-14")
    assert ratings.allowed("TV-Y", "TV-Y") and not ratings.allowed("TV-Y7", "TV-Y")
    with pytest.raises(ValueError):
        ratings.allowed("G", "X-RATED")
    with pytest.raises(ValueError):
        ratings.allowed("G", "PG", unrated_as="sometimes")


def test_allowed_unrated_content() -> None:
    for unrated in (None, "Not Rated", ""):
        assert ratings.allowed(unrated, None)
        assert not ratings.allowed(unrated, "R")
        assert ratings.allowed(unrated, "NC-17")
        assert ratings.allowed(unrated, "TV-Y", unrated_as="allowed")


def test_ratings_at_or_below() -> None:
    assert ratings.ratings_at_or_below("PG") == ["TV-Y", "TV-Y7", "G", "TV-G", "PG", "TV-PG"]
    assert ratings.ratings_at_or_below("tv-y") == ["TV-Y"]
    assert ratings.ratings_at_or_below("NC-17") == list(ratings.RATINGS)
    assert set(ratings.ratings_at_or_below("TV-14")) == set(ratings.ratings_at_or_below("PG-13"))


# --- key store ------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keystore_creates_then_loads(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    first = store.load_or_create()
    files = list((tmp_path / "keys" / "signing").glob("*.pem"))
    assert [f.stem for f in files] == [first.active.kid]
    assert _mode(files[0]) == 0o600
    assert _mode(tmp_path / "keys") == 0o700 and _mode(tmp_path / "keys" / "signing") == 0o700
    again = KeyStore(tmp_path / "keys").load_or_create()
    assert again.active.kid == first.active.kid
    assert set(again.verifying) == {first.active.kid}
    token = _access(first)
    assert _verifier(again).verify(token, now=T0).subject == "user-1"


def test_keystore_rotate_and_retire(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    k1 = store.load_or_create().active
    k2 = store.rotate()
    k3 = store.rotate()
    keys = store.load_or_create()
    assert keys.active.kid == k3.kid
    assert set(keys.verifying) == {k1.kid, k2.kid, k3.kid}
    old_token = _access(KeySet.of(k1))
    assert _verifier(keys).verify(old_token, now=T0)
    assert store.retire(keep=2) == [k1.kid]
    keys = store.load_or_create()
    assert keys.active.kid == k3.kid and set(keys.verifying) == {k2.kid, k3.kid}
    assert store.retire(keep=2) == []
    with pytest.raises(ValueError):
        store.retire(keep=0)


def test_keystore_active_key_is_newest_by_mtime(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.load_or_create()
    rotated = store.rotate()
    # make every existing file look newer than the rotated one, then rotate again
    for path in (tmp_path / "signing").glob("*.pem"):
        os.utime(path, ns=(2_000_000_000 * 10**9, 2_000_000_000 * 10**9))
    newest = store.rotate()
    assert store.load_or_create().active.kid == newest.kid != rotated.kid
    assert not list((tmp_path / "signing").glob(".*tmp"))


def test_server_secret_from_file(tmp_path: Path) -> None:
    secret = server_secret(tmp_path / "keys", None)
    assert len(secret) == 32
    assert _mode(tmp_path / "keys" / "secret.key") == 0o600
    assert server_secret(tmp_path / "keys", None) == secret
    assert server_secret(tmp_path / "keys", "") == secret


def test_server_secret_configured(tmp_path: Path) -> None:
    raw = os.urandom(32)
    assert server_secret(tmp_path, base64.b64encode(raw).decode()) == raw
    assert server_secret(tmp_path, base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert not (tmp_path / "secret.key").exists()
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        server_secret(tmp_path, base64.b64encode(os.urandom(16)).decode())
    with pytest.raises(ValueError, match="base64"):
        server_secret(tmp_path, "not base64 at all!")
