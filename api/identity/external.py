"""Sign in with Google, GitHub, Apple: the OAuth/OIDC client and its two routes.

``GET /v1/auth/external/{provider}/start`` answers 302 to the provider's authorization
endpoint. The provider sends the browser back to ``GET`` (Apple: ``POST`` form)
``/v1/auth/external/{provider}/callback``; the client redeems the code, verifies who
signed in, and hands the ``ExternalIdentity`` to the sign-in hook, whose response the
route returns. Linking accounts and issuing tokens is the hook's job
(``api.identity.external_accounts.sign_in_external`` unless ``app.state.external_sign_in``
names another).

The flow's secrets (PKCE verifier, nonce, where to go afterwards) stay in Redis under
the SHA-256 of ``state`` for 10 minutes and are taken with GETDEL, so a state is spent
by its first callback, good or bad. Refusals are problem details naming the field at
fault: 400 for the flow (``state``, ``code``, ``error``, ``redirect_after``), 404 for a
provider that is not configured, 502 when the provider cannot be reached or answers
nonsense, 503 when this server's provider configuration is broken.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import httpx
import jwt
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from api.context import ctx
from api.errors import Problem
from core.settings import OidcProviderSettings, Settings
from domain.identity.opaque import new_token
from domain.identity.pkce import challenge_s256
from domain.identity.providers import (
    ExternalIdentity,
    ExternalSignInError,
    apple_client_secret,
    apple_user_name,
    authorization_params,
    discovery_url,
    github_endpoints,
    github_identity,
    id_token_algorithm,
    identity_from_id_token,
    profile_for,
    provider_error,
    safe_redirect_after,
    select_jwk,
    validate_id_token_claims,
)

STATE_TTL_S = 600
STATE_KEY = "mgw:ext:state:{}"
#: discovery documents and key sets are refetched at least this often
CACHE_TTL_S = 86400
HTTP_TIMEOUT_S = 10.0
MAX_ID_TOKEN_BYTES = 16384
MAX_STATE = 512
NO_STORE = {"Cache-Control": "no-store"}
_SIGNATURE_ONLY: Any = {
    "verify_signature": True,
    "verify_aud": False,
    "verify_exp": False,
    "verify_iat": False,
    "verify_iss": False,
    "verify_jti": False,
    "verify_nbf": False,
    "verify_sub": False,
}


class UnknownProvider(ExternalSignInError):
    """The provider is not configured here (404)."""


class ProviderUnavailable(ExternalSignInError):
    """The provider could not be reached or answered something unusable (502)."""


class ProviderMisconfigured(ExternalSignInError):
    """This server's settings for the provider do not work, e.g. an unreadable key (503)."""


@dataclass(frozen=True, slots=True)
class SignIn:
    identity: ExternalIdentity
    redirect_after: str | None


class SignInHook(Protocol):
    """Turns a verified external identity into the callback's response (tokens)."""

    def __call__(self, request: Request, identity: ExternalIdentity) -> Awaitable[Response]: ...


class ExternalSignIn:
    """The client for every configured provider; one per app, so its caches last."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._http = http
        self._clock = clock
        self._providers = {p.name: p for p in settings.identity.providers}
        self._documents: dict[str, tuple[float, dict[str, Any]]] = {}
        self._keys: dict[str, tuple[float, dict[str, Any]]] = {}
        self._apple_keys: dict[str, bytes] = {}

    @property
    def configured(self) -> tuple[str, ...]:
        return tuple(self._providers)

    def redirect_uri(self, provider: str) -> str:
        return f"{self._settings.base_url}/v1/auth/external/{provider}/callback"

    async def start(self, provider: str, *, redirect_after: str | None) -> str:
        """The authorization URL to send the browser to."""
        cfg = self.settings_for(provider)
        after = safe_redirect_after(redirect_after, self._settings.base_url)
        state, nonce, verifier = new_token(32), new_token(32), new_token(48)
        async with self._client() as http:
            authorize = await self._authorization_endpoint(http, cfg)
        record = {
            "provider": provider,
            "verifier": verifier,
            "nonce": nonce,
            "redirect_after": after,
        }
        await self._redis.set(_state_key(state), json.dumps(record), ex=STATE_TTL_S, nx=True)
        params = authorization_params(
            profile_for(provider),
            client_id=cfg.client_id,
            redirect_uri=self.redirect_uri(provider),
            state=state,
            nonce=nonce,
            code_challenge=challenge_s256(verifier),
        )
        sep = "&" if "?" in authorize else "?"
        return f"{authorize}{sep}{urlencode(params)}"

    async def cancel(self, state: str) -> None:
        """Spend ``state`` without signing in (the provider answered with an error)."""
        if 0 < len(state) <= MAX_STATE:
            await self._redis.delete(_state_key(state))

    async def finish(self, provider: str, *, code: str, state: str) -> ExternalIdentity:
        return (await self.complete(provider, code=code, state=state)).identity

    async def complete(
        self, provider: str, *, code: str, state: str, user: str | None = None
    ) -> SignIn:
        """Redeem the callback's ``code`` for a verified identity. ``user`` is Apple's
        first-sign-in form field, read for the display name only."""
        cfg = self.settings_for(provider)
        stored = await self._take_state(provider, state)
        async with self._client() as http:
            if profile_for(provider).protocol == "oauth2":
                identity = await self._github(http, cfg, code, stored)
            else:
                identity = await self._oidc(http, cfg, code, stored, apple_user_name(user))
        return SignIn(identity, stored.get("redirect_after"))

    def settings_for(self, provider: str) -> OidcProviderSettings:
        """The provider's settings; ``UnknownProvider`` names the configured ones."""
        cfg = self._providers.get(provider)
        if cfg is None:
            known = ", ".join(self._providers) or "none"
            raise UnknownProvider(
                f"sign-in with {provider[:40]!r} is not configured; configured: {known}",
                field="provider",
            )
        return cfg

    # -- the flow's steps ------------------------------------------------------------------

    async def _take_state(self, provider: str, state: str) -> dict[str, Any]:
        if not state or len(state) > MAX_STATE:
            raise ExternalSignInError("state is missing or malformed", field="state")
        raw = await self._redis.getdel(_state_key(state))
        if raw is None:
            raise ExternalSignInError("state is unknown, expired or already used", field="state")
        try:
            stored = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        except ValueError:
            raise ExternalSignInError("state is unreadable", field="state") from None
        if not isinstance(stored, dict) or stored.get("provider") != provider:
            raise ExternalSignInError("state belongs to another provider", field="state")
        return stored

    async def _authorization_endpoint(
        self, http: httpx.AsyncClient, cfg: OidcProviderSettings
    ) -> str:
        if profile_for(cfg.name).protocol == "oauth2":
            return github_endpoints(cfg.issuer).authorize
        return str((await self._discovery(http, cfg))["authorization_endpoint"])

    async def _redeem(
        self, http: httpx.AsyncClient, cfg: OidcProviderSettings, url: str, code: str, verifier: str
    ) -> dict[str, Any]:
        """The token response for ``code`` (client_secret_post, PKCE verifier)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri(cfg.name),
            "client_id": cfg.client_id,
            "client_secret": self._client_secret(cfg),
            "code_verifier": verifier,
        }
        try:
            resp = await http.post(url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError:
            raise ProviderUnavailable("token endpoint unreachable", field="provider") from None
        body = _json_object(resp)
        if body is not None and isinstance(body.get("error"), str):
            # RFC 6749 §5.2 answers 400; GitHub answers 200 with the error in the body
            error = provider_error(body["error"])
            raise ExternalSignInError(f"the provider refused the code ({error})", field="code")
        if resp.status_code >= 400:
            raise ExternalSignInError(
                f"the provider refused the code (HTTP {resp.status_code})", field="code"
            )
        if body is None:
            raise ProviderUnavailable("token endpoint answered without JSON", field="provider")
        return body

    async def _oidc(
        self,
        http: httpx.AsyncClient,
        cfg: OidcProviderSettings,
        code: str,
        stored: dict[str, Any],
        name: str | None,
    ) -> ExternalIdentity:
        doc = await self._discovery(http, cfg)
        tokens = await self._redeem(http, cfg, doc["token_endpoint"], code, stored["verifier"])
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str) or not 0 < len(id_token) <= MAX_ID_TOKEN_BYTES:
            raise ExternalSignInError("the provider sent no ID token", field="code")
        claims = await self._verified_claims(http, doc["jwks_uri"], id_token)
        validate_id_token_claims(
            claims,
            provider=cfg.name,
            issuer=cfg.issuer,
            client_id=cfg.client_id,
            nonce=str(stored["nonce"]),
            now=self._clock(),
        )
        return identity_from_id_token(cfg.name, claims, name=name)

    async def _verified_claims(
        self, http: httpx.AsyncClient, jwks_uri: str, id_token: str
    ) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise ExternalSignInError("ID token is malformed") from None
        alg = id_token_algorithm(header)
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        keys, fresh = await self._key_set(http, jwks_uri, refresh=False)
        jwk = select_jwk(keys, kid, alg)
        if jwk is None and not fresh:  # the provider may have rotated: look once more
            keys, _ = await self._key_set(http, jwks_uri, refresh=True)
            jwk = select_jwk(keys, kid, alg)
        if jwk is None:
            raise ExternalSignInError("ID token is signed by a key the provider does not list")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            claims = jwt.decode(id_token, key=key, algorithms=[alg], options=_SIGNATURE_ONLY)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise ExternalSignInError("ID token signature does not verify") from None
        return claims

    async def _github(
        self, http: httpx.AsyncClient, cfg: OidcProviderSettings, code: str, stored: dict[str, Any]
    ) -> ExternalIdentity:
        ends = github_endpoints(cfg.issuer)
        tokens = await self._redeem(http, cfg, ends.token, code, stored["verifier"])
        access = tokens.get("access_token")
        if not isinstance(access, str) or not access:
            raise ExternalSignInError("the provider sent no access token", field="code")
        headers = {
            "Authorization": f"Bearer {access}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        user = await self._get_json(http, f"{ends.api}/user", "GitHub user API", headers)
        emails = await self._get_json(http, f"{ends.api}/user/emails", "GitHub emails API", headers)
        if not isinstance(user, dict) or not isinstance(emails, list):
            raise ProviderUnavailable("GitHub API answered an unexpected shape", field="provider")
        return github_identity(cfg.name, user, emails)

    # -- provider metadata, cached ---------------------------------------------------------

    async def _discovery(
        self, http: httpx.AsyncClient, cfg: OidcProviderSettings
    ) -> dict[str, Any]:
        cached = self._documents.get(cfg.issuer)
        if cached is not None and time.monotonic() - cached[0] < CACHE_TTL_S:
            return cached[1]
        doc = await self._get_json(http, discovery_url(cfg.issuer), "discovery document")
        needed = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in needed):
            raise ProviderUnavailable("discovery document lacks endpoints", field="provider")
        if str(doc.get("issuer", "")).rstrip("/") != cfg.issuer.rstrip("/"):
            # OIDC Discovery §4.3: a document for another issuer is not this provider's
            raise ProviderUnavailable("discovery document names another issuer", field="provider")
        self._documents[cfg.issuer] = (time.monotonic(), doc)
        return doc

    async def _key_set(
        self, http: httpx.AsyncClient, uri: str, *, refresh: bool
    ) -> tuple[dict[str, Any], bool]:
        """The JWKS at ``uri`` and whether it was fetched just now."""
        cached = self._keys.get(uri)
        if not refresh and cached is not None and time.monotonic() - cached[0] < CACHE_TTL_S:
            return cached[1], False
        keys = await self._get_json(http, uri, "JWKS")
        if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
            raise ProviderUnavailable("JWKS is not a key set", field="provider")
        self._keys[uri] = (time.monotonic(), keys)
        return keys, True

    async def _get_json(
        self, http: httpx.AsyncClient, url: str, what: str, headers: dict[str, str] | None = None
    ) -> Any:
        try:
            resp = await http.get(url, headers=headers or {"Accept": "application/json"})
        except httpx.HTTPError:
            raise ProviderUnavailable(f"{what} unreachable", field="provider") from None
        if 400 <= resp.status_code < 500:
            raise ExternalSignInError(f"{what} refused (HTTP {resp.status_code})", field="code")
        if resp.status_code != 200:
            raise ProviderUnavailable(f"{what} answered HTTP {resp.status_code}", field="provider")
        try:
            return resp.json()
        except ValueError:
            raise ProviderUnavailable(f"{what} is not JSON", field="provider") from None

    def _client_secret(self, cfg: OidcProviderSettings) -> str:
        if not cfg.private_key_file:
            return cfg.client_secret
        pem = self._apple_keys.get(cfg.private_key_file)
        if pem is None:
            try:
                pem = Path(cfg.private_key_file).read_bytes()
            except OSError:
                raise ProviderMisconfigured(
                    f"the {cfg.name} private key file cannot be read", field="provider"
                ) from None
            self._apple_keys[cfg.private_key_file] = pem
        try:
            return apple_client_secret(
                pem,
                team_id=cfg.team_id,
                key_id=cfg.key_id,
                client_id=cfg.client_id,
                now=self._clock(),
            )
        except ExternalSignInError as exc:
            raise ProviderMisconfigured(exc.reason, field="provider") from None

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._http is not None:
            yield self._http
            return
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False) as http:
            yield http


def _state_key(state: str) -> str:
    return STATE_KEY.format(hashlib.sha256(state.encode()).hexdigest())


def _json_object(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


# -- routes ------------------------------------------------------------------------------


def _client_of(request: Request) -> ExternalSignIn:
    signin: ExternalSignIn | None = getattr(request.app.state, "external_client", None)
    if signin is None:
        c = ctx(request)
        signin = ExternalSignIn(c.settings, c.stores.redis)
        request.app.state.external_client = signin
    return signin


def _hook_of(request: Request) -> SignInHook:
    hook: SignInHook | None = getattr(request.app.state, "external_sign_in", None)
    if hook is None:
        from api.identity.external_accounts import sign_in_external  # account linking lives there

        hook = sign_in_external
    return hook


def _problem(exc: ExternalSignInError) -> Problem:
    status = 400
    if isinstance(exc, UnknownProvider):
        status = 404
    elif isinstance(exc, ProviderUnavailable):
        status = 502
    elif isinstance(exc, ProviderMisconfigured):
        status = 503
    return Problem(status, exc.reason, field=exc.field)


async def start(request: Request) -> Response:
    signin = _client_of(request)
    provider = request.path_params["provider"]
    try:
        url = await signin.start(
            provider, redirect_after=request.query_params.get("redirect_after")
        )
    except ExternalSignInError as exc:
        raise _problem(exc) from None
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


async def callback(request: Request) -> Response:
    signin = _client_of(request)
    provider = request.path_params["provider"]
    params = await _form(request) if request.method == "POST" else dict(request.query_params)
    state, code, error = params.get("state", ""), params.get("code", ""), params.get("error")
    try:
        signin.settings_for(provider)
        if error is not None:
            await signin.cancel(state)
            raise ExternalSignInError(
                f"the provider answered {provider_error(error)}", field="error"
            )
        if not code:
            await signin.cancel(state)
            raise ExternalSignInError("code is missing", field="code")
        done = await signin.complete(provider, code=code, state=state, user=params.get("user"))
    except ExternalSignInError as exc:
        raise _problem(exc) from None
    request.state.external_redirect_after = done.redirect_after
    return await _hook_of(request)(request, done.identity)


async def _form(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Problem(415, "the callback form must be application/x-www-form-urlencoded")
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise Problem(400, "the callback form is malformed", field="body") from None
    return dict(pairs)


routes = [
    Route("/v1/auth/external/{provider}/start", start, methods=["GET"]),
    Route("/v1/auth/external/{provider}/callback", callback, methods=["GET", "POST"]),
]
