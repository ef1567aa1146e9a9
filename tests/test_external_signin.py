"""Sign in with Google, GitHub and Apple, end to end against the local provider
(tests/fake_idp.py) over real HTTP, with the flow state in the real Redis.

The API runs in process (ASGI transport); the "browser" is an httpx client that follows
no redirect by itself, so each hop of the flow is driven and checked here. The sign-in
hook is replaced by one that echoes the identity: what the callback hands on is what
these tests assert.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.errors import Problem, problem_handler
from api.identity import external
from core.settings import OidcProviderSettings, Settings
from domain.identity.providers import (
    ExternalIdentity,
    ExternalSignInError,
    github_endpoints,
    id_token_algorithm,
    identity_from_id_token,
    safe_redirect_after,
    validate_id_token_claims,
)
from tests.fake_idp import FakeIdP, form_post_fields, running_fake_idp

BASE = "http://mgw.test"
TEAM, KEY_ID = "TEAM123456", "KEY1234567"


async def echo_identity(request: Request, identity: ExternalIdentity) -> Response:
    return JSONResponse(
        {**asdict(identity), "redirect_after": request.state.external_redirect_after}
    )


@dataclass
class World:
    idp: FakeIdP
    api: httpx.AsyncClient
    browser: httpx.AsyncClient
    redis: aioredis.Redis

    async def sign_in(self, provider: str, **start: str) -> httpx.Response:
        """start → provider → callback, one hop at a time; the callback's response."""
        auth = await self.begin(provider, **start)
        return await self.back(await self.browser.get(auth))

    async def begin(self, provider: str, **start: str) -> str:
        r = await self.api.get(f"/v1/auth/external/{provider}/start", params=start)
        assert r.status_code == 302, r.text
        return r.headers["location"]

    async def back(self, at_provider: httpx.Response) -> httpx.Response:
        """What the browser does with the provider's answer: follow the redirect, or
        submit Apple's form_post page."""
        if at_provider.status_code == 200:
            action, fields = form_post_fields(at_provider.text)
            return await self.api.post(action, data=fields)
        assert at_provider.status_code == 302, at_provider.text
        location = at_provider.headers["location"]
        assert location.startswith(f"{BASE}/v1/auth/external/")
        return await self.api.get(location)


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with running_fake_idp() as fake:
        yield fake


def _callback(provider: str) -> list[str]:
    return [f"{BASE}/v1/auth/external/{provider}/callback"]


def _apple_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)  # the .p8 file Apple hands out
    return key


@pytest.fixture
async def world(settings: Settings, idp: FakeIdP, tmp_path: Path) -> AsyncIterator[World]:
    key_file = tmp_path / f"AuthKey_{KEY_ID}.p8"
    apple_key = _apple_key(key_file)
    idp.register_client("google-web", "g-secret", redirect_uris=_callback("google"))
    idp.register_client("github-web", "gh-secret", redirect_uris=_callback("github"))
    idp.register_client(
        "com.example.web",
        apple_key=apple_key.public_key(),
        team_id=TEAM,
        key_id=KEY_ID,
        redirect_uris=_callback("apple"),
    )
    providers = (
        OidcProviderSettings("google", idp.issuer, "google-web", "g-secret"),
        OidcProviderSettings("github", idp.issuer, "github-web", "gh-secret"),
        OidcProviderSettings(
            "apple",
            idp.issuer,
            "com.example.web",
            team_id=TEAM,
            key_id=KEY_ID,
            private_key_file=str(key_file),
        ),
    )
    s = replace(settings, identity=replace(settings.identity, public_url=BASE, providers=providers))
    assert s.redis_url
    redis = aioredis.from_url(s.redis_url)
    app = Starlette(routes=external.routes, exception_handlers={Problem: problem_handler})
    app.state.external_client = external.ExternalSignIn(s, redis)
    app.state.external_sign_in = echo_identity
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url=BASE) as api,
            httpx.AsyncClient(timeout=10) as browser,
        ):
            yield World(idp, api, browser, redis)
    finally:
        await redis.aclose()


def _problem(r: httpx.Response, status: int, field: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = r.json()
    assert body["field"] == field, body
    return body


# -- the happy paths -----------------------------------------------------------------------


async def test_google_style_oidc_gives_the_verified_identity(world: World) -> None:
    world.idp.add_user("g-1", "ada@example.com", name="Ada Lovelace")
    world.idp.approve_as("g-1")

    auth = await world.begin("google", redirect_after="/home")
    url = urlsplit(auth)
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{world.idp.issuer}/authorize"
    assert q["response_type"] == "code" and q["client_id"] == "google-web"
    assert q["redirect_uri"] == f"{BASE}/v1/auth/external/google/callback"
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["nonce"] and q["state"] and "openid" in q["scope"].split()
    key = "mgw:ext:state:" + hashlib.sha256(q["state"].encode()).hexdigest()
    assert 0 < await world.redis.ttl(key) <= 600  # the flow's secrets, stored by hash

    r = await world.back(await world.browser.get(auth))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "provider": "google",
        "subject": "g-1",
        "email": "ada@example.com",
        "email_verified": True,
        "name": "Ada Lovelace",
        "redirect_after": "/home",
    }
    assert await world.redis.exists(key) == 0


async def test_es256_id_tokens_verify_too(world: World) -> None:
    world.idp.add_user("g-2", "ec@example.com", email_verified=False)
    world.idp.approve_as("g-2")
    world.idp.id_token_alg = "ES256"
    r = await world.sign_in("google")
    assert r.status_code == 200, r.text
    assert r.json()["email_verified"] is False  # passed on as the provider said


async def test_github_style_gives_the_primary_verified_email(world: World) -> None:
    world.idp.add_user(
        "4242",
        "grace@example.com",
        name="Grace Hopper",
        login="grace",
        other_emails=[("aaa-secondary@example.com", True), ("old@example.com", False)],
    )
    world.idp.approve_as("4242")
    auth = await world.begin("github")
    assert auth.startswith(f"{world.idp.issuer}/login/oauth/authorize?")
    assert "nonce" not in parse_qs(urlsplit(auth).query)
    r = await world.back(await world.browser.get(auth))
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["subject"], got["email"], got["email_verified"]) == (
        "4242",
        "grace@example.com",
        True,
    )
    assert got["provider"] == "github" and got["name"] == "Grace Hopper"


async def test_github_unverified_primary_is_not_verified(world: World) -> None:
    world.idp.add_user("77", "new@example.com", False, other_emails=[("ok@example.com", True)])
    world.idp.approve_as("77")
    r = await world.sign_in("github")
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "new@example.com"
    assert r.json()["email_verified"] is False
    assert r.json()["name"] == "user77"  # no name: the login stands in


async def test_apple_style_form_post_with_the_client_secret_jwt(world: World) -> None:
    world.idp.add_user("001234.abcd", "x7@privaterelay.appleid.com", name="Tim Apple")
    world.idp.approve_as("001234.abcd")
    auth = await world.begin("apple")
    assert parse_qs(urlsplit(auth).query)["response_mode"] == ["form_post"]
    page = await world.browser.get(auth)
    assert page.status_code == 200 and "<form" in page.text  # the browser POSTs it back
    r = await world.back(page)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "provider": "apple",
        "subject": "001234.abcd",
        "email": "x7@privaterelay.appleid.com",
        "email_verified": True,  # Apple says "true"
        "name": "Tim Apple",  # from the form's user field; Apple's token has no name
        "redirect_after": None,
    }


async def test_apple_client_secret_signed_by_another_key_is_refused(world: World) -> None:
    world.idp.clients["com.example.web"].apple_key = ec.generate_private_key(
        ec.SECP256R1()
    ).public_key()
    world.idp.add_user("001", "a@example.com")
    world.idp.approve_as("001")
    body = _problem(await world.sign_in("apple"), 400, "code")
    assert "invalid_client" in str(body["detail"])


# -- state -------------------------------------------------------------------------------


async def test_a_state_is_spent_by_its_first_callback(world: World) -> None:
    world.idp.add_user("g-1", "ada@example.com")
    world.idp.approve_as("g-1")
    at_provider = await world.browser.get(await world.begin("google"))
    callback = at_provider.headers["location"]
    assert (await world.api.get(callback)).status_code == 200
    body = _problem(await world.api.get(callback), 400, "state")
    assert "already used" in str(body["detail"])


async def test_an_unknown_state_is_refused(world: World) -> None:
    r = await world.api.get(
        "/v1/auth/external/google/callback", params={"state": "made-up", "code": "abc"}
    )
    _problem(r, 400, "state")
    r = await world.api.get("/v1/auth/external/google/callback", params={"code": "abc"})
    _problem(r, 400, "state")


async def test_a_state_from_another_provider_is_refused(world: World) -> None:
    world.idp.add_user("g-1", "ada@example.com")
    world.idp.approve_as("g-1")
    at_provider = await world.browser.get(await world.begin("google"))
    q = parse_qs(urlsplit(at_provider.headers["location"]).query)
    r = await world.api.get(
        "/v1/auth/external/github/callback", params={"state": q["state"][0], "code": "x"}
    )
    _problem(r, 400, "state")


async def test_a_callback_without_code_is_refused(world: World) -> None:
    auth = await world.begin("google")
    state = parse_qs(urlsplit(auth).query)["state"][0]
    _problem(
        await world.api.get("/v1/auth/external/google/callback", params={"state": state}),
        400,
        "code",
    )


# -- bad ID tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flaw", "reason"),
    [
        ("wrong_nonce", "nonce"),
        ("wrong_audience", "audience"),
        ("wrong_issuer", "issuer"),
        ("bad_signature", "signature"),
        ("unknown_kid", "key"),
        ("expired", "expired"),
    ],
)
async def test_bad_id_tokens_are_refused(world: World, flaw: str, reason: str) -> None:
    world.idp.add_user("g-1", "ada@example.com")
    world.idp.approve_as("g-1")
    world.idp.spoil_id_tokens(flaw)
    body = _problem(await world.sign_in("google"), 400, "code")
    assert reason in str(body["detail"])


async def test_an_unknown_kid_refetches_the_jwks_once(world: World) -> None:
    world.idp.add_user("g-1", "ada@example.com")
    world.idp.approve_as("g-1")
    assert (await world.sign_in("google")).status_code == 200
    assert (await world.sign_in("google")).status_code == 200
    assert world.idp.jwks_requests == 1  # cached

    world.idp.rotate_keys()  # the provider now signs under a kid the cache lacks
    assert (await world.sign_in("google")).status_code == 200
    assert world.idp.jwks_requests == 2

    world.idp.spoil_id_tokens("unknown_kid")
    _problem(await world.sign_in("google"), 400, "code")
    assert world.idp.jwks_requests == 3  # one refetch, then refused


# -- refusals at the provider and here -----------------------------------------------------


async def test_access_denied_at_the_provider_is_a_400_and_spends_the_state(world: World) -> None:
    world.idp.add_user("g-1", "ada@example.com")
    world.idp.approve_as("g-1")
    world.idp.deny()
    at_provider = await world.browser.get(await world.begin("google"))
    callback = at_provider.headers["location"]
    assert "error=access_denied" in callback
    body = _problem(await world.api.get(callback), 400, "error")
    assert "access_denied" in str(body["detail"])
    state = parse_qs(urlsplit(callback).query)["state"][0]
    r = await world.api.get(
        "/v1/auth/external/google/callback", params={"state": state, "code": "x"}
    )
    _problem(r, 400, "state")


async def test_an_unconfigured_provider_is_a_404_naming_the_configured_ones(
    world: World,
) -> None:
    body = _problem(await world.api.get("/v1/auth/external/facebook/start"), 404, "provider")
    assert "google, github, apple" in str(body["detail"])
    r = await world.api.get("/v1/auth/external/facebook/callback", params={"code": "x"})
    _problem(r, 404, "provider")


async def test_redirect_after_elsewhere_is_refused(world: World) -> None:
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example"):
        r = await world.api.get("/v1/auth/external/google/start", params={"redirect_after": target})
        _problem(r, 400, "redirect_after")
    assert (await world.begin("google", redirect_after=f"{BASE}/after")).startswith("http")


async def test_an_unreachable_provider_is_a_502(settings: Settings) -> None:
    dead = OidcProviderSettings("google", "http://127.0.0.1:9", "c", "s")
    s = replace(settings, identity=replace(settings.identity, providers=(dead,)))
    assert s.redis_url
    redis = aioredis.from_url(s.redis_url)
    app = Starlette(routes=external.routes, exception_handlers={Problem: problem_handler})
    app.state.external_client = external.ExternalSignIn(s, redis)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as api:
            _problem(await api.get("/v1/auth/external/google/start"), 502, "provider")
    finally:
        await redis.aclose()


# -- the pure rules ------------------------------------------------------------------------

NOW = 1_800_000_000.0
GOOD = {
    "iss": "https://accounts.google.com",
    "aud": "cid",
    "sub": "1",
    "iat": NOW,
    "exp": NOW + 600,
    "nonce": "n",
}


def _check(claims: dict[str, object], provider: str = "google") -> None:
    validate_id_token_claims(
        claims,
        provider=provider,
        issuer="https://accounts.google.com",
        client_id="cid",
        nonce="n",
        now=NOW,
    )


def test_google_tokens_may_name_the_issuer_without_scheme() -> None:
    _check(GOOD)
    _check(GOOD | {"iss": "accounts.google.com"})
    with pytest.raises(ExternalSignInError, match="issuer"):
        _check(GOOD | {"iss": "accounts.google.com"}, provider="apple")


def test_claims_rules() -> None:
    _check(GOOD | {"aud": ["cid", "other"], "azp": "cid"})
    for bad in (
        {"aud": ["cid", "other"]},
        {"iat": NOW + 3600},
        {"iat": NOW - 7200},
        {"exp": "soon"},
        {"nonce": None},
        {"sub": ""},
        {"nbf": NOW + 3600},
    ):
        with pytest.raises(ExternalSignInError):
            _check(GOOD | bad)


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", None])
def test_only_rs256_and_es256_reach_a_verifier(alg: str | None) -> None:
    with pytest.raises(ExternalSignInError, match="algorithm"):
        id_token_algorithm({"alg": alg})


def test_apple_email_verified_as_a_string() -> None:
    def ident(v: object) -> ExternalIdentity:
        return identity_from_id_token("apple", {"sub": "s", "email": "a@b.c", "email_verified": v})

    assert ident("true").email_verified and ident(True).email_verified
    assert not ident("false").email_verified and not ident(None).email_verified


def test_safe_redirect_after() -> None:
    assert safe_redirect_after("/x?y=1", BASE) == "/x?y=1"
    assert safe_redirect_after(None, BASE) is None
    with pytest.raises(ExternalSignInError):
        safe_redirect_after(f"{BASE}.evil.example/", BASE)


def test_github_api_base_is_derived_from_the_issuer() -> None:
    real = github_endpoints("https://github.com")
    assert real.api == "https://api.github.com"
    assert real.token == "https://github.com/login/oauth/access_token"
    assert github_endpoints("https://ghe.example/").api == "https://ghe.example/api/v3"
