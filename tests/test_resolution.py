"""Entity resolution: the domain rules, then the stream processor and the canonical
catalog on a real embedded log, including merges and determinism under replay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.events import Event
from core.topics import RESOLUTION
from domain.catalog import Offer, PlatformRecord
from domain.catalog.resolution import Member, block_key, match, title_variants
from projections import maintenance
from projections.base import Stores
from projections.registry import by_name
from streams.embedded import EmbeddedLog
from streams.feeds import record_events
from streams.processing import ProjectionPipeline
from streams.publisher import Publisher
from streams.runner import ProjectorLoop

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def member(title: str, year: int | None = 1999, **kw: Any) -> Member:
    return Member(
        kw.get("platform", "netflix"),
        kw.get("platform_id", title),
        kw.get("cluster_id", f"c-{title}-{year}"),
        kw.get("kind", "movie"),
        title_variants(title),
        year,
        kw.get("runtime_min"),
        kw.get("imdb_id"),
        kw.get("tmdb_id"),
    )


def test_title_variants_undo_catalog_habits() -> None:
    assert title_variants("Matrix, The") == title_variants("The Matrix") == ("matrix",)
    assert title_variants("AMÉLIE") == title_variants("Amelie")
    assert title_variants("Rocky II") == ("rocky 2",)
    assert title_variants("Fast & Furious") == title_variants("Fast and Furious")
    assert title_variants("Seven (a.k.a. Se7en)") == ("seven", "se7en")
    assert block_key("The Matrix") == block_key("Matrix, The") == "matrix"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (member("The Matrix"), member("Matrix, The"), True),
        (member("Star Wars: Episode IV - A New Hope", 1977), member("Star Wars", 1977), True),
        # an abbreviation must agree on the year: this is another film
        (member("Star Wars: Episode V", 1980), member("Star Wars", 1977), False),
        (member("The Lion King", 1994), member("The Lion King", 2019), False),  # remake
        (member("Heat", 1995), member("Heat", 1996), True),  # year off by one
        (member("Halloween", 1978), member("Halloween II", 1978), False),  # sequel, same year
        (
            member("Dune", 1984, imdb_id="tt0087182"),
            member("Dune", 1984, imdb_id="tt1160419"),
            False,
        ),  # fmt: skip
        (member("Heat", 1995, runtime_min=170), member("Heat", 1995, runtime_min=100), False),
        (member("Alien", 1979), member("Aliens", 1986), False),
    ],
)
def test_match_rules(a: Member, b: Member, same: bool) -> None:
    assert (match(a, [b]) is not None) is same


def test_external_id_beats_a_closer_title() -> None:
    rec = member("Heat", 1995, imdb_id="tt0113277")
    by_title = member("Heat", 1995, cluster_id="a")
    by_id = member("Heat (Director's Cut)", 1995, cluster_id="b", imdb_id="tt0113277")
    found = match(rec, [by_title, by_id])
    assert found is not None and (found.cluster_id, found.method) == ("b", "external_id")


# -- the processors on a real log ---------------------------------------------------


def rec(platform: str, pid: str, title: str, year: int | None, **kw: Any) -> PlatformRecord:
    offers = kw.pop("offers", (Offer("US", "subscription"),))
    return PlatformRecord(
        platform, pid, f"h-{pid}-{title}", kw.pop("kind", "movie"), title, year=year,
        offers=offers, **kw,
    )  # fmt: skip


CATALOG_RECORDS = [
    rec("netflix", "n1", "The Matrix", 1999, runtime_min=136, imdb_id="tt0133093"),
    rec("hulu", "h1", "Matrix, The", 1999, runtime_min=138),
    rec("disney_plus", "d1", "Star Wars: Episode IV - A New Hope", 1977, runtime_min=121),
    rec("peacock", "p1", "Star Wars", 1977, runtime_min=125),
    rec("hbo_max", "b1", "The Lion King", 1994),
    rec("prime_video", "a1", "The Lion King", 2019),
    # cross-block: a localized title only the IMDb id ties to the English one
    rec("apple_tv_plus", "t1", "Life Is Beautiful", 1997, imdb_id="tt0118799"),
    rec("paramount_plus", "m1", "La vita è bella", 1997),
    rec("netflix", "n2", "Breaking Bad", 2008, kind="series"),
    rec(
        "netflix",
        "n2e1",
        "Pilot",
        2008,
        kind="episode",
        series_platform_id="n2",
        season=1,
        episode=1,
    ),  # fmt: skip
    rec("hulu", "h2", "Breaking Bad", 2008, kind="series"),
    rec(
        "hulu", "h2e1", "Pilot", 2008, kind="episode", series_platform_id="h2", season=1, episode=1
    ),  # fmt: skip
]
LATE_EVIDENCE = rec("paramount_plus", "m1", "La vita è bella", 1997, imdb_id="tt0118799")
#: a record whose IMDb id is corrected: its first version's id is evidence too, so the
#: join must not depend on whether both versions land in one batch
CORRECTED = [
    rec("netflix", "n9", "Bar Different", 2001, imdb_id="tt1000001"),
    rec("hulu", "h9", "Foo", 2001, imdb_id="tt1000001"),
    rec("hulu", "h9", "Foo", 2001, imdb_id="tt1000002"),
]


def events_of(records: Sequence[PlatformRecord]) -> list[Event]:
    series = {r.platform_id: r.title for r in records if r.kind == "series"}
    out: list[Event] = []
    for r in records:
        out += record_events(r, series.get(r.series_platform_id or ""), "test", None)
    return out


@pytest.fixture
async def elog(db_uri: str) -> AsyncIterator[EmbeddedLog]:
    log = await EmbeddedLog(db_uri).open()
    yield log
    await log.close()


async def project(log: EmbeddedLog, stores: Stores, *, batch_size: int = 10000) -> None:
    for name in ("resolution", "availability", "catalog"):
        await by_name(name).prepare(stores)
        await ProjectorLoop(
            ProjectionPipeline(by_name(name), stores, log), log, batch_size=batch_size, linger_ms=0
        ).catch_up()


async def content_of(stores: Stores) -> dict[tuple[str, str], str]:
    async with stores.pg.connection() as conn:
        cur = await conn.execute("SELECT platform, platform_id, content_id FROM platform_titles")
        return {(p, i): c for p, i, c in await cur.fetchall()}


async def test_records_of_one_title_resolve_to_one_entity(
    elog: EmbeddedLog, stores: Stores
) -> None:
    await Publisher(elog).publish_many(events_of(CATALOG_RECORDS))
    await project(elog, stores)
    ids = await content_of(stores)
    assert ids["netflix", "n1"] == ids["hulu", "h1"]
    assert ids["disney_plus", "d1"] == ids["peacock", "p1"]
    assert ids["hbo_max", "b1"] != ids["prime_video", "a1"]
    assert ids["apple_tv_plus", "t1"] != ids["paramount_plus", "m1"]  # no evidence yet
    assert ids["netflix", "n2"] == ids["hulu", "h2"]
    assert ids["netflix", "n2e1"] == ids["hulu", "h2e1"] != ids["netflix", "n2"]
    async with stores.pg.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT title, year, runtime_min, imdb_id, platforms, source_count, series_id"
                " FROM content WHERE content_id = %s",
                (ids["netflix", "n1"],),
            )
        ).fetchone()
        ep = await (
            await conn.execute(
                "SELECT kind, series_id, season, episode FROM content WHERE content_id = %s",
                (ids["netflix", "n2e1"],),
            )
        ).fetchone()
    # runtime is the lower median of 136 and 138; the IMDb id comes from the one source
    assert row == ("The Matrix", 1999, 136, "tt0133093", ["hulu", "netflix"], 2, None)
    assert ep is not None and ep[0] == "episode" and ep[2:] == (1, 1)
    assert ep[1] in {ids["netflix", "n2"]}


async def test_late_evidence_merges_entities_and_old_ids_follow(
    elog: EmbeddedLog, stores: Stores
) -> None:
    await Publisher(elog).publish_many(events_of(CATALOG_RECORDS))
    await project(elog, stores)
    before = await content_of(stores)
    a, b = before["apple_tv_plus", "t1"], before["paramount_plus", "m1"]
    await Publisher(elog).publish_many(events_of([LATE_EVIDENCE]))
    await project(elog, stores)
    after = await content_of(stores)
    survivor, loser = min(a, b), max(a, b)
    assert after["apple_tv_plus", "t1"] == after["paramount_plus", "m1"] == survivor
    from core.codec import default_codec

    decoded = [default_codec().decode(r.value) for r in await _read(elog, RESOLUTION.name)]
    merges = [p for t, p in decoded if t == "ContentMerged"]
    assert merges == [{"merged_id": loser, "into_id": survivor, "reason": "imdb tt0118799"}]
    async with stores.pg.connection() as conn:
        gone = await (
            await conn.execute("SELECT count(*) FROM content WHERE content_id = %s", (loser,))
        ).fetchone()
    assert gone == (0,)
    from projections.content import get_content

    doc = await get_content(stores.pg, loser, now=NOW)
    assert doc is not None and doc["id"] == survivor and loser in doc["merged_ids"]
    assert doc["platform_ids"] == {"apple_tv_plus": ["t1"], "paramount_plus": ["m1"]}


async def _read(log: EmbeddedLog, topic: str) -> list[Any]:
    out: list[Any] = []
    for p in range(log.partitions(topic)):
        out += await log.read(topic, p, 0, 100000)
    return out


async def test_replay_and_other_batch_sizes_give_the_same_ids(
    elog: EmbeddedLog, stores: Stores
) -> None:
    await Publisher(elog).publish_many(events_of(CATALOG_RECORDS))
    await Publisher(elog).publish_many(events_of([LATE_EVIDENCE]))
    for r in CORRECTED:
        await Publisher(elog).publish_many(events_of([r]))
    await project(elog, stores, batch_size=1)
    first = await content_of(stores)
    assert first["netflix", "n9"] == first["hulu", "h9"]
    sums = {n: await maintenance.checksum(stores, by_name(n)) for n in ("resolution", "catalog")}
    log_size = len(await _read(elog, RESOLUTION.name))
    for name in ("resolution", "catalog"):
        await maintenance.clear(stores, by_name(name))
    for name in ("resolution", "catalog"):  # replay: nothing is emitted again
        await ProjectorLoop(
            ProjectionPipeline(by_name(name), stores, elog, dead_letters=False, emit=False),
            elog,
            batch_size=10000,
            linger_ms=0,
        ).catch_up()
    assert await content_of(stores) == first
    assert len(await _read(elog, RESOLUTION.name)) == log_size
    for n, s in sums.items():
        assert await maintenance.checksum(stores, by_name(n)) == s, n


async def test_availability_windows_and_region_filter(elog: EmbeddedLog, stores: Stores) -> None:
    soon = NOW + timedelta(days=5)
    later = NOW + timedelta(days=40)
    records = [
        rec("netflix", "n1", "The Matrix", 1999, offers=(
            Offer("US", "subscription", "UHD", available_from=NOW - timedelta(days=3)),
            Offer("GB", "subscription", "HD", available_until=soon),
        )),
        rec("prime_video", "a9", "Matrix, The", 1999, offers=(
            Offer("US", "rent", "HD", "3.99", "USD", available_from=later),
            Offer("US", "buy", "UHD", "14.99", "USD"),
        )),
    ]  # fmt: skip
    await Publisher(elog).publish_many(events_of(records))
    await project(elog, stores)
    ids = await content_of(stores)
    cid = ids["netflix", "n1"]
    assert ids["prime_video", "a9"] == cid
    from projections.content import get_content

    doc = await get_content(stores.pg, cid, now=NOW, region="US")
    assert doc is not None
    offers = {(o["platform"], o["offer_type"]): o for o in doc["availability"]}
    assert set(offers) == {
        ("netflix", "subscription"),
        ("prime_video", "rent"),
        ("prime_video", "buy"),
    }
    assert offers["prime_video", "rent"]["available_now"] is False  # starts in 40 days
    assert offers["prime_video", "buy"]["price"] == "14.99"
    assert offers["netflix", "subscription"]["quality"] == "UHD"
    gb = await get_content(stores.pg, cid, now=NOW, region="GB")
    assert gb is not None and [o["region"] for o in gb["availability"]] == ["GB"]
    expired = await get_content(stores.pg, cid, now=soon + timedelta(seconds=1), region="GB")
    assert expired is not None and expired["availability"][0]["available_now"] is False


async def test_episodes_follow_when_their_series_are_joined(
    elog: EmbeddedLog, stores: Stores
) -> None:
    # one show under two titles in two blocks: only the IMDb id ties them, and only later
    first = [
        rec("netflix", "s1", "Money Heist", 2017, kind="series", imdb_id="tt6468322"),
        rec("netflix", "s1e1", "Episode 1", 2017, kind="episode", series_platform_id="s1",
            season=1, episode=1),
        rec("hulu", "s2", "La Casa de Papel", 2017, kind="series"),
        rec("hulu", "s2e1", "Efectuar lo acordado", 2017, kind="episode",
            series_platform_id="s2", season=1, episode=1),
        rec("hulu", "s2e2", "Imprudencias letales", 2017, kind="episode",
            series_platform_id="s2", season=1, episode=2),
    ]  # fmt: skip
    await Publisher(elog).publish_many(events_of(first))
    await project(elog, stores)
    before = await content_of(stores)
    assert before["netflix", "s1e1"] != before["hulu", "s2e1"]
    later = rec("hulu", "s2", "La Casa de Papel", 2017, kind="series", imdb_id="tt6468322")
    await Publisher(elog).publish_many(events_of([later]))
    await project(elog, stores)
    after = await content_of(stores)
    assert after["netflix", "s1"] == after["hulu", "s2"]
    assert after["netflix", "s1e1"] == after["hulu", "s2e1"] != after["hulu", "s2e2"]
    # a new episode of the joined show meets its counterpart at once
    newer = rec("netflix", "s1e2", "Episode 2", 2017, kind="episode", series_platform_id="s1",
                season=1, episode=2)  # fmt: skip
    await Publisher(elog).publish_many(events_of([newer]))
    await project(elog, stores)
    final = await content_of(stores)
    assert final["netflix", "s1e2"] == final["hulu", "s2e2"]
