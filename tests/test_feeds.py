"""Platform feed normalizers against hand-written fixture feeds, and the feed generator.

No database: the normalizers are pure and the generator writes files."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.catalog import PLATFORMS, FeedError, Offer, PlatformRecord, hash_raw
from domain.catalog.platforms import NORMALIZERS, platform_module, read_records
from mgw.feedgen import generate
from mgw.feedgen.catalog import load_titles

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
Item = tuple[str, PlatformRecord | FeedError]


def dt(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def read_fixture(platform: str) -> list[Item]:
    path = FIXTURES / f"{platform}.{NORMALIZERS[platform].EXTENSION}"
    with path.open("rb") as fh:
        return list(read_records(platform, fh))


def records(items: list[Item]) -> dict[str, PlatformRecord]:
    return {r.platform_id: r for _, r in items if isinstance(r, PlatformRecord)}


def errors(items: list[Item]) -> list[tuple[str, str]]:
    return [(loc, e.field) for loc, e in items if isinstance(e, FeedError)]


def same(rec: PlatformRecord, **expected: Any) -> None:
    """Every field of rec equals `expected`, or its default where not given."""
    want = PlatformRecord(raw_hash=rec.raw_hash, **expected)
    assert dataclasses.asdict(rec) == dataclasses.asdict(want)
    assert len(rec.raw_hash) == 32


# -- per platform: exact normalized fields, the malformed record, the rest comes through ---


def test_netflix() -> None:
    items = read_fixture("netflix")
    recs = records(items)
    same(
        recs["70111470"],
        platform="netflix",
        platform_id="70111470",
        kind="movie",
        title="Toy Story",
        year=1995,
        runtime_min=81,
        genres=("Children", "Animation", "Comedy"),  # "Staff Picks" is no genre
        overview="Led by Woody, Andy's toys live happily in his room until Andy's birthday "
        "brings Buzz Lightyear onto the scene.",
        language="en",
        imdb_id="tt0114709",
        web_url="https://www.netflix.com/title/70111470",
        app_url="nflx://title/70111470",
        offers=(
            Offer("US", "subscription", "UHD", available_from=dt(2024, 1, 1)),
            Offer("US", "ads", "HD", available_from=dt(2024, 1, 1)),
            Offer("GB", "subscription", "HD", None, None, dt(2023, 6, 15), dt(2026, 12, 31)),
        ),
    )
    matrix = recs["20557937"]
    assert (matrix.title, matrix.imdb_id, matrix.tmdb_id) == ("Matrix, The", None, None)
    amelie = recs["81004276"]
    assert amelie.title == "Amélie"  # stripped, otherwise as given
    assert amelie.original_title == "Le Fabuleux Destin d'Amélie Poulain"
    assert amelie.offers == (
        Offer("FR", "subscription", "SD", None, None, dt(2024, 5, 1), dt(2024, 11, 1)),
    )
    show = recs["80057281"]
    assert (show.kind, show.imdb_id, show.runtime_min) == ("series", "tt4574334", None)
    ep = recs["80077210"]
    assert (ep.kind, ep.series_platform_id, ep.season, ep.episode) == ("episode", "80057281", 1, 2)
    assert (ep.title, ep.runtime_min) == ("Chapter Two: The Weirdo on Maple Street", 55)
    assert ep.web_url == "https://www.netflix.com/watch/80077210"
    assert ep.offers == show.offers  # an episode without availability inherits its show's
    assert errors(items) == [("titles[3] id=60000123", "availability[0].startDate")]
    assert len(recs) == 6


def test_prime_video() -> None:
    items = read_fixture("prime_video")
    recs = records(items)
    gti = "amzn1.dv.gti.1cab3f2e-6b2c-4c1a-9a3e-5d2f0e8b7a11"
    same(
        recs[gti],
        platform="prime_video",
        platform_id=gti,
        kind="movie",
        title="Heat",
        year=1995,
        runtime_min=170,  # 10200 s
        genres=("Action", "Crime", "Mystery", "Thriller"),
        overview="Obsessive master thief Neil McCauley leads a top-notch crew on various daring "
        "heists throughout Los Angeles.",
        language="en",
        imdb_id="tt0113277",
        tmdb_id="949",
        web_url=f"https://www.primevideo.com/detail/{gti}",
        app_url=f"aiv://aiv/detail?gti={gti}",
        offers=(
            Offer("US", "subscription", "HD", available_from=dt(2024, 2, 1)),
            Offer("US", "rent", "HD", "3.99", "USD", dt(2024, 2, 1)),
            Offer("GB", "buy", "UHD", "9.99", "GBP", dt(2024, 2, 1), dt(2025, 2, 1)),
        ),
    )
    fargo = recs["amzn1.dv.gti.9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"]
    assert (fargo.imdb_id, fargo.tmdb_id, fargo.runtime_min) == (None, None, 98)
    # Offsets are converted to UTC.
    assert fargo.offers == (
        Offer("CA", "rent", "SD", "4.99", "CAD", dt(2024, 3, 1, 5), dt(2024, 9, 1, 4)),
    )
    series = "amzn1.dv.gti.7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
    eps = sorted((r.season, r.episode, r.title) for r in recs.values() if r.kind == "episode")
    assert eps == [(1, 1, "The Name of the Game"), (1, 2, "Cherry")]
    assert {r.series_platform_id for r in recs.values() if r.kind == "episode"} == {series}
    assert recs[series].kind == "series"
    assert errors(items) == [("line 5", "line"), ("line 7", "offers[0].price.currency")]


def test_disney_plus() -> None:
    items = read_fixture("disney_plus")
    recs = records(items)
    same(
        recs["disney:movie:3d1f0a9c2b7e"],
        platform="disney_plus",
        platform_id="disney:movie:3d1f0a9c2b7e",
        kind="movie",
        title="Up",
        year=2009,
        runtime_min=96,  # 5,760,000 ms
        genres=("Animation", "Children", "Action", "Adventure"),
        overview="Carl Fredricksen spent his entire life dreaming of exploring the globe.",
        language="en",
        web_url="https://www.disneyplus.com/movies/up/3d1f0a9c2b7e",
        app_url="disneyplus://movie/3d1f0a9c2b7e",
        offers=(
            Offer("US", "subscription", "UHD", available_from=dt(2019, 11, 12, 8)),
            Offer("JP", "subscription", "HD", None, None, dt(2020, 6, 10, 15), dt(2026, 6, 10, 15)),
        ),
    )
    lion = recs["disney:movie:9b8a7c6d5e4f"]
    assert lion.offers[1] == Offer("GB", "buy", "UHD", "19.99", "GBP", dt(2020, 3, 24))
    assert all(r.imdb_id is None and r.tmdb_id is None for r in recs.values())
    fantasia = recs["disney:movie:c0ffee000042"]
    assert (fantasia.web_url, fantasia.language, fantasia.offers) == (
        None,
        None,
        (Offer("CA", "subscription", "SD"),),
    )
    eps = [r for r in recs.values() if r.kind == "episode"]
    assert [(e.season, e.episode, e.runtime_min) for e in eps] == [(1, 1, 39), (1, 2, 32)]
    assert {e.series_platform_id for e in eps} == {"disney:series:0a1b2c3d4e5f"}
    assert errors(items) == [("element 4 id=disney:movie:deadbeef0001", "@runtimeMillis")]


def test_hbo_max() -> None:
    items = read_fixture("hbo_max")
    recs = records(items)
    pid = "urn:hbo:feature:GXdu2ZAglVJuAuwEAADbA"
    same(
        recs[pid],
        platform="hbo_max",
        platform_id=pid,
        kind="movie",
        title="The Dark Knight",
        year=2008,
        runtime_min=152,
        genres=("Action", "Crime", "Thriller"),
        overview="Batman raises the stakes in his war on crime.",
        language="en",
        imdb_id="tt0468569",
        web_url="https://play.max.com/movie/GXdu2ZAglVJuAuwEAADbA",
        app_url="hbomax://movie/GXdu2ZAglVJuAuwEAADbA",
        offers=(
            Offer("US", "subscription", "UHD", available_from=dt(2024, 1, 1, 5)),
            Offer("US", "ads", "HD", None, None, dt(2024, 1, 1, 5), dt(2026, 1, 1, 5)),
        ),
    )
    casa = recs["urn:hbo:feature:GYm1Casablanca0000001"]
    assert (casa.language, casa.genres, casa.imdb_id, casa.app_url) == (
        "es",
        ("Drama", "Romance"),
        None,
        None,
    )
    assert casa.runtime_min == 102
    eps = [r for r in recs.values() if r.kind == "episode"]
    assert [(e.title, e.season, e.episode, e.runtime_min) for e in eps] == [
        ("Celebration", 1, 1, 62),
        ("Lifeboats", 1, 3, 58),
    ]
    assert eps[0].offers == recs["urn:hbo:series:GWp3Succession0000001"].offers
    assert errors(items) == [
        ("element 4 id=urn:hbo:feature:GZbadRegion000000001", "Availability[0]@territory")
    ]


def test_hulu() -> None:
    items = read_fixture("hulu")
    recs = records(items)
    pid = "5d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a"
    same(
        recs[pid],
        platform="hulu",
        platform_id=pid,
        kind="movie",
        title="Parasite",
        original_title="기생충",
        year=2019,
        runtime_min=132,
        genres=("Drama", "Thriller"),
        overview="All unemployed, Ki-taek's family takes peculiar interest in the wealthy and "
        "glamorous Parks.",
        language="en",
        imdb_id="tt6751668",
        tmdb_id="496243",
        web_url=f"https://www.hulu.com/movie/parasite-{pid}",
        app_url=f"hulu://movie/{pid}",
        offers=(
            Offer("US", "subscription", "UHD", available_from=dt(2024, 1, 1)),
            Offer("US", "ads", "HD", None, None, dt(2024, 1, 1), dt(2026, 1, 1)),
        ),
    )
    palm = recs["8a7b6c5d-4e3f-4a2b-9c1d-0e9f8a7b6c5d"]
    assert (palm.imdb_id, palm.tmdb_id, palm.offers[0].available_from) == (
        None,
        None,
        dt(2020, 7, 17),
    )
    eps = [r for r in recs.values() if r.kind == "episode"]
    assert [(e.title, e.season, e.episode, e.series_platform_id) for e in eps] == [
        ("Offred", 1, 1, "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"),
        ("Birth Day", 1, 2, "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"),
    ]
    assert errors(items) == [("line 3", "line"), ("line 7", "availability[0].package")]


def test_apple_tv_plus() -> None:
    items = read_fixture("apple_tv_plus")
    recs = records(items)
    pid = "umc.cmc.3eh9r5iz32ggdm4ccvw5igiir"
    same(
        recs[pid],
        platform="apple_tv_plus",
        platform_id=pid,
        kind="movie",
        title="The Godfather",
        year=1972,
        runtime_min=175,  # PT2H55M
        genres=("Drama", "Crime"),
        overview="Spanning the years 1945 to 1955, a chronicle of the fictional Italian-American "
        "Corleone crime family.",
        language="en",
        imdb_id="tt0068646",
        tmdb_id="238",
        web_url=f"https://tv.apple.com/us/movie/the-godfather/{pid}",
        app_url=f"videos://tv.apple.com/movie/{pid}",
        offers=(
            Offer("US", "rent", "UHD", "3.99", "USD", dt(2022, 3, 1, 8)),
            Offer("US", "buy", "UHD", "9.90", "USD", dt(2022, 3, 1, 8)),
            Offer("JP", "buy", "HD", "2000", "JPY", dt(2022, 2, 28, 15), dt(2027, 2, 28, 15)),
        ),
    )
    coda = recs["umc.cmc.3eh9r5iz32ggdm4ccvw5igiis"]
    assert (coda.year, coda.imdb_id, coda.overview) == (2021, None, None)
    pilot, biscuits = (r for r in recs.values() if r.kind == "episode")
    show = recs["umc.cmc.vtoh0mn0xn7t3c643xqonfzy"]
    assert (pilot.title, pilot.season, pilot.episode, pilot.runtime_min) == ("Pilot", 1, 1, 30)
    assert pilot.series_platform_id == show.platform_id and pilot.offers == show.offers
    assert biscuits.offers == (Offer("CA", "subscription", "HD"),)  # its own
    assert errors(items) == [
        ("data[3] id=umc.cmc.5nopricecurrency00000000", "attributes.offers[0].currency")
    ]


def test_paramount_plus() -> None:
    items = read_fixture("paramount_plus")
    recs = records(items)
    pid = "wjQ4RChi6BHHu4MVTncppVuCwu44uq2Q"
    start = dt(2024, 1, 15)
    same(
        recs[pid],
        platform="paramount_plus",
        platform_id=pid,
        kind="movie",
        title="Top Gun",
        year=1986,
        runtime_min=110,
        genres=("Action", "Drama"),
        overview="As students at the United States Navy's elite fighter weapons school compete "
        "to be best in the class, one daring young pilot learns a few things from a civilian "
        "instructor.",
        language="en",
        web_url=f"https://www.paramountplus.com/movies/video/{pid}/",
        app_url=f"pplus://movie/{pid}",
        offers=tuple(
            Offer(region, kind, "HD", available_from=start)
            for region in ("US", "CA", "AU")
            for kind in ("ads", "subscription")
        ),
    )
    mi = recs["Xk9mT2vL8qR4sN6pW1yZ3aB5cD7eF0gH"]
    assert mi.title == "Mission: Impossible" and mi.app_url is None
    assert mi.offers == (
        Offer("GB", "subscription", "UHD", None, None, dt(2024, 6, 1), dt(2025, 12, 31)),
    )
    eps = [r for r in recs.values() if r.kind == "episode"]
    assert [(e.title, e.season, e.episode, e.runtime_min) for e in eps] == [
        ("Daybreak", 1, 1, 92),
        ("Kill the Messenger", 1, 2, 43),
    ]
    assert {e.series_platform_id for e in eps} == {"YsT0neS3r1es00000000000000000001"}
    assert errors(items) == [("row 7", "row"), ("row 8", "available_from")]


def test_peacock() -> None:
    items = read_fixture("peacock")
    recs = records(items)
    pid = "GMO_00000000224510_01"
    window = (dt(2024, 6, 1), dt(2024, 9, 1))
    same(
        recs[pid],
        platform="peacock",
        platform_id=pid,
        kind="movie",
        title="Jaws",
        year=1975,
        runtime_min=124,  # 2:04:00
        genres=("Thriller", "Horror", "Adventure"),
        overview="When an insatiable great white shark terrorizes Amity Island, a police chief, "
        "an oceanographer and a grizzled shark hunter seek to destroy the beast.",
        language="en",
        imdb_id="tt0073195",  # the feed sends a bare 73195
        web_url=f"https://www.peacocktv.com/watch/asset/movies/jaws/{pid}",
        app_url=f"peacock://asset/{pid}",
        offers=(
            Offer("US", "ads", "HD", None, None, *window),  # Premium, and Premium Plus too
            Offer("US", "subscription", "HD", None, None, *window),
        ),
    )
    bttf = recs["GMO_00000000099887_01"]
    assert (bttf.imdb_id, bttf.offers) == (
        None,
        (Offer("US", "free", "SD", None, None, dt(2023, 1, 1)),),
    )
    assert recs["GMO_00000000550001_01"].imdb_id == "tt0386676"
    eps = [r for r in recs.values() if r.kind == "episode"]
    assert [(e.title, e.season, e.episode, e.series_platform_id) for e in eps] == [
        ("Pilot", 1, 1, "GMO_00000000550001_01"),
        ("Diversity Day", 1, 2, "GMO_00000000550001_01"),
    ]
    assert errors(items) == [("row 7", "TIER")]


# -- whole files, webhooks, hashing -------------------------------------------------------

UNREADABLE = {
    "netflix": b'{"titles": [{"netflixId": 1,',
    "disney_plus": b"<dss:catalog xmlns:dss='urn:disney:dss:catalog:2'><dss:movie>",
    "hbo_max": b"<Catalog xmlns='urn:other'></Catalog>",  # the wrong vocabulary
    "apple_tv_plus": b'{"meta": {}, "results": []}',
    "paramount_plus": b"id;type;title\n1;movie;Heat\n",
    "peacock": b"ASSET_ID,ASSET_TYPE,TITLE\n1,FEATURE,Heat\n",
}


@pytest.mark.parametrize("platform", sorted(UNREADABLE))
def test_unreadable_file(platform: str) -> None:
    with pytest.raises(FeedError) as e:
        list(read_records(platform, io.BytesIO(UNREADABLE[platform])))
    assert e.value.field == "file" and e.value.message


def test_xml_entities_are_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        b"<Catalog xmlns='urn:wbd:max:catalog:1'>&lol2;</Catalog>"
    )
    with pytest.raises(FeedError) as e:
        list(read_records("hbo_max", io.BytesIO(bomb)))
    assert e.value.field == "file"


def test_unknown_platform() -> None:
    with pytest.raises(FeedError) as e:
        platform_module("tubi")
    assert e.value.field == "platform"
    assert "'tubi'" in e.value.message and "netflix" in e.value.message
    with pytest.raises(FeedError):
        list(read_records("tubi", io.BytesIO(b"")))


def test_modules_declare_their_format() -> None:
    assert tuple(NORMALIZERS) == PLATFORMS
    for name, mod in NORMALIZERS.items():
        assert name == mod.PLATFORM and mod.MEDIA_TYPE and mod.EXTENSION


WEBHOOK_BODIES = {
    "netflix": b'{"netflixId": 81, "type": "movie", "title": "Heat", "releaseYear": 1995}',
    "apple_tv_plus": b'[{"id": "umc.cmc.x1", "type": "movies", "attributes": {"name": "Heat"}}]',
    "disney_plus": b'<dss:movie xmlns:dss="urn:disney:dss:catalog:2" id="disney:movie:0a">'
    b"<dss:title>Heat</dss:title></dss:movie>",
    "hbo_max": b'<Feature xmlns="urn:wbd:max:catalog:1" '
    b'xmlns:md="http://www.movielabs.com/schema/md/v2.9/md" contentId="urn:hbo:feature:G1">'
    b"<md:LocalizedInfo><md:TitleDisplay>Heat</md:TitleDisplay></md:LocalizedInfo></Feature>",
    "prime_video": b'{"gti": "amzn1.dv.gti.1", "contentType": "MOVIE", "titleName": "Heat"}\n',
    "hulu": b'{"id": "h1", "entity_type": "movie", "name": "Heat"}',
    "paramount_plus": b"content_id,content_type,title,territories,plans\n"
    b"p1,movie,Heat,US,premium\n",
    "peacock": b"ASSET_ID\tASSET_TYPE\tTITLE\tTERRITORY\tTIER\nGMO_1\tFEATURE\tHeat\tUS\tFREE\n",
}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_webhook_body_with_one_record(platform: str) -> None:
    (item,) = list(read_records(platform, io.BytesIO(WEBHOOK_BODIES[platform])))
    assert isinstance(item[1], PlatformRecord), item
    assert (item[1].title, item[1].kind, item[1].platform) == ("Heat", "movie", platform)


def test_hash_raw_ignores_key_order() -> None:
    a = {"title": "Heat", "offers": [{"territory": "US", "offerType": "RENTAL"}], "year": 1995}
    b = {"year": 1995, "offers": [{"offerType": "RENTAL", "territory": "US"}], "title": "Heat"}
    assert hash_raw(a) == hash_raw(b)
    assert hash_raw(a) != hash_raw({**a, "year": 1996})
    line = json.loads((FIXTURES / "prime_video.ndjson").read_bytes().splitlines()[0])
    shuffled = dict(reversed(list(line.items())))
    (one,) = NORMALIZERS["prime_video"].normalize(line)
    (two,) = NORMALIZERS["prime_video"].normalize(shuffled)
    assert one == two


def test_episode_hash_covers_its_series_and_season() -> None:
    recs = records(read_fixture("netflix"))
    ep = recs["80077209"]
    doc = json.loads((FIXTURES / "netflix.json").read_bytes())
    sub = doc["titles"][2]["seasons"][0]["episodes"][0]
    fragment = hash_raw({"series": "80057281", "season": 1, "episode": sub})
    by_module = {r.platform_id: r for r in NORMALIZERS["netflix"].normalize(doc["titles"][2])}
    assert by_module["80077209"].raw_hash == fragment
    assert ep.raw_hash != recs["80077210"].raw_hash != recs["80057281"].raw_hash
    # what an episode inherits from its show counts too: a new window is a change
    doc["titles"][2]["availability"][0]["endDate"] = "2031-01-01"
    changed = records(list(read_records("netflix", io.BytesIO(json.dumps(doc).encode()))))
    assert changed["80077209"].raw_hash != ep.raw_hash


WRONG_TYPES = ([], {}, 12345, True, -1, 1.5, None, "", "garbage", [{"x": 1}])


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    out = []
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


@pytest.mark.parametrize("platform", PLATFORMS)
def test_wrong_types_anywhere_are_feed_errors(platform: str) -> None:
    """Partner input is untrusted: any value of any type, anywhere, normalizes or fails with
    a FeedError, never with another exception that would stop the whole ingest."""
    mod = NORMALIZERS[platform]
    with (FIXTURES / f"{platform}.{mod.EXTENSION}").open("rb") as fh:
        raws = [raw for _, raw in mod.read(fh) if isinstance(raw, dict)]
    for raw in raws:
        for path in _paths(raw):
            for bad in WRONG_TYPES:
                mutated = json.loads(json.dumps(raw))
                node = mutated
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = bad
                try:
                    mod.normalize(mutated)
                except FeedError:
                    pass


@pytest.mark.parametrize("platform", PLATFORMS)
def test_truncated_or_garbled_files_are_feed_errors(platform: str) -> None:
    data = (FIXTURES / f"{platform}.{NORMALIZERS[platform].EXTENSION}").read_bytes()
    for cut in range(0, len(data), max(1, len(data) // 40)):
        for blob in (data[:cut], data[:cut] + b"\xff\xfe<{", data[cut:]):
            try:
                list(read_records(platform, io.BytesIO(blob)))
            except FeedError as e:
                assert e.field == "file"


# -- the generator ------------------------------------------------------------------------


def _read_all(out: Path) -> dict[str, list[Item]]:
    manifest = json.loads((out / "manifest.json").read_text())
    result = {}
    for platform, name in manifest["feeds"].items():
        with (out / name).open("rb") as fh:
            result[platform] = list(read_records(platform, fh))
    return result


def _undated(items: list[Item]) -> list[Any]:
    out = []
    for _, r in items:
        assert isinstance(r, PlatformRecord)
        offers = tuple(
            dataclasses.replace(o, available_from=None, available_until=None) for o in r.offers
        )
        out.append((r.platform_id, r.title, r.year, r.runtime_min, r.imdb_id, r.tmdb_id, offers))
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], datetime]:
    out = tmp_path_factory.mktemp("feeds")
    before = datetime.now(UTC)
    summary = generate(out, scale=1, seed=7)
    return out, summary, before


@pytest.fixture(scope="module")
def feeds(generated: tuple[Path, dict[str, Any], datetime]) -> dict[str, list[Item]]:
    return _read_all(generated[0])


def test_generator_writes_eight_feeds_that_normalize(
    generated: tuple[Path, dict[str, Any], datetime], feeds: dict[str, list[Item]]
) -> None:
    out, summary, _ = generated
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["scale"] == 1
    assert list(manifest["feeds"]) == list(PLATFORMS)
    assert summary["titles"] == 9742 and summary["truth"] == str(out / "truth.csv")
    for platform, items in feeds.items():
        bad = [(loc, str(r)) for loc, r in items if isinstance(r, FeedError)]
        assert bad == [], platform
        assert len(items) == summary[platform] > 1500, platform
        assert {r.kind for _, r in items} == {"movie", "series", "episode"}, platform  # type: ignore[union-attr]
    with (out / "truth.csv").open(newline="") as fh:
        truth = {(r["platform"], r["platform_id"]): r["entity"] for r in csv.DictReader(fh)}
    seen = {(p, r.platform_id) for p, items in feeds.items() for _, r in items}  # type: ignore[union-attr]
    assert seen == set(truth)


def test_generator_windows_follow_the_real_clock(
    generated: tuple[Path, dict[str, Any], datetime], feeds: dict[str, list[Item]]
) -> None:
    now = generated[2]
    offers = [o for items in feeds.values() for _, r in items for o in r.offers]  # type: ignore[union-attr]
    assert any(o.available_from and o.available_from > now for o in offers)  # coming soon
    assert any(
        o.available_until and now < o.available_until < now + timedelta(days=30) for o in offers
    )
    assert any(
        o.available_from and now - timedelta(days=14) < o.available_from <= now for o in offers
    )
    assert {o.offer_type for o in offers} == {"subscription", "free", "ads", "rent", "buy"}
    assert {o.quality for o in offers} == {"SD", "HD", "UHD"}
    priced = [o for o in offers if o.offer_type in ("rent", "buy")]
    assert {o.currency for o in priced} >= {"USD", "GBP", "EUR", "JPY", "BRL"}


def test_generator_noise(
    generated: tuple[Path, dict[str, Any], datetime], feeds: dict[str, list[Item]]
) -> None:
    out, summary, _ = generated
    for kind in (
        "moved_article",
        "original_title",
        "subtitle_dropped",
        "upper_case",
        "ampersand",
        "apostrophe_dropped",
        "extra_space",
        "year_off_by_one",
        "runtime_off",
        "imdb_missing",
        "duplicate",
    ):
        assert summary["noise"].get(kind, 0) > 0, kind
    with (out / "truth.csv").open(newline="") as fh:
        truth = {(r["platform"], r["platform_id"]): r["entity"] for r in csv.DictReader(fh)}
    base = {t.entity: t for t in load_titles()}
    movies = [
        (p, r, base[truth[p, r.platform_id]])
        for p, items in feeds.items()
        for _, r in items
        if isinstance(r, PlatformRecord) and r.kind == "movie"
    ]
    titles = [r.title for _, r, _ in movies]
    assert sum(t.startswith("The ") for t in titles) > 1000  # as platforms show them
    assert any(t.endswith(", The") for t in titles)  # as MovieLens lists them
    assert any(r.year is not None and b.year and abs(r.year - b.year) == 1 for _, r, b in movies)
    assert any(0 < abs((r.runtime_min or 0) - b.runtime) <= 4 for _, r, b in movies)
    assert any(r.language not in (None, "en") for _, r, _ in movies)  # original titles
    assert any(p == "netflix" and r.imdb_id is None for p, r, _ in movies)
    for p in ("disney_plus", "paramount_plus"):  # never carry ids
        assert all(r.imdb_id is None and r.tmdb_id is None for q, r, _ in movies if q == p)
    per_feed = Counter((p, truth[p, r.platform_id]) for p, r, _ in movies)
    assert any(n > 1 for n in per_feed.values())  # one movie twice in a feed, two ids
    # Remakes keep their own identities: same title, other year, other entity.
    by_title: defaultdict[str, set[str]] = defaultdict(set)
    for t in base.values():
        by_title[t.title].add(t.entity)
    assert len(by_title["Psycho"]) >= 2


def test_generator_is_deterministic_but_for_dates(
    generated: tuple[Path, dict[str, Any], datetime],
    feeds: dict[str, list[Item]],
    tmp_path: Path,
) -> None:
    out, _, _ = generated
    generate(tmp_path, scale=1, seed=7, now=datetime(2031, 5, 17, 13, 0, tzinfo=UTC))
    for name in ("truth.csv", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    again = _read_all(tmp_path)
    for platform in PLATFORMS:
        assert _undated(again[platform]) == _undated(feeds[platform]), platform
    assert next(o.available_from for _, r in again["netflix"] for o in r.offers).year >= 2026  # type: ignore[union-attr]


# -- docs/feeds: one schema per platform, naming every field the feeds use ----------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "feeds"


def _schema_names(platform: str) -> set[str]:
    """Every field name a platform's schema declares."""
    names: set[str] = {"#text"}
    json_schema = DOCS / f"{platform}.schema.json"
    if json_schema.exists():
        doc = json.loads(json_schema.read_text())
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                names.update(node.get("properties", {}))
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(doc)
        return names
    from defusedxml.ElementTree import parse

    for xsd in DOCS.glob(f"{platform}*.xsd"):
        names.update(e.get("name", "") for e in parse(xsd).iter())
        names.update(e.get("ref", "").rpartition(":")[2] for e in parse(xsd).iter())
    return names


def _raw_names(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(_raw_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_raw_names(v) for v in node))
    return set()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_schema_declares_every_field_of_the_feeds(
    platform: str, generated: tuple[Path, dict[str, Any], datetime]
) -> None:
    assert (DOCS / f"{platform}.md").exists()
    declared = _schema_names(platform)
    mod = NORMALIZERS[platform]
    for path in (
        FIXTURES / f"{platform}.{mod.EXTENSION}",
        generated[0] / f"{platform}.{mod.EXTENSION}",
    ):
        with path.open("rb") as fh:
            used = _raw_names([raw for _, raw in mod.read(fh) if isinstance(raw, dict)])
        assert used - declared == set(), path.name
