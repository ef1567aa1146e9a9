"""Query intent: filters pulled out of plain-words queries, the rest kept as text."""

from __future__ import annotations

import random
import time

import pytest

from domain.catalog import PLATFORMS
from domain.discovery.intent import Intent, IntentParser

GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
NOW = 2025
PARSER = IntentParser(GENRES, PLATFORMS, people=["Tom Hanks", "Francis Ford Coppola", "Cher"])


def parse(query: str) -> Intent:
    return PARSER.parse(query, now_year=NOW)


def test_the_headline_query() -> None:
    got = parse("funny sci-fi from the 90s on netflix")
    assert got == Intent(
        text="",
        genres=("Comedy", "Sci-Fi"),
        year_from=1990,
        year_to=1999,
        platforms=("netflix",),
        matched=("funny", "sci-fi", "from the 90s", "on netflix"),
    )
    assert got.as_dict() == {
        "text": "",
        "genres": ["Comedy", "Sci-Fi"],
        "year_from": 1990,
        "year_to": 1999,
        "platforms": ["netflix"],
        "matched": ["funny", "sci-fi", "from the 90s", "on netflix"],
    }


def test_dangling_connectors_go_inner_words_stay() -> None:
    got = parse("that animated movie where toys come alive")
    assert (got.text, got.kind, got.genres) == ("toys come alive", "movie", ("Animation",))
    assert parse("documentaries about space").text == "space"
    assert parse("the godfather on netflix").text == "the godfather"
    assert parse("Mission: Impossible on hulu").text == "Mission: Impossible"
    assert parse("airplane! on netflix").text == "airplane!"


def test_plain_titles_are_untouched() -> None:
    for title in (
        "godfather",
        "star wars",
        "1917",
        "2001 a space odyssey",
        "mad max",
        "Free Willy",
    ):
        got = parse(title)
        assert got == Intent(text=title), title
    assert parse("  the   godfather ").text == "the godfather"


def test_star_wars_is_not_the_war_genre() -> None:
    assert parse("star wars movies").genres == ()
    assert parse("war of the worlds").genres == ()
    assert parse("war movies").genres == ("War",)
    assert parse("war movies").kind == "movie"
    assert parse("war drama").genres == ("War", "Drama")


def test_genre_synonyms_and_plurals() -> None:
    cases = {
        "comedies": ("Comedy",),
        "hilarious": ("Comedy",),
        "rom-com": ("Comedy", "Romance"),
        "romcoms": ("Comedy", "Romance"),
        "sci fi": ("Sci-Fi",),
        "scifi": ("Sci-Fi",),
        "science fiction": ("Sci-Fi",),
        "science-fiction": ("Sci-Fi",),
        "cartoons": ("Animation",),
        "anime": ("Animation",),
        "scary": ("Horror",),
        "slasher": ("Horror",),
        "love story": ("Romance",),
        "docs": ("Documentary",),
        "documentaries": ("Documentary",),
        "mafia": ("Crime",),
        "heist": ("Crime",),
        "suspenseful": ("Thriller",),
        "thrillers": ("Thriller",),
        "whodunit": ("Mystery",),
        "detective": ("Mystery",),
        "film noir": ("Film-Noir",),
        "noir": ("Film-Noir",),
        "musicals": ("Musical",),
        "westerns": ("Western",),
        "cowboy": ("Western",),
        "action-packed": ("Action",),
        "adventures": ("Adventure",),
        "dramatic": ("Drama",),
        "fantasy": ("Fantasy",),
        "IMAX": ("IMAX",),
        "mysteries": ("Mystery",),
    }
    for query, genres in cases.items():
        got = parse(query)
        assert (got.genres, got.text) == (genres, ""), query


def test_ambiguous_words_are_not_genres() -> None:
    assert parse("space").genres == ()
    assert parse("magic").genres == ()
    assert parse("new york").year_from is None


def test_synonyms_only_map_to_genres_the_catalog_has() -> None:
    small = IntentParser(["Comedy", "Science Fiction", "Biography"], ["netflix"])
    assert small.parse("funny scifi", now_year=NOW).genres == ("Comedy", "Science Fiction")
    got = small.parse("horror biographies", now_year=NOW)
    assert (got.genres, got.text) == (("Biography",), "horror")
    assert small.parse("war movies", now_year=NOW).text == "war"


def test_kind() -> None:
    for query in ("movies", "movie", "film", "films"):
        assert parse(query).kind == "movie", query
    for query in ("series", "tv series", "tv show", "tv shows", "shows", "tv"):
        assert parse(query).kind == "series", query
    got = parse("tv shows on hulu")
    assert (got.kind, got.platforms, got.text) == ("series", ("hulu",), "")
    assert parse("movies and tv shows").kind is None  # both asked for: no kind filter


def test_decades() -> None:
    for query in ("90s", "the 90s", "'90s", "1990s", "nineties", "in the nineties", "90's"):
        got = parse(query + " comedies")
        assert (got.year_from, got.year_to, got.text) == (1990, 1999, ""), query
    assert parse("'90s sitcoms").matched == ("'90s", "sitcoms")
    assert (parse("eighties").year_from, parse("seventies").year_from) == (1980, 1970)
    assert (parse("sixties").year_from, parse("fifties").year_from) == (1960, 1950)
    assert parse("twenties").year_from == 1920
    assert (parse("00s").year_from, parse("2000s").year_from) == (2000, 2000)
    assert (parse("10s").year_from, parse("2010s").year_to) == (2010, 2019)
    assert parse("20s").year_from == 2020
    assert PARSER.parse("20s", now_year=2015).year_from == 1920  # the 2020s are not here yet
    assert parse("30s").year_from == 1930
    assert (parse("early 80s").year_from, parse("early 80s").year_to) == (1980, 1983)
    assert (parse("late 90s").year_from, parse("late 90s").year_to) == (1996, 1999)


def test_years_need_a_preposition() -> None:
    for query in ("movies from 1994", "in 1994", "of 1994"):
        got = parse(query)
        assert (got.year_from, got.year_to, got.text) == (1994, 1994, ""), query
    got = parse("before 1980 westerns")
    assert (got.year_from, got.year_to, got.genres) == (None, 1979, ("Western",))
    assert (parse("after 2010").year_from, parse("after 2010").year_to) == (2011, None)
    assert (parse("since 2015").year_from, parse("since 2015").year_to) == (2015, None)
    assert parse("before the 80s").year_to == 1979
    for query in ("between 1990 and 1995", "1990-1995", "1990 to 1995", "from 1995 to 1990"):
        got = parse(query)
        assert (got.year_from, got.year_to, got.text) == (1990, 1995, ""), query
    got = parse("action movies between 2000 and 2005")
    assert (got.genres, got.kind, got.year_from, got.year_to) == (("Action",), "movie", 2000, 2005)
    assert parse("1917").year_from is None
    assert parse("2001 a space odyssey").text == "2001 a space odyssey"


def test_years_out_of_range_stay_text() -> None:
    got = parse("movies from 1850")
    assert (got.year_from, got.text) == (None, "1850")
    assert parse("in 2031").year_from is None
    assert parse("in 2027").year_from == 2027  # announced titles, two years ahead


def test_recent_but_not_new() -> None:
    assert parse("recent comedies").year_from == NOW - 2
    assert parse("latest thrillers").year_from == NOW - 2
    got = parse("new york")
    assert (got.year_from, got.text) == (None, "new york")


def test_several_year_phrases_cover_them_all() -> None:
    got = parse("80s and 90s action")
    assert (got.year_from, got.year_to, got.text) == (1980, 1999, "")
    got = parse("after 2000 before 2010")
    assert (got.year_from, got.year_to) == (2001, 2009)


def test_platforms() -> None:
    assert parse("on max").platforms == ("hbo_max",)
    assert parse("mad max") == Intent(text="mad max")
    got = parse("mad max on max")
    assert (got.text, got.platforms, got.matched) == ("mad max", ("hbo_max",), ("on max",))
    got = parse("comedies on netflix or hulu")
    assert (got.platforms, got.text) == (("netflix", "hulu"), "")
    assert parse("horror on netflix or max").platforms == ("netflix", "hbo_max")
    cases = {
        "hulu originals": "hulu",
        "disney+ cartoons": "disney_plus",
        "disney plus": "disney_plus",
        "on disney": "disney_plus",
        "prime video": "prime_video",
        "amazon prime video": "prime_video",
        "streaming on prime": "prime_video",
        "available on amazon": "prime_video",
        "hbo": "hbo_max",
        "hbo max": "hbo_max",
        "apple tv+": "apple_tv_plus",
        "watch on apple tv": "apple_tv_plus",
        "paramount+": "paramount_plus",
        "in paramount": "paramount_plus",
        "on peacock": "peacock",
    }
    for query, pid in cases.items():
        assert parse(query).platforms == (pid,), query
    for query in ("disney classics", "apple", "prime suspect", "paramount pictures", "peacock"):
        assert parse(query).platforms == (), query


def test_only_known_platforms_are_recognised() -> None:
    got = IntentParser(GENRES, ["netflix"]).parse("horror on hulu", now_year=NOW)
    assert (got.platforms, got.text, got.genres) == ((), "hulu", ("Horror",))


def test_free_only_next_to_another_filter() -> None:
    assert parse("free willy") == Intent(text="free willy")
    assert parse("free solo").offer_types == ()
    assert parse("free").offer_types == ()  # alone it is a title word too
    got = parse("free horror movies for kids")
    assert got.offer_types == ("free", "ads")
    assert (got.genres, got.kind, got.kids, got.text) == (("Horror", "Children"), "movie", True, "")
    assert parse("free movies").offer_types == ("free", "ads")
    assert parse("movies for free").offer_types == ("free", "ads")
    assert parse("free on netflix").offer_types == ("free", "ads")


def test_rent_buy_subscription() -> None:
    assert parse("movies to rent").offer_types == ("rent",)
    assert parse("movies for rent").offer_types == ("rent",)
    assert parse("rent").offer_types == ()  # the musical
    assert parse("rent thrillers").offer_types == ("rent",)
    got = parse("movies to rent or buy")
    assert (got.offer_types, got.text) == (("rent", "buy"), "")
    assert parse("comedies to buy").offer_types == ("buy",)
    assert parse("comedies with my subscription").offer_types == ("subscription",)
    assert parse("westerns on subscription").offer_types == ("subscription",)
    assert parse("included dramas").offer_types == ("subscription",)


def test_kids() -> None:
    for query in (
        "movies for kids",
        "kids movies",
        "for children",
        "family friendly",
        "kid friendly",
        "family comedies",
        "children's movies",
    ):
        got = parse(query)
        assert (got.kids, "Children" in got.genres, got.text) == (True, True, ""), query
    for title in ("spy kids", "modern family", "children of men", "the addams family"):
        assert parse(title) == Intent(text=title), title
    no_children = IntentParser(["Comedy"], []).parse("comedies for kids", now_year=NOW)
    assert (no_children.kids, no_children.genres) == (True, ("Comedy",))


def test_show_alone_is_a_title_word() -> None:
    assert parse("the truman show") == Intent(text="the truman show")
    assert parse("comedy show").kind == "series"


def test_quoted_text_is_literal() -> None:
    assert parse('"free horror movies on netflix"') == Intent(
        text='"free horror movies on netflix"'
    )
    got = parse('"the 90s show" on netflix')
    assert (got.text, got.platforms, got.year_from) == ('"the 90s show"', ("netflix",), None)
    assert parse("“sci-fi” movies").genres == ()
    assert parse('comedies "on max').platforms == ()  # an unclosed quote runs to the end


def test_people() -> None:
    got = parse("tom hanks comedies from the 90s")
    assert (got.people, got.genres, got.text) == (("Tom Hanks",), ("Comedy",), "")
    assert parse("movies with Francis Ford Coppola").people == ("Francis Ford Coppola",)
    assert parse("tom and jerry").people == ()
    assert parse("cher").people == ()  # one-word names are too easily ordinary words
    assert parse('"tom hanks"').people == ()
    assert parse("tom hanks").as_dict() == {
        "text": "",
        "people": ["Tom Hanks"],
        "matched": ["tom hanks"],
    }


def test_people_matcher_handles_a_big_catalog() -> None:
    rnd = random.Random(3)
    names = [f"Name{rnd.randrange(3000)} Surname{i}" for i in range(50_000)] + ["Meryl Streep"]
    started = time.perf_counter()
    parser = IntentParser(GENRES, PLATFORMS, names)
    assert time.perf_counter() - started < 2.0
    assert parser.parse("meryl streep dramas", now_year=NOW).people == ("Meryl Streep",)
    assert parser.parse(f"{names[7]} westerns", now_year=NOW).people == (names[7],)


def test_as_dict_omits_empty_fields_but_keeps_text() -> None:
    assert parse("godfather").as_dict() == {"text": "godfather"}
    assert parse("").as_dict() == {"text": ""}
    assert parse("kids movies").as_dict()["kids"] is True


@pytest.mark.parametrize(
    "query",
    [
        "",
        " ",
        "!!!",
        "🎬🍿",
        "the and or",
        '"',
        "''",
        "---",
        "+",
        "on",
        "from the",
        "’90s",
        "∞",
        "1990-",
        "between 1990 and",
        "on netflix or",
        "\x00\n\t",
        "ß" * 50,
        "９０s",
    ],
)
def test_odd_input_never_raises(query: str) -> None:
    got = parse(query)
    assert isinstance(got.text, str)
    assert got.as_dict()["text"] == got.text


def test_random_input_never_raises() -> None:
    rnd = random.Random(11)
    alphabet = "abc xyz 19 90s '\"“”-+,.!?é🎬 on free kids max from the between and to"
    pieces = alphabet.split(" ") + list(alphabet)
    for _ in range(3000):
        query = "".join(
            rnd.choice(pieces) + rnd.choice(("", " ")) for _ in range(rnd.randrange(20))
        )
        parse(query)


def test_speed() -> None:
    short = "funny sci-fi from the 90s on netflix"
    paragraph = ("I want a movie for kids from the 90s, maybe free on netflix or max. " * 40)[:2000]
    parse(paragraph)
    started = time.perf_counter()
    for _ in range(200):
        parse(short)
    assert (time.perf_counter() - started) / 200 < 0.001
    started = time.perf_counter()
    for _ in range(20):
        got = parse(paragraph)
    assert (time.perf_counter() - started) / 20 < 0.02
    assert got.platforms == ("netflix", "hbo_max")
