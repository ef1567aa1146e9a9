"""Viewing profiles and parental controls.

An account has up to 8 profiles (projections/identity/account_data.py decides the limit); the
first, the *default* profile, comes with the account and cannot be deleted. A profile may
carry a maximum rating (MPAA G ... NC-17 or TV-Y ... TV-MA, one ladder:
domain/identity/ratings.py). Content queries honour the *active* profile's limit: the
profile named by the ``X-Profile-Id`` header (one of the caller's own, else 404), or the
account's default profile; anonymous callers have no limit (``rating_limit``).

* ``GET /v1/me/profiles``, ``GET /v1/me/profiles/{id}``
* ``POST /v1/me/profiles {name, kids?, max_rating?, pin?}``: a limit given at creation
  needs no PIN (a new profile restricts nothing that was open before); once the account
  has a PIN, a profile *without* a limit needs it. A kids profile without a
  ``max_rating`` gets ``TV-Y7`` (children 7 and older: level 1 of the ladder).
* ``PATCH /v1/me/profiles/{id} {name}``: renaming only; the limit goes through the PIN.
* ``DELETE /v1/me/profiles/{id}``: never the default profile (so never the last one); a
  profile with a limit needs the PIN in ``X-Parental-Pin`` once one is set.

Switching profiles is the app's: the API trusts ``X-Profile-Id`` from the account's own
session, so a profile lock (a PIN to enter an unlimited profile) belongs in the app.
* ``PUT /v1/me/parental-pin {pin, password | current_pin}``: 4 to 8 digits, stored as an
  argon2id hash. The first PIN is set with the account password, a later one with the
  current PIN.
* ``PUT /v1/me/profiles/{id}/parental-controls {max_rating, pin}``: changing (or lifting,
  ``null``) a limit needs the PIN. PIN and password checks count against the ``pin``
  rate limit (per address and per account).

Every change is an identity event decided by the identity projector (api/identity/commands.py
``decide``); every route needs the ``profile`` scope, and a profile id of another account
is not found (404), never shown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import Principal, require
from api.context import ctx
from api.errors import Problem
from api.identity.commands import decide, identity_event
from api.ratelimit import limit
from api.requests import read_json, reject_nul
from core.ids import new_id
from domain.identity.ratings import RATINGS, allowed, normalize_rating
from projections.identity.account_data import MAX_PROFILES, Profile, profile_of, profiles_of
from projections.identity.accounts import User, default_profile_id, user_by_id

PROFILE_HEADER = "X-Profile-Id"
#: the limit a kids profile created without one gets
KIDS_DEFAULT_RATING = "TV-Y7"
PIN_PATTERN = r"^[0-9]{4,8}$"
MAX_NAME = 64


# -- the active profile's limit (read by search, content and catalog lists) -------------


@dataclass(frozen=True, slots=True)
class RatingLimit:
    """What the caller may see: ``max_rating`` None is no limit."""

    max_rating: str | None
    unrated_as: str
    profile_id: str | None = None

    def allows(self, rating: str | None) -> bool:
        return allowed(rating, self.max_rating, unrated_as=self.unrated_as)


async def active_profile(request: Request, principal: Principal | None) -> Profile | None:
    """The profile the request acts as: ``X-Profile-Id`` (one of the caller's profiles,
    else 404 naming the header), or the account's default profile."""
    header = request.headers.get(PROFILE_HEADER)
    wanted = header.strip() if header is not None else None
    if principal is None:
        if wanted:
            raise Problem(
                401,
                f"{PROFILE_HEADER} needs a signed-in caller: send Authorization: Bearer ...",
                field=PROFILE_HEADER,
                headers={"WWW-Authenticate": 'Bearer realm="mgw"'},
            )
        return None
    profile_id = wanted or default_profile_id(principal.user_id)
    if len(profile_id) > 128 or "\x00" in profile_id:
        profile = None
    else:
        async with ctx(request).stores.pg.connection() as conn:
            profile = await profile_of(conn, principal.user_id, profile_id)
    if profile is None and wanted:
        raise Problem(
            404, f"{PROFILE_HEADER}: no such profile in your account", field=PROFILE_HEADER
        )
    return profile


async def rating_limit(request: Request, principal: Principal | None) -> RatingLimit:
    profile = await active_profile(request, principal)
    return RatingLimit(
        max_rating=profile.max_rating if profile else None,
        unrated_as=ctx(request).settings.identity.unrated_as,
        profile_id=profile.profile_id if profile else None,
    )


def blocked(rating: str | None, limit: RatingLimit) -> Problem:
    """The 403 for a title above the active profile's limit."""
    what = f"rated {rating}" if rating else "not rated (unrated titles count as the strictest)"
    return Problem(
        403,
        f"blocked by parental controls: this title is {what}, above the profile's limit"
        f" {limit.max_rating}",
        field=PROFILE_HEADER,
        title="Blocked by parental controls",
    )


# -- bodies ----------------------------------------------------------------------------


def _rating(v: str | None) -> str | None:
    if v is None:
        return None
    canonical = normalize_rating(v)
    if canonical is None:
        raise ValueError(f"unknown rating; one of {', '.join(RATINGS)}, or null for no limit")
    return canonical


def _name(v: str) -> str:
    if not v.isprintable():
        raise ValueError("must be printable text")
    return v


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=MAX_NAME)
    kids: bool = False
    max_rating: str | None = Field(default=None, max_length=32)
    #: needed, once the account has a PIN, for a profile without a limit
    pin: str | None = Field(default=None, max_length=64)

    _nul = field_validator("name", "max_rating", "pin")(reject_nul)
    _printable = field_validator("name")(_name)
    _canonical = field_validator("max_rating")(_rating)


class RenameIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=MAX_NAME)

    _nul = field_validator("name")(reject_nul)
    _printable = field_validator("name")(_name)


class PinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pin: str = Field(pattern=PIN_PATTERN)
    current_pin: str | None = Field(default=None, max_length=64)
    password: str | None = Field(default=None, min_length=1, max_length=1024)


class ControlsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    max_rating: str | None = Field(max_length=32)  # required: null lifts the limit
    pin: str = Field(min_length=1, max_length=64)

    _canonical = field_validator("max_rating")(_rating)


# -- helpers ---------------------------------------------------------------------------


def _public(p: Profile) -> dict[str, Any]:
    return {**p.public(), "default": p.profile_id == default_profile_id(p.user_id)}


async def _mine(request: Request, me: Principal) -> Profile:
    profile_id: str = request.path_params["profile_id"]
    if len(profile_id) > 128 or "\x00" in profile_id:
        raise Problem(404, "no such profile", field="profile_id")
    async with ctx(request).stores.pg.connection() as conn:
        profile = await profile_of(conn, me.user_id, profile_id)
    if profile is None:
        raise Problem(404, "no such profile", field="profile_id")
    return profile


async def _reread(request: Request, me: Principal, profile_id: str) -> Profile:
    async with ctx(request).stores.pg.connection() as conn:
        profile = await profile_of(conn, me.user_id, profile_id)
    if profile is None:  # deleted by a concurrent request
        raise Problem(404, "no such profile", field="profile_id")
    return profile


async def _user(request: Request, me: Principal) -> User:
    async with ctx(request).stores.pg.connection() as conn:
        user = await user_by_id(conn, me.user_id)
    if user is None:
        raise Problem(404, "no such account", field="Authorization")
    return user


async def _verify(hasher: Any, phc: str | None, secret: str | None) -> bool:
    if not phc or not secret:
        return False
    return bool(await asyncio.to_thread(hasher.verify, phc, secret))


async def _pin_if_set(request: Request, me: Principal, pin: str | None) -> None:
    """When the account has a parental PIN, ``pin`` must be it (403 otherwise)."""
    user = await _user(request, me)
    if user.parental_pin_hash is None:
        return
    await limit(request, "pin", f"acct:{me.user_id}")
    if not pin or not await _verify(ctx(request).identity.pin_hasher, user.parental_pin_hash, pin):
        raise Problem(
            403,
            "pin: parental controls are on: this needs the account's PIN"
            ' (body "pin", or X-Parental-Pin on DELETE)',
            field="pin",
        )


def _refused(outcome: str, detail: dict[str, Any]) -> Problem:
    if outcome == "limit":
        return Problem(
            409,
            f"an account has at most {detail.get('max', MAX_PROFILES)} profiles",
            field="profiles",
        )
    if outcome == "invalid":
        return Problem(404, "no such profile", field="profile_id")
    return Problem(409, f"the change was refused ({outcome})", field=detail.get("field"))


# -- routes ----------------------------------------------------------------------------


async def list_profiles(request: Request) -> Response:
    me = await require(request, "profile")
    async with ctx(request).stores.pg.connection() as conn:
        items = await profiles_of(conn, me.user_id)
        user = await user_by_id(conn, me.user_id)
    return JSONResponse(
        {
            "items": [_public(p) for p in items],
            "max": MAX_PROFILES,
            "pin_set": bool(user and user.parental_pin_hash),
        }
    )


async def get_profile(request: Request) -> Response:
    me = await require(request, "profile")
    return JSONResponse(_public(await _mine(request, me)))


async def create_profile(request: Request) -> Response:
    me = await require(request, "profile")
    body = await read_json(request, ProfileIn)
    max_rating = body.max_rating
    if body.kids and max_rating is None:
        max_rating = KIDS_DEFAULT_RATING
    c = ctx(request)
    if max_rating is None:  # else a limited viewer would make an unlimited profile
        await _pin_if_set(request, me, body.pin)
    profile_id = new_id()
    outcome, detail = await decide(
        c,
        identity_event(
            request,
            "ProfileCreated",
            me.user_id,
            {
                "user_id": me.user_id,
                "profile_id": profile_id,
                "name": body.name,
                "max_rating": max_rating,
                "kids": body.kids,
            },
        ),
    )
    if outcome != "ok":
        raise _refused(outcome, detail)
    profile = await _reread(request, me, profile_id)
    return JSONResponse(
        _public(profile), status_code=201, headers={"Location": f"/v1/me/profiles/{profile_id}"}
    )


async def rename_profile(request: Request) -> Response:
    me = await require(request, "profile")
    profile = await _mine(request, me)
    body = await read_json(request, RenameIn)
    outcome, detail = await decide(
        ctx(request),
        identity_event(
            request,
            "ProfileUpdated",
            me.user_id,
            {"user_id": me.user_id, "profile_id": profile.profile_id, "name": body.name},
        ),
    )
    if outcome != "ok":
        raise _refused(outcome, detail)
    return JSONResponse(_public(await _reread(request, me, profile.profile_id)))


async def delete_profile(request: Request) -> Response:
    me = await require(request, "profile")
    profile = await _mine(request, me)
    if profile.profile_id == default_profile_id(me.user_id):
        raise Problem(409, "the account's default profile cannot be deleted", field="profile_id")
    if profile.max_rating is not None:  # removing a limited profile is lifting its limit
        await _pin_if_set(request, me, request.headers.get("X-Parental-Pin"))
    outcome, detail = await decide(
        ctx(request),
        identity_event(
            request,
            "ProfileDeleted",
            me.user_id,
            {"user_id": me.user_id, "profile_id": profile.profile_id},
        ),
    )
    if outcome != "ok":
        raise _refused(outcome, detail)
    return Response(status_code=204)


async def set_pin(request: Request) -> Response:
    me = await require(request, "profile")
    body = await read_json(request, PinIn)
    await limit(request, "pin", f"acct:{me.user_id}")
    c = ctx(request)
    user = await _user(request, me)
    if user.parental_pin_hash is None:
        if user.password_hash is None:
            raise Problem(
                403,
                "this account has no password to confirm the first PIN with: set a password"
                " first (POST /v1/auth/password/forgot)",
                field="password",
            )
        if body.password is None:
            raise Problem(
                403, "password: setting the first PIN needs the account password",
                field="password",
            )  # fmt: skip
        if not await _verify(c.identity.passwords, user.password_hash, body.password):
            raise Problem(403, "password: not the account password", field="password")
    else:
        if body.current_pin is None:
            raise Problem(
                403, "current_pin: changing the PIN needs the current one", field="current_pin"
            )
        if not await _verify(c.identity.pin_hasher, user.parental_pin_hash, body.current_pin):
            raise Problem(403, "current_pin: wrong PIN", field="current_pin")
    pin_hash = await asyncio.to_thread(c.identity.pin_hasher.hash, body.pin)
    outcome, detail = await decide(
        c,
        identity_event(
            request, "ParentalPinSet", me.user_id, {"user_id": me.user_id, "pin_hash": pin_hash}
        ),
    )
    if outcome != "ok":
        raise _refused(outcome, detail)
    return Response(status_code=204)


async def set_controls(request: Request) -> Response:
    me = await require(request, "profile")
    profile = await _mine(request, me)
    body = await read_json(request, ControlsIn)
    await limit(request, "pin", f"acct:{me.user_id}")
    c = ctx(request)
    user = await _user(request, me)
    if user.parental_pin_hash is None:
        raise Problem(
            403,
            "no parental PIN is set for this account: set one first (PUT /v1/me/parental-pin)",
            field="pin",
        )
    if not await _verify(c.identity.pin_hasher, user.parental_pin_hash, body.pin):
        raise Problem(403, "pin: wrong PIN", field="pin")
    outcome, detail = await decide(
        c,
        identity_event(
            request,
            "ParentalControlsSet",
            me.user_id,
            {
                "user_id": me.user_id,
                "profile_id": profile.profile_id,
                "max_rating": body.max_rating,
            },
        ),
    )
    if outcome != "ok":
        raise _refused(outcome, detail)
    return JSONResponse(_public(await _reread(request, me, profile.profile_id)))


routes = [
    Route("/v1/me/profiles", list_profiles, methods=["GET"]),
    Route("/v1/me/profiles", create_profile, methods=["POST"]),
    Route("/v1/me/profiles/{profile_id}", get_profile, methods=["GET"]),
    Route("/v1/me/profiles/{profile_id}", rename_profile, methods=["PATCH"]),
    Route("/v1/me/profiles/{profile_id}", delete_profile, methods=["DELETE"]),
    Route("/v1/me/profiles/{profile_id}/parental-controls", set_controls, methods=["PUT"]),
    Route("/v1/me/parental-pin", set_pin, methods=["PUT"]),
]
