"""What every identity route shares: keys, hashers, the revocation cache, mail, limits.

Built once per app in the lifespan (``IdentityServices.open``) and reached through
``ctx(request).identity``.

Revocations reach the token check from memory. Access tokens are verified without a
database query (signature, then a cache of tokens already verified), so a revoked
session would stay usable until its token expires (15 minutes) unless each process
knows. Each process polls ``token_revocations`` once a second for rows newer than the
access-token lifetime, and a route that revoked something and waited for the projector
refreshes at once, so its own next request already sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from core.keys import KeyStore, server_secret
from core.settings import Settings
from domain.identity.clients import OAuthClient, admin_console_client, parse_clients
from domain.identity.passwords import Argon2Params, Passwords
from domain.identity.sealing import derive_key
from domain.identity.tokens import (
    AccessClaims,
    AccessTokenVerifier,
    KeySet,
    issue_access_token,
)
from projections.identity.sessions import revocations_since

log = logging.getLogger("mgw.identity")


@dataclass(slots=True)
class RevocationCache:
    """Revoked session ids and per-user "tokens before this second are dead" marks."""

    pg: AsyncConnectionPool
    horizon_s: int
    families: dict[str, float] = field(default_factory=dict)
    valid_after: dict[str, float] = field(default_factory=dict)
    seq: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def refuses(self, claims: AccessClaims) -> bool:
        if claims.session_id in self.families:
            return True
        after = self.valid_after.get(claims.subject)
        return after is not None and claims.issued_at < after

    async def refresh(self) -> None:
        async with self._lock:
            since = time.time() - self.horizon_s - 60
            async with self.pg.connection() as conn:
                rows = await revocations_since(conn, self.seq, datetime.fromtimestamp(since, UTC))
            for seq, family_id, user_id, valid_after in rows:
                self.seq = max(self.seq, seq)
                if family_id is not None:
                    self.families[family_id] = time.time()
                if user_id is not None and valid_after is not None:
                    after = valid_after.timestamp()
                    self.valid_after[user_id] = max(self.valid_after.get(user_id, 0.0), after)
            # forget what no live access token can be affected by any more
            old = time.time() - self.horizon_s - 60
            for fid in [f for f, t in self.families.items() if t < old]:
                del self.families[fid]
            for uid in [u for u, t in self.valid_after.items() if t < old]:
                del self.valid_after[uid]

    async def run(self, stop: asyncio.Event, every_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # a database blip must not end the poller
                log.warning("revocation poll failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


@dataclass(slots=True)
class IdentityServices:
    settings: Settings
    keystore: KeyStore
    keyset: KeySet
    verifier: AccessTokenVerifier
    passwords: Passwords
    pin_hasher: Passwords
    mfa_key: bytes
    code_key: bytes
    revocations: RevocationCache
    clients: dict[str, OAuthClient]
    mailer: Any = None  # core.mail.Mailer, or None: mail is not sent
    limiter: Any = None  # api.ratelimit.RateLimiter
    redis: Any = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def issuer(self) -> str:
        return self.settings.base_url

    def user_token(
        self, user_id: str, scope: str, *, ttl_s: int = 7200, roles: tuple[str, ...] = ("user",)
    ) -> str:
        """An access token for ``user_id`` signed with this process's keys, with no
        session behind it: for benchmarks and evaluations acting as many users (MovieLens
        viewers) that have no account to sign in with."""
        return issue_access_token(
            self.keyset,
            issuer=self.issuer,
            audience=self.settings.identity.audience,
            subject=user_id,
            session_id="minted",
            scope=scope,
            client_id="mgw-app",
            roles=list(roles),
            amr=["pwd"],
            ttl_s=ttl_s,
            now=int(time.time()),
        )

    @classmethod
    async def open(
        cls, settings: Settings, pg: AsyncConnectionPool, redis: Any, mailer: Any = None
    ) -> IdentityServices:
        ident = settings.identity
        keystore = KeyStore(settings.keys_dir)
        keyset = await asyncio.to_thread(keystore.load_or_create)
        secret = await asyncio.to_thread(server_secret, settings.keys_dir, ident.secret_key)
        params = Argon2Params(
            ident.argon2_time_cost, ident.argon2_memory_kib, ident.argon2_parallelism
        )
        services = cls(
            settings=settings,
            keystore=keystore,
            keyset=keyset,
            verifier=AccessTokenVerifier(keyset, issuer="", audience=""),  # replaced below
            passwords=Passwords(params),
            # PINs are 4-6 digits: the hash only slows an offline attacker with the
            # table; the online guard is the pin rate limit
            pin_hasher=Passwords(params),
            mfa_key=derive_key(secret, "totp-secret"),
            code_key=derive_key(secret, "backup-code"),
            revocations=RevocationCache(pg, ident.access_token_ttl_s),
            clients={
                c.client_id: c
                for c in (
                    admin_console_client(settings.base_url),
                    *parse_clients(ident.oauth_clients),
                )
            },
            mailer=mailer,
            redis=redis,
        )
        # the provider reads the attribute each time, so a reload (another process
        # rotated the keys) reaches verification without rebuilding anything
        services.verifier = AccessTokenVerifier(
            lambda: services.keyset, issuer=settings.base_url, audience=ident.audience
        )
        from api.ratelimit import RateLimiter, RulesSource

        services.limiter = RateLimiter(redis, RulesSource(pg, ident.rate_limits))
        await services.revocations.refresh()
        return services

    async def reload_keys(self) -> bool:
        """Pick up keys another process rotated; True when the set changed."""
        keyset = await asyncio.to_thread(self.keystore.load_or_create)
        if keyset.active.kid == self.keyset.active.kid and set(keyset.verifying) == set(
            self.keyset.verifying
        ):
            return False
        self.keyset = keyset
        log.info("signing keys reloaded: active %s", keyset.active.kid)
        return True

    async def maintain(self, stop: asyncio.Event, keys_every_s: float = 30.0) -> None:
        """Poll revocations each second and the key directory every ``keys_every_s``."""
        keys_task = asyncio.create_task(self._keys_loop(stop, keys_every_s))
        try:
            await self.revocations.run(stop)
        finally:
            await keys_task

    async def _keys_loop(self, stop: asyncio.Event, every_s: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            if stop.is_set():
                return
            try:
                await self.reload_keys()
            except Exception as exc:  # a bad file must not end the loop
                log.warning("key reload failed: %s", exc)

    def spawn(self, coro: Any) -> None:
        """Run work after the response (mail); keep a reference so it is not collected."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
