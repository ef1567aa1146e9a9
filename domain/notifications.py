"""Notifications, the pure part: which kinds exist and what a preference allows, what
makes a notification once, the parental check for an account, when a watchlist title
counts as leaving, the words of each kind, the digest mail and its unsubscribe token.

No I/O: projections/notifications.py decides and folds, api/notifications.py serves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from domain.identity.emails import PRODUCT, _button, _clean_name, _message
from domain.identity.ratings import allowed, level

AVAILABLE = "available"
LEAVING = "leaving"
NEW_EPISODE = "new_episode"
BROADCAST = "broadcast"
KINDS: tuple[str, ...] = (AVAILABLE, LEAVING, NEW_EPISODE, BROADCAST)
#: the record key of every broadcast: one partition keeps them in the order admins sent them
BROADCASTS_KEY = "broadcasts"
DIGEST_MODES: tuple[str, ...] = ("off", "daily")
#: a watchlist title whose last offer on the user's services ends this soon is "leaving"
LEAVING_WINDOW = timedelta(days=7)
#: at most this many notifications are listed in one digest mail (the rest: "and N more")
DIGEST_MAX_ITEMS = 20

PLATFORM_NAMES: Mapping[str, str] = {
    "netflix": "Netflix",
    "prime_video": "Prime Video",
    "disney_plus": "Disney+",
    "hbo_max": "HBO Max",
    "hulu": "Hulu",
    "apple_tv_plus": "Apple TV+",
    "paramount_plus": "Paramount+",
    "peacock": "Peacock",
}


# -- preferences and identity ---------------------------------------------------------


def kind_allowed(kinds: Mapping[str, bool], kind: str) -> bool:
    """Every kind is on until the user turns it off."""
    return bool(kinds.get(kind, True))


def preferences_view(kinds: Mapping[str, bool], digest: str) -> dict[str, Any]:
    return {"kinds": {k: kind_allowed(kinds, k) for k in KINDS}, "digest": digest}


def episode_key(series_id: str, season: int, episode: int) -> str:
    """Once per episode of a series, whichever source (and content id) brings it."""
    return f"{series_id}:s{season}e{episode}"


# -- parental limits ------------------------------------------------------------------


def account_limit(max_ratings: Iterable[str | None]) -> str | None:
    """The limit an account-wide notification honours: the strictest of its profiles.

    A notification reaches every device of the account and no push knows which profile
    a device shows, so a title one of the profiles may not see is not announced to any.
    """
    limits = [r for r in max_ratings if r is not None]
    return min(limits, key=lambda r: (level(r), r)) if limits else None


def may_notify(
    rating: str | None, max_ratings: Iterable[str | None], *, unrated_as: str = "strictest"
) -> bool:
    return allowed(rating, account_limit(max_ratings), unrated_as=unrated_as)


# -- availability ---------------------------------------------------------------------


def offers_now(offers: Iterable[Mapping[str, Any]], at: datetime) -> set[tuple[str, str]]:
    """The (region, offer type) pairs of an AvailabilityChanged that are open at ``at``."""
    return {
        (o["region"], o["offer_type"])
        for o in offers
        if (o.get("available_from") is None or o["available_from"] <= at)
        and (o.get("available_until") is None or o["available_until"] > at)
    }


def leaving_at(
    ends: Sequence[datetime | None], now: datetime, window: timedelta = LEAVING_WINDOW
) -> datetime | None:
    """When a title leaves the user's services: every offer on them ends, the last
    within ``window`` of ``now``; None while one of them stays (or none is there)."""
    if not ends or any(e is None for e in ends):
        return None
    last = max(e for e in ends if e is not None)
    return last if now < last <= now + window else None


# -- words ----------------------------------------------------------------------------


def platform_name(platform: str) -> str:
    return PLATFORM_NAMES.get(platform, platform)


def available_text(title: str, platform: str, region: str) -> tuple[str, str]:
    return (
        f"{title} is now on {platform_name(platform)}",
        f"{title}, on your watchlist, is streaming on {platform_name(platform)} ({region}).",
    )


def leaving_text(title: str, platform: str, until: datetime) -> tuple[str, str]:
    day = until.strftime("%d %b %Y")
    return (
        f"{title} leaves {platform_name(platform)} soon",
        f"{title}, on your watchlist, leaves your services on {day}.",
    )


def episode_text(series_title: str, season: int, episode: int, title: str) -> tuple[str, str]:
    return (
        f"New episode of {series_title}",
        f"Season {season}, episode {episode}: {title} is out.",
    )


# -- the digest and its unsubscribe link ------------------------------------------------


def unsubscribe_token(key: bytes, user_id: str) -> str:
    """``<user id>.<HMAC>``, base64url: a link that needs no sign-in and cannot be
    forged for another account. It does not expire: RFC 8058 links must keep working
    for as long as the mail sits in an inbox."""
    uid = base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")
    return f"{uid}.{_mac(key, user_id)}"


def unsubscribe_user(key: bytes, token: str) -> str | None:
    """The user id a token was made for, or None when it is not one of ours."""
    uid_b64, dot, mac = token.partition(".")
    if not dot or len(token) > 512:
        return None
    try:
        user_id = base64.urlsafe_b64decode(uid_b64 + "=" * (-len(uid_b64) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return user_id if hmac.compare_digest(mac, _mac(key, user_id)) else None


def _mac(key: bytes, user_id: str) -> str:
    digest = hmac.new(key, b"digest-unsubscribe:" + user_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def digest_message(
    *,
    to: str,
    display_name: str,
    sender: str,
    day: date,
    items: Sequence[Mapping[str, Any]],
    more: int,
    unsubscribe_link: str,
    list_url: str,
    now: datetime | None = None,
) -> EmailMessage:
    """The daily digest: the unread notifications (title and body each), a link to the
    list, and the one-click unsubscribe of RFC 8058 (List-Unsubscribe with a POST)."""
    display_name = _clean_name(display_name)
    lines = [f"- {i['title']}\n  {i['body']}" for i in items]
    if more:
        lines.append(f"... and {more} more")
    text = (
        f"Hi {display_name or 'there'},\n\n"
        f"what happened on {PRODUCT} for you ({day.isoformat()}):\n\n"
        + "\n".join(lines)
        + f"\n\nAll your notifications: {list_url}\n\n"
        f"You get this mail because you turned on the daily digest. Unsubscribe with one"
        f" click:\n{unsubscribe_link}\n"
    )
    body = (
        f"<p>Hi {html.escape(display_name or 'there')},</p>"
        f"<p>what happened on {PRODUCT} for you ({day.isoformat()}):</p><ul>"
        + "".join(
            f"<li><strong>{html.escape(str(i['title']))}</strong><br>"
            f"{html.escape(str(i['body']))}</li>"
            for i in items
        )
        + (f"<li>... and {more} more</li>" if more else "")
        + "</ul>"
        + _button(unsubscribe_link, "Unsubscribe from the daily digest")
    )
    msg = _message(
        to=to,
        display_name=display_name,
        sender=sender,
        subject=f"Your {PRODUCT} digest: {len(items) + more} new",
        text=text,
        html_body=body,
        now=now,
        link=unsubscribe_link,
    )
    msg["List-Unsubscribe"] = f"<{unsubscribe_link}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return msg
