"""A small identity provider on loopback that speaks the real protocols.

One server plays every provider the API signs in with:

- OpenID Connect (Google, Apple): ``/.well-known/openid-configuration``, ``/jwks`` (an
  RS256 and an ES256 key), ``/authorize``, ``/token``, ``/userinfo``. Authorization code
  with PKCE S256 only; codes are single-use and bound to client, redirect URI and
  challenge. A client registered with an Apple key authenticates with an ES256
  client-secret JWT (iss=team id, sub=client id, aud=https://appleid.apple.com, kid=key
  id), gets ``email_verified`` as the string ``"true"``, and ``response_mode=form_post``
  answers with the auto-submitting HTML form Apple serves (``form_post_fields`` reads it).
- GitHub's OAuth 2: ``/login/oauth/authorize``, ``/login/oauth/access_token`` (JSON with
  ``Accept: application/json``, else form-encoded, errors with status 200 like GitHub)
  and the REST API at ``/api/v3`` (``/api/v3/user``, ``/api/v3/user/emails``), the
  GitHub Enterprise Server layout that ``github_endpoints`` derives for a non-github.com
  issuer.

Nobody types a password: ``approve_as(subject)`` picks who "signs in" at the authorize
endpoints, ``deny()`` makes the next authorization answer ``error=access_denied``, and
``spoil_id_tokens(flaw)`` makes the token endpoint mint bad ID tokens.

    with running_fake_idp() as idp:
        idp.register_client("web", "secret", redirect_uris=[...])
        idp.add_user("u1", "ada@example.com", name="Ada")
        idp.approve_as("u1")
        ... point OidcProviderSettings(issuer=idp.issuer, ...) at it
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, generate_private_key
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from domain.identity.pkce import valid_challenge, verify_s256

APPLE_AUDIENCE = "https://appleid.apple.com"
FLAWS = ("bad_signature", "unknown_kid", "wrong_audience", "wrong_nonce", "wrong_issuer", "expired")


@functools.cache
def _rsa_key(n: int) -> RSAPrivateKey:
    return generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class FakeKeys:
    """The published keys and a rogue one that signs under a published kid."""

    rsa: RSAPrivateKey = field(default_factory=lambda: _rsa_key(0))
    rsa_kid: str = "rsa-1"
    ec: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ec_kid: str = "ec-1"
    rogue: RSAPrivateKey = field(default_factory=lambda: _rsa_key(1))

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        rsa_jwk.update(kid=self.rsa_kid, use="sig", alg="RS256")
        ec_jwk.update(kid=self.ec_kid, use="sig", alg="ES256")
        return {"keys": [rsa_jwk, ec_jwk]}


@dataclass
class FakeUser:
    subject: str
    email: str
    email_verified: bool
    name: str | None
    login: str
    #: GitHub's /user/emails rows
    emails: list[dict[str, Any]]


@dataclass
class FakeClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    apple_key: ec.EllipticCurvePublicKey | None = None
    team_id: str = ""
    key_id: str = ""


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str | None
    nonce: str | None
    subject: str


class FakeIdP:
    def __init__(self) -> None:
        self.issuer = ""  # set once the server's port is known
        self.keys = FakeKeys()
        self.users: dict[str, FakeUser] = {}
        self.clients: dict[str, FakeClient] = {}
        self.id_token_alg = "RS256"
        self.jwks_requests = 0
        self._approving: str | None = None
        self._deny = False
        self._flaw: str | None = None
        self._codes: dict[str, _Grant] = {}
        self._tokens: dict[str, str] = {}
        self.app = Starlette(routes=self._routes())

    # -- what tests set up ----------------------------------------------------------------

    def register_client(
        self,
        client_id: str,
        client_secret: str = "",
        *,
        redirect_uris: Sequence[str],
        apple_key: ec.EllipticCurvePublicKey | None = None,
        team_id: str = "",
        key_id: str = "",
    ) -> FakeClient:
        client = FakeClient(
            client_id, client_secret, tuple(redirect_uris), apple_key, team_id, key_id
        )
        self.clients[client_id] = client
        return client

    def add_user(
        self,
        subject: str,
        email: str,
        email_verified: bool = True,
        name: str | None = None,
        *,
        login: str | None = None,
        other_emails: Sequence[tuple[str, bool]] = (),
    ) -> FakeUser:
        """A user; for GitHub ``subject`` is the numeric id and ``email`` the primary."""
        rows = [{"email": email, "primary": True, "verified": email_verified, "visibility": None}]
        rows += [
            {"email": e, "primary": False, "verified": v, "visibility": None}
            for e, v in other_emails
        ]
        user = FakeUser(subject, email, email_verified, name, login or f"user{subject}", rows)
        self.users[subject] = user
        return user

    def approve_as(self, subject: str) -> None:
        """Who signs in at the authorize endpoints from now on."""
        if subject not in self.users:
            raise KeyError(subject)
        self._approving = subject

    def deny(self) -> None:
        """The next authorization request answers ``error=access_denied``."""
        self._deny = True

    def spoil_id_tokens(self, flaw: str | None) -> None:
        """Mint bad ID tokens from now on (one of ``FLAWS``); None mints good ones again."""
        if flaw is not None and flaw not in FLAWS:
            raise ValueError(f"flaw must be one of {FLAWS}")
        self._flaw = flaw

    def rotate_keys(self) -> None:
        """New published keys under new kids; the old ones are no longer listed."""
        n = int(self.keys.rsa_kid.rsplit("-", 1)[1]) + 1
        self.keys = FakeKeys(
            rsa=_rsa_key(n + 1), rsa_kid=f"rsa-{n}", ec_kid=f"ec-{n}", rogue=self.keys.rogue
        )

    # -- the protocol ---------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route("/.well-known/openid-configuration", self._discovery),
            Route("/jwks", self._jwks),
            Route("/authorize", self._authorize, methods=["GET"]),
            Route("/token", self._token, methods=["POST"]),
            Route("/userinfo", self._userinfo, methods=["GET", "POST"]),
            Route("/login/oauth/authorize", self._github_authorize, methods=["GET"]),
            Route("/login/oauth/access_token", self._github_token, methods=["POST"]),
            Route("/api/v3/user", self._github_user),
            Route("/api/v3/user/emails", self._github_emails),
        ]

    async def _discovery(self, request: Request) -> Response:
        i = self.issuer
        return JSONResponse(
            {
                "issuer": i,
                "authorization_endpoint": f"{i}/authorize",
                "token_endpoint": f"{i}/token",
                "userinfo_endpoint": f"{i}/userinfo",
                "jwks_uri": f"{i}/jwks",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query", "form_post"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                ],
                "scopes_supported": ["openid", "email", "profile", "name"],
                "claims_supported": ["sub", "email", "email_verified", "name", "nonce"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        self.jwks_requests += 1
        return JSONResponse(self.keys.jwks())

    def _authorization(self, request: Request, *, oidc: bool) -> Response:
        q = request.query_params
        client = self.clients.get(q.get("client_id", ""))
        redirect_uri = q.get("redirect_uri", "")
        # RFC 6749 §4.1.2.1: a bad client or redirect URI is told to the user, not redirected
        if client is None:
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        if redirect_uri not in client.redirect_uris:
            return JSONResponse({"error": "invalid_request", "field": "redirect_uri"}, 400)
        state = q.get("state", "")
        mode = q.get("response_mode", "query")
        problem = None
        if q.get("response_type") != "code":
            problem = "unsupported_response_type"
        elif (oidc or "code_challenge" in q) and (
            q.get("code_challenge_method") != "S256"
            or not valid_challenge(q.get("code_challenge", ""))
        ):
            problem = "invalid_request"  # PKCE S256; GitHub makes it optional
        elif not state or (oidc and not q.get("nonce")):
            problem = "invalid_request"
        elif oidc and "openid" not in q.get("scope", "").split():
            problem = "invalid_scope"
        if problem is None and self._deny:
            self._deny = False
            problem = "access_denied"
        if problem is not None:
            return _answer(redirect_uri, mode, {"error": problem, "state": state})
        if self._approving is None:
            return JSONResponse({"error": "nobody is signed in at the fake"}, 400)
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Grant(
            client.client_id,
            redirect_uri,
            q.get("code_challenge"),
            q.get("nonce"),
            self._approving,
        )
        fields = {"code": code, "state": state}
        user = self.users[self._approving]
        if mode == "form_post" and user.name:  # Apple sends the name once, beside the code
            first, _, last = user.name.partition(" ")
            name = {"firstName": first, "lastName": last}
            fields["user"] = json.dumps({"name": name, "email": user.email})
        return _answer(redirect_uri, mode, fields)

    async def _authorize(self, request: Request) -> Response:
        return self._authorization(request, oidc=True)

    async def _token(self, request: Request) -> Response:
        form = await _form(request)
        client = self._authenticate(request, form)
        if client is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        grant = self._redeem(client, form)
        if grant is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access = secrets.token_urlsafe(24)
        self._tokens[access] = grant.subject
        body = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": self._id_token(client, grant),
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def _userinfo(self, request: Request) -> Response:
        user = self._bearer(request)
        if user is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse(
            {
                "sub": user.subject,
                "email": user.email,
                "email_verified": user.email_verified,
                "name": user.name,
            }
        )

    async def _github_authorize(self, request: Request) -> Response:
        return self._authorization(request, oidc=False)

    async def _github_token(self, request: Request) -> Response:
        form = await _form(request)
        wants_json = "application/json" in request.headers.get("accept", "")

        def answer(body: dict[str, str]) -> Response:  # GitHub: status 200, errors included
            if wants_json:
                return JSONResponse(body)
            return Response(urlencode(body), media_type="application/x-www-form-urlencoded")

        client = self._authenticate(request, form)
        if client is None:
            return answer({"error": "incorrect_client_credentials"})
        grant = self._redeem(client, form)
        if grant is None:
            return answer({"error": "bad_verification_code"})
        access = "gho_" + secrets.token_urlsafe(24)
        self._tokens[access] = grant.subject
        return answer({"access_token": access, "token_type": "bearer", "scope": "read:user"})

    async def _github_user(self, request: Request) -> Response:
        user = self._bearer(request)
        if user is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        uid: int | str = int(user.subject) if user.subject.isdigit() else user.subject
        return JSONResponse({"id": uid, "login": user.login, "name": user.name, "email": None})

    async def _github_emails(self, request: Request) -> Response:
        user = self._bearer(request)
        if user is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse(user.emails)

    # -- checks ---------------------------------------------------------------------------

    def _authenticate(self, request: Request, form: dict[str, str]) -> FakeClient | None:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            decoded = base64.b64decode(basic[6:]).decode()
            client_id, _, secret = decoded.partition(":")
        client = self.clients.get(client_id)
        if client is None or not secret:
            return None
        if client.apple_key is not None:
            return client if self._apple_secret_ok(client, secret) else None
        return client if secrets.compare_digest(secret, client.client_secret) else None

    def _apple_secret_ok(self, client: FakeClient, secret: str) -> bool:
        assert client.apple_key is not None
        try:
            if jwt.get_unverified_header(secret).get("kid") != client.key_id:
                return False
            claims = jwt.decode(
                secret,
                client.apple_key,
                algorithms=["ES256"],
                audience=APPLE_AUDIENCE,
                issuer=client.team_id,
                options={"require": ["iss", "sub", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError:
            return False
        return bool(claims["sub"] == client.client_id)

    def _redeem(self, client: FakeClient, form: dict[str, str]) -> _Grant | None:
        grant = self._codes.pop(form.get("code", ""), None)  # single use, right or wrong
        if grant is None or grant.client_id != client.client_id:
            return None
        if form.get("redirect_uri") != grant.redirect_uri:
            return None
        if grant.challenge is not None and not verify_s256(
            form.get("code_verifier", ""), grant.challenge
        ):
            return None
        return grant

    def _bearer(self, request: Request) -> FakeUser | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        subject = self._tokens.get(token)
        return self.users.get(subject) if subject else None

    def _id_token(self, client: FakeClient, grant: _Grant) -> str:
        user = self.users[grant.subject]
        now = int(time.time())
        apple = client.apple_key is not None
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": client.client_id,
            "sub": user.subject,
            "iat": now,
            "exp": now + 600,
            "nonce": grant.nonce,
            "email": user.email,
            # Apple sends strings here
            "email_verified": str(user.email_verified).lower() if apple else user.email_verified,
        }
        if user.name and not apple:
            claims["name"] = user.name
        flaw = self._flaw
        if flaw == "wrong_audience":
            claims["aud"] = "someone-else"
        elif flaw == "wrong_nonce":
            claims["nonce"] = "n-" + secrets.token_urlsafe(16)
        elif flaw == "wrong_issuer":
            claims["iss"] = "https://issuer.invalid"
        elif flaw == "expired":
            claims["iat"], claims["exp"] = now - 7200, now - 3600
        key: Any
        if flaw in ("bad_signature", "unknown_kid"):
            key, alg = self.keys.rogue, "RS256"
            kid = self.keys.rsa_kid if flaw == "bad_signature" else "unlisted"
        elif self.id_token_alg == "ES256":
            key, alg, kid = self.keys.ec, "ES256", self.keys.ec_kid
        else:
            key, alg, kid = self.keys.rsa, "RS256", self.keys.rsa_kid
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def _answer(redirect_uri: str, mode: str, fields: dict[str, str]) -> Response:
    if mode == "form_post":  # OAuth 2.0 Form Post Response Mode, as Apple serves it
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}"/>'
            for k, v in fields.items()
        )
        page = (
            '<html><body onload="document.forms[0].submit()">'
            f'<form method="post" action="{html.escape(redirect_uri)}">{inputs}</form>'
            "</body></html>"
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})
    sep = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{sep}{urlencode(fields)}", status_code=302)


async def _form(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))


_INPUT = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)"/>')
_ACTION = re.compile(r'<form method="post" action="([^"]*)">')


def form_post_fields(page: str) -> tuple[str, dict[str, str]]:
    """The action and fields of a form_post page: what the browser would POST."""
    action = _ACTION.search(page)
    if action is None:
        raise ValueError("not a form_post page")
    fields = {html.unescape(k): html.unescape(v) for k, v in _INPUT.findall(page)}
    return html.unescape(action.group(1)), fields


@contextlib.contextmanager
def running_fake_idp() -> Iterator[FakeIdP]:
    """A ``FakeIdP`` served by uvicorn on a free loopback port in a background thread."""
    idp = FakeIdP()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    idp.issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        idp.app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
        loop="asyncio",
        http="h11",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake identity provider did not start")
            time.sleep(0.01)
        yield idp
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
