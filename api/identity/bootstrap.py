"""The first admin: ``MGW_BOOTSTRAP_ADMIN_EMAIL`` and ``MGW_BOOTSTRAP_ADMIN_PASSWORD``.

At start the API creates that account (verified, roles user + admin) if the email is
unknown. An existing account with that email is promoted only when it is verified and
knows the bootstrap password: whoever registered the address first must not become admin
by it. With projectors in workers it is done in the background, once they answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from api.context import AppContext
from api.errors import Problem
from api.identity.accounts import registration
from api.identity.commands import decide
from core.backoff import Backoff, Failure, Retry, is_transient, pause
from core.events import Event
from core.ids import new_id
from domain.identity.emails import normalize_email
from domain.identity.passwords import PasswordRejected, check_password
from projections.identity.accounts import (
    user_by_email,
)

log = logging.getLogger("mgw.identity")


async def bootstrap_admin(c: AppContext) -> str | None:
    """Create the first admin from MGW_BOOTSTRAP_ADMIN_EMAIL/PASSWORD if the email has
    no account; grant admin to an existing account of that email. Returns its user id."""
    ident = c.settings.identity
    if not ident.bootstrap_admin_email or not ident.bootstrap_admin_password:
        return None
    email = normalize_email(ident.bootstrap_admin_email)
    async with c.stores.pg.connection() as conn:
        user = await user_by_email(conn, email)
    if user is not None:
        if "admin" in user.roles:
            return user.user_id
        # whoever registered this email first must not become admin by it: only an
        # account that proved the email and knows the bootstrap password is promoted
        knows = user.password_hash is not None and await asyncio.to_thread(
            c.identity.passwords.verify, user.password_hash, ident.bootstrap_admin_password
        )
        if not (user.email_verified and knows):
            log.warning(
                "MGW_BOOTSTRAP_ADMIN_EMAIL has an account that is not verified or has another "
                "password: not granting it admin"
            )
            return None
        await decide(
            c,
            Event("RoleGranted", user.user_id, _system({"user_id": user.user_id, "role": "admin"})),
        )
        return user.user_id
    try:
        check_password(ident.bootstrap_admin_password, email=email)
    except PasswordRejected as exc:
        raise ValueError(f"MGW_BOOTSTRAP_ADMIN_PASSWORD: {exc}") from None
    password_hash = await asyncio.to_thread(
        c.identity.passwords.hash, ident.bootstrap_admin_password
    )
    user_id = new_id()
    outcome, _ = await decide(
        c,
        Event(
            "UserRegistered",
            user_id,
            _system(
                registration(
                    user_id,
                    email,
                    "Administrator",
                    password_hash=password_hash,
                    source="bootstrap",
                    verified=True,
                    roles=("user", "admin"),
                )
            ),
            producer="bootstrap",
        ),
    )
    if outcome != "ok":  # another process created it first
        async with c.stores.pg.connection() as conn:
            user = await user_by_email(conn, email)
        return user.user_id if user else None
    log.info("bootstrap admin created (user %s)", user_id)
    return user_id


async def bootstrap_admin_when_ready(c: AppContext, stop: asyncio.Event) -> None:
    """``bootstrap_admin`` retried until the identity projector (in a worker) answers.

    Waiting for the projector (a 503 ``Problem``) and transient failures (the database
    away) are retried with backoff, 1 s doubling up to 30 s, and logged once; any other
    failure ends it."""
    retry = Retry(
        "bootstrap admin",
        log,
        backoff=Backoff(first=1.0, cap=30.0),
        transient=lambda exc: isinstance(exc, Problem) or is_transient(exc),
        give_up_after=None,
        postgres=getattr(c.stores.pg, "conninfo", None),
        explain=_waiting_for_projector,
    )
    while not stop.is_set():
        try:
            await bootstrap_admin(c)
        except Exception as exc:
            if not (isinstance(exc, Problem) or is_transient(exc)):
                log.warning("bootstrap admin failed: %s", exc)
                return
            delay = retry.failed(exc)
            assert delay is not None  # give_up_after=None: never gives up
            if await pause(delay, stop):
                return
            continue
        retry.succeeded()
        return


def _waiting_for_projector(exc: BaseException) -> Failure | None:
    if not isinstance(exc, Problem):
        return None
    return Failure(
        "the identity projector",
        "has not answered yet",
        "It runs in the `mgw worker` processes: start them if they are not running.",
    )


def _system(payload: dict[str, Any]) -> dict[str, Any]:
    """An event the API makes on its own: the actor is "system", no request behind it."""
    return {**payload, "actor_id": "system", "ip": None, "user_agent": None}
