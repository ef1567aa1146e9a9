"""Demo data for `mgw up --demo`: real titles and synthetic playback for a few users."""

from __future__ import annotations

import csv
import gzip
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.events import Event
from core.ids import derived_id, utcnow

DATA = Path(__file__).resolve().parent / "data" / "ml-latest-small-overviews.csv.gz"
DEMO_USERS = ("demo-alice", "demo-bob", "demo-carol", "demo-dave", "demo-erin")
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:[-–]\d{0,4})?\)\s*$")
_ARTICLE = re.compile(r"^(?P<rest>.*), (?P<art>The|A|An|Les|La|Le|Il|El|Die|Der|Das)$")


def content_id_for(movie_id: str) -> str:
    return derived_id(f"movielens:{movie_id}")


def split_title(raw: str) -> tuple[str, int | None]:
    """'Matrix, The (1999)' -> ('The Matrix', 1999)."""
    m = _TITLE_YEAR.match(raw.strip())
    title, year = (m["title"], int(m["year"])) if m else (raw.strip(), None)
    a = _ARTICLE.match(title)
    if a:
        title = f"{a['art']} {a['rest']}"
    return title, year


EXTRA = Path(__file__).parent / "data" / "movielens-people-keywords.csv.gz"


def _people_keywords() -> dict[str, tuple[list[str], list[str]]]:
    with gzip.open(EXTRA, "rt", encoding="utf-8", newline="") as fh:
        return {
            r["movieId"]: (
                [p for p in r["people"].split("|") if p],
                [k for k in r["keywords"].split("|") if k],
            )
            for r in csv.DictReader(fh)
        }


def content_events(path: Path = DATA, limit: int | None = None) -> Iterator[Event]:
    extra = _people_keywords()
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if limit is not None and i >= limit:
                return
            title, year = split_title(row["title"])
            genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
            cid = content_id_for(row["movieId"])
            imdb = f"tt{row['imdbId']}" if row.get("imdbId") else None
            tmdb = row.get("tmdbId") or None
            payload = {
                "content_id": cid,
                "kind": "movie",
                "title": title or row["title"],
                "original_title": None,
                "year": year,
                "runtime_min": None,
                "genres": genres,
                "overview": row.get("overview") or None,
                "external_ids": {"imdb": imdb, "tmdb": tmdb.split(".")[0] if tmdb else None},
                "series_id": None,
                "season": None,
                "episode": None,
                "people": extra.get(row["movieId"], ([], []))[0],
                "keywords": extra.get(row["movieId"], ([], []))[1],
            }
            yield Event("ContentUpserted", cid, payload, producer="mgw-demo")


def playback_events(content_ids: list[str], seed: int = 7) -> list[Event]:
    """A few sessions per demo user: some in progress, some finished, some barely started."""
    rng = random.Random(seed)
    now = utcnow()
    events: list[Event] = []
    for user in DEMO_USERS:
        for _ in range(12):
            cid = rng.choice(content_ids)
            duration = float(rng.randint(80, 160) * 60)
            device = rng.choice(("tv-living-room", "phone", "tablet", "web"))
            start = now - timedelta(hours=rng.uniform(1, 24 * 14))
            target = rng.choice((0.02, 0.2, 0.35, 0.5, 0.7, 0.85, 0.97))
            beats = max(1, int(target * duration // 600))
            for b in range(beats + 1):
                position = min(target * duration, b * 600.0)
                kind = (
                    "PlaybackStarted"
                    if b == 0
                    else "PlaybackStopped"
                    if b == beats
                    else "PlaybackProgressed"
                )
                at = start + timedelta(seconds=b * 600)
                events.append(
                    Event(
                        kind,
                        user,
                        {
                            "user_id": user,
                            "content_id": cid,
                            "device_id": device,
                            "position_s": position,
                            "duration_s": duration,
                            "occurred_at": at,
                        },
                        occurred_at=at,
                        producer="mgw-demo",
                    )
                )
    events.sort(key=lambda e: e.occurred_at)
    return events


def library_events(content_ids: list[str], seed: int = 11) -> list[Event]:
    """Each demo viewer's services, a watchlist and a few ratings, as the app would send."""
    from domain.catalog import PLATFORMS
    from domain.library import payload
    from domain.sync.hlc import device_stamp

    rng = random.Random(seed)
    now = utcnow()
    events: list[Event] = []
    for user in DEMO_USERS:
        ops: list[tuple[str, str | None, dict[str, Any]]] = [
            ("services.set", None,
             {"region": "US", "platforms": sorted(rng.sample(PLATFORMS, 3)), "offer_types": []}),
        ]  # fmt: skip
        ops += [("watchlist.add", cid, {}) for cid in rng.sample(content_ids, 8)]
        ops += [
            ("rating.set", cid, {"rating": rng.randint(4, 10)})
            for cid in rng.sample(content_ids, 6)
        ]
        for i, (kind, cid, value) in enumerate(ops):
            at = now - timedelta(days=3, minutes=len(ops) - i)
            ms = int(at.timestamp() * 1000)
            event_type, body = payload(
                kind, user_id=user, op_id=f"demo:{user}:{i}", device_id="demo",
                stamp=device_stamp(ms, 0, "demo").encode(), content_id=cid, value=value,
                at_ms=ms, seen=None,
            )  # fmt: skip
            events.append(
                Event(
                    event_type,
                    user,
                    body,
                    event_id=derived_id(f"demo:{user}:{i}"),
                    occurred_at=at,
                    producer="mgw-demo",
                )  # fmt: skip
            )
    return events


RATINGS = Path(__file__).parent / "data" / "movielens-ratings.csv.gz"


def rating_plays(path: Path = RATINGS, known: set[str] | None = None) -> Iterator[Event]:
    """One finished playback per MovieLens rating: real interest, as plays."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            cid = content_id_for(row["movieId"])
            if known is not None and cid not in known:
                continue
            user = f"ml-{row['userId']}"
            at = datetime.fromtimestamp(int(row["timestamp"]), UTC)
            yield Event(
                "PlaybackStopped",
                user,
                {
                    "user_id": user,
                    "content_id": cid,
                    "device_id": "web",
                    "position_s": 5700.0,
                    "duration_s": 6000.0,
                    "occurred_at": at,
                },
                occurred_at=at,
                producer="mgw-demo",
            )


#: the demo's viewers are accounts too: alice@demo.example ... all with this password
DEMO_USER_PASSWORD = "popcorn-and-a-blanket"


def demo_email(user: str) -> str:
    return f"{user.removeprefix('demo-')}@demo.example"


#: the account the printed examples register; any email and a password the policy takes do
DEMO_EMAIL = "viewer@example.com"
DEMO_PASSWORD = "popcorn-on-the-sofa-at-nine"


def example_requests(base: str, content_id: str) -> str:
    auth = '-H "Authorization: Bearer $TOKEN"'
    return "\n".join(
        [
            "Try:",
            f"  curl -s '{base}/v1/content/{content_id}?region=US'",
            f"  curl -s '{base}/v1/catalog/new?region=US&days=14'",
            f"  curl -s '{base}/v1/catalog/leaving?region=GB&platform=netflix'",
            f"  curl -s '{base}/v1/search?q=funny+sci-fi+from+the+90s&region=US'",
            f"  curl -s '{base}/v1/search?q=toys+that+come+alive+when+nobody+watches'",
            f"  curl -s '{base}/v1/search?q=godfahter'   # did_you_mean",
            f"  curl -s '{base}/v1/autocomplete?q=star+w'",
            f"  curl -s '{base}/v1/search/status'   # vectors are embedded in the background",
            "  # your own playback needs an account: register, then sign in for an access token",
            f"  curl -s -X POST {base}/v1/auth/register -H 'content-type: application/json' \\",
            f'       -d \'{{"email":"{DEMO_EMAIL}","password":"{DEMO_PASSWORD}",'
            '"display_name":"Viewer"}\'',
            f"  TOKEN=$(curl -s -X POST {base}/oauth/token -d grant_type=password "
            "-d client_id=mgw-app \\",
            f"       -d username={DEMO_EMAIL} -d password={DEMO_PASSWORD} \\",
            "       | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
            f"  curl -s {auth} {base}/v1/me/continue-watching",
            f"  # or sign in as a demo viewer who has watched things: {demo_email(DEMO_USERS[0])}"
            f" / {DEMO_USER_PASSWORD}",
            f"  curl -s -X POST {base}/v1/playback/events {auth} "
            "-H 'content-type: application/json' \\",
            f'       -d \'{{"content_id":"{content_id}","device_id":"phone","kind":"progress",'
            '"position_s":1800,"duration_s":4860}\'',
            "  # then read your write: pass the returned token back",
            f"  curl -s {auth} -H 'X-Consistency-Token: <position>' {base}/v1/me/continue-watching",
            "  # recommendations: explained rows, a list on your services, feedback that counts"
            " at once",
            f"  curl -s {auth} '{base}/v1/me/recommendations/rows?limit=5'",
            f"  curl -s {auth} '{base}/v1/me/recommendations?limit=10&services=mine'",
            f"  curl -s -X POST {base}/v1/me/recommendations/feedback {auth} "
            "-H 'content-type: application/json' \\",
            '       -d \'{"content_id":"<an id from the list>","kind":"not_interested"}\'',
            f"  curl -s '{base}/v1/content/{content_id}/similar?limit=5'",
            "  # a device's socket: changes, positions from other devices, commands, notifications",
            f"  python -m websockets '{base.replace('http', 'ws', 1)}/v1/ws?device_id=tv"
            "&access_token='$TOKEN",
            f"  curl -s -X POST {base}/v1/me/devices/tv/commands {auth} "
            "-H 'content-type: application/json' -d '{\"command\":\"pause\"}'",
            f"  curl -s {auth} {base}/v1/me/devices ; curl -s {auth} {base}/v1/me/notifications",
            f"  curl -s {base}/ready ; curl -s {base}/metrics | grep mgw_",
        ]
    )
