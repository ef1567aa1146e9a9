"""Queries on the search documents: the full-text and trigram retrievers, browse, and
what the API needs around them (hydrating candidates, vocabularies)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from domain.discovery.documents import STOP_WORDS
from domain.discovery.filters import SearchFilters
from projections.base import fetch_rows
from projections.search_vectors import filter_clause

_WORD = re.compile(r"\w+", re.UNICODE)
#: a paragraph-long description is searched by its first words that carry meaning
MAX_TERMS = 32
TRIGRAM_THRESHOLD = 0.45
#: a description's words that full text pairs up (the vector retriever reads all of them)
PAIR_TERMS = 8


def _terms(words: Sequence[str]) -> list[str]:
    """The words that can match: PostgreSQL's English configuration drops stop words
    anyway, and leaving them out here keeps them from taking the paired slots."""
    terms: list[str] = []
    for w in words:
        for t in _WORD.findall(w.lower()):
            if len(t) <= 40 and t not in terms and t not in STOP_WORDS:
                terms.append(t)
    return terms[:MAX_TERMS]


def tsquery_text(words: Sequence[str], mode: str = "or") -> str | None:
    """``and``: every word; ``pairs``: any two of the first ``PAIR_TERMS`` words (a title
    matching more of a description ranks higher, one sharing a single common word is not
    scored at all); ``or``: any word."""
    terms = _terms(words)
    if not terms:
        return None
    if mode == "and":
        return " & ".join(terms)
    if mode == "pairs" and len(terms) >= 3:
        head = terms[:PAIR_TERMS]
        return " | ".join(f"({a} & {b})" for i, a in enumerate(head) for b in head[i + 1 :])
    return " | ".join(terms)


async def _fulltext(
    conn: AsyncConnection[Any], q: str, where: SearchFilters, limit: int
) -> list[str]:
    params: dict[str, Any] = {"q": q, "limit": limit}
    clause = filter_clause(where, params)
    # to_tsquery drops English stop words; a query of only stop words matches nothing here
    rows = await fetch_rows(
        conn,
        "SELECT content_id FROM search_docs, to_tsquery('english', %(q)s) q"
        f" WHERE tsv @@ q AND {clause}"
        " ORDER BY ts_rank(tsv, q, 1) DESC, popularity DESC, content_id LIMIT %(limit)s",
        params,
    )
    return [r[0] for r in rows]


async def fulltext_ids(
    conn: AsyncConnection[Any], words: Sequence[str], where: SearchFilters, limit: int
) -> list[str]:
    """Titles with every word first; when those are few, titles with any two of the
    words (or any one, for a query of two words). Ranking only what a selective query
    matches keeps a common word ("story", "man") from costing a scan of its postings."""
    q_and = tsquery_text(words, "and")
    if q_and is None:
        return []
    ids = await _fulltext(conn, q_and, where, limit)
    if len(ids) >= max(10, limit // 4) or len(_terms(words)) == 1:
        return ids
    q_more = tsquery_text(words, "pairs")
    assert q_more is not None
    more = await _fulltext(conn, q_more, where, limit)
    seen = set(ids)
    return ids + [i for i in more if i not in seen][: limit - len(ids)]


async def lexemes(conn: AsyncConnection[Any], text: str) -> list[str]:
    """The lexemes PostgreSQL's English configuration makes of ``text`` (stemmed, without
    stop words): the terms the documents' tsvectors are matched on."""
    rows = await fetch_rows(
        conn, "SELECT lexeme FROM unnest(to_tsvector('english', %(t)s))", {"t": text}
    )
    return [r[0] for r in rows]


async def salient_ids(
    conn: AsyncConnection[Any],
    terms: Sequence[tuple[str, float]],
    where: SearchFilters,
    limit: int,
) -> list[str]:
    """Titles matching any of a description's salient lexemes, ranked by the IDF of the
    lexemes they hold, each times its field weight (title A over overview C): two rare
    words in common outrank five common ones. One GIN lookup per lexeme."""
    if not terms:
        return []
    params: dict[str, Any] = {
        "lex": [t for t, _ in terms],
        "idf": [w for _, w in terms],
        "limit": limit,
    }
    clause = filter_clause(where, params)
    rows = await fetch_rows(
        conn,
        "WITH t AS (SELECT quote_literal(lex)::tsquery AS q, idf"
        " FROM unnest(%(lex)s::text[], %(idf)s::float8[]) AS u(lex, idf))"
        " SELECT content_id FROM search_docs JOIN t ON tsv @@ t.q"
        f" WHERE {clause}"
        " GROUP BY content_id, popularity"
        " ORDER BY sum(t.idf * ts_rank(tsv, t.q, 0)) DESC, popularity DESC, content_id"
        " LIMIT %(limit)s",
        params,
    )
    return [r[0] for r in rows]


async def lexeme_stats(conn: AsyncConnection[Any]) -> tuple[dict[str, int], int]:
    """Documents per lexeme over every search document, and the number of documents: the
    IDF a description's words are weighed by (domain/discovery/query_class.py)."""
    rows = await fetch_rows(conn, "SELECT word, ndoc FROM ts_stat('SELECT tsv FROM search_docs')")
    total = await fetch_rows(conn, "SELECT count(*) FROM search_docs")
    return {r[0]: int(r[1]) for r in rows}, int(total[0][0])


async def trigram_ids(
    conn: AsyncConnection[Any], folded: str, where: SearchFilters, limit: int
) -> list[tuple[str, float]]:
    """Titles containing something close to the query: typos and partial titles, with
    their word similarity, nearest first (a KNN walk of the GiST index)."""
    if len(folded) < 3:
        return []
    params: dict[str, Any] = {"q": folded, "limit": limit}
    clause = filter_clause(where, params)
    # the KNN walk finds the nearest by word similarity; among equals (the query inside
    # several titles) the closest whole title and then the most played come first
    rows = await fetch_rows(
        conn,
        "SELECT content_id, ws FROM (SELECT content_id, popularity, title_norm,"
        " 1 - (%(q)s <<-> title_norm) AS ws FROM search_docs"
        f" WHERE {clause} ORDER BY %(q)s <<-> title_norm LIMIT %(wide)s) t"
        " ORDER BY ws DESC, similarity(%(q)s, title_norm) DESC, popularity DESC, content_id"
        " LIMIT %(limit)s",
        {**params, "wide": limit * 2},
    )
    return [(r[0], float(r[1])) for r in rows if r[1] >= TRIGRAM_THRESHOLD]


@dataclass(frozen=True, slots=True)
class Hit:
    content_id: str
    kind: str
    title: str
    title_norm: str
    year: int | None
    genres: list[str]
    imdb_id: str | None
    tmdb_id: str | None
    offer_keys: list[str]
    quality: float
    popularity: float
    first_seen: datetime | None


_HIT_COLS = (
    "content_id, kind, title, title_norm, year, genres, imdb_id, tmdb_id, offer_keys,"
    " quality, popularity, first_seen"
)


async def hydrate(conn: AsyncConnection[Any], ids: Sequence[str]) -> dict[str, Hit]:
    rows = await fetch_rows(
        conn, f"SELECT {_HIT_COLS} FROM search_docs WHERE content_id = ANY(%s)", (list(ids),)
    )
    return {r[0]: Hit(*r) for r in rows}


async def browse(
    conn: AsyncConnection[Any],
    where: SearchFilters,
    limit: int,
    after: tuple[float, float, str] | None = None,
) -> list[Hit]:
    """The popular list: most played, then best catalogued; keyset-paginated."""
    params: dict[str, Any] = {"limit": limit}
    clause = filter_clause(where, params)
    if after is not None:
        clause += " AND (popularity, quality, content_id) < (%(p)s::real, %(q)s::real, %(id)s)"
        params.update(p=after[0], q=after[1], id=after[2])
    rows = await fetch_rows(
        conn,
        f"SELECT {_HIT_COLS} FROM search_docs WHERE {clause}"
        " ORDER BY popularity DESC, quality DESC, content_id DESC LIMIT %(limit)s",
        params,
    )
    return [Hit(*r) for r in rows]


async def genre_vocabulary(conn: AsyncConnection[Any]) -> list[str]:
    rows = await fetch_rows(
        conn, "SELECT DISTINCT unnest(genres) FROM search_docs UNION SELECT DISTINCT"
        " unnest(genres) FROM content WHERE kind IN ('movie', 'series')"
    )  # fmt: skip
    return sorted(r[0] for r in rows if r[0])


async def title_rows(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    """Everything autocomplete and the speller are built from."""
    return await fetch_rows(
        conn,
        "SELECT content_id, title, title_norm, year, kind, popularity + quality / 10,"
        " genres, people FROM search_docs",
    )


async def docs_version(conn: AsyncConnection[Any]) -> tuple[Any, ...]:
    rows = await fetch_rows(conn, "SELECT count(*), max(indexed_at) FROM search_docs")
    return tuple(rows[0])
