"""Search documents: how a title's document is built from the catalog's tables, and the
drain of the queue that rebuilds them. Shared by the ``search`` projector (in a batch) and
its background step (outside any event), so neither imports the other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from domain.catalog.quality import quality_score
from domain.discovery.documents import embedding_text, fold, offer_keys, popularity, text_hash
from projections.base import fetch_rows
from projections.search_vectors import VectorStore

_DOC_COLS = (
    "content_id", "kind", "title", "title_norm", "original_title", "year", "genres",
    "people", "rating", "imdb_id", "tmdb_id", "offer_keys", "platforms", "quality",
    "popularity", "first_seen", "alt_titles", "overview", "keywords", "embed_text",
    "text_hash",
)  # fmt: skip


def payload(row: dict[str, Any]) -> dict[str, Any]:
    """The filter fields a vector store keeps beside a vector."""
    return {k: row[k] for k in ("kind", "genres", "people", "year", "rating", "offer_keys")}


def document(r: tuple[Any, ...], now: datetime, half_life_days: float) -> dict[str, Any]:
    (cid, kind, title, orig, year, genres, overview, imdb, tmdb, first_seen, updated,
     source_count, completeness, agreement, alt_titles, offers, plays, people,
     keywords, rating) = r  # fmt: skip
    q = quality_score(
        completeness=completeness, agreement=agreement, source_count=source_count,
        plays=plays, first_seen=first_seen or updated, now=now,
        half_life_days=half_life_days,
    )  # fmt: skip
    keys = offer_keys(tuple(o.split("|", 2)) for o in offers or ())
    alts = sorted({a for a in alt_titles or () if a and fold(a) != fold(title)})
    keywords = sorted(keywords or ())
    text = embedding_text(title, orig, genres, overview, keywords)
    return {
        "content_id": cid, "kind": kind, "title": title, "title_norm": fold(title),
        "original_title": orig, "year": year, "genres": list(genres),
        "people": sorted(people or ()),
        "rating": rating, "imdb_id": imdb, "tmdb_id": tmdb, "offer_keys": keys,
        "platforms": sorted({k.split("|")[1] for k in keys} - {"*"}),
        "quality": q.base, "popularity": popularity(plays),
        "first_seen": first_seen or updated, "alt_titles": " ".join(alts)[:4000],
        "overview": overview or "", "keywords": " ".join(keywords)[:4000],
        "embed_text": text, "text_hash": text_hash(text),
    }  # fmt: skip


#: held by a drain for its transaction: the projector waits for it, the background step
#: only tries. SKIP LOCKED alone would let the projector pass over titles the background
#: step is rebuilding and report a batch applied (a replay finished) before they exist.
#: Every other multi-row write to search_docs (payload flags, embedded hashes,
#: popularity) takes it first too: two such UPDATEs lock their rows in no set order, and
#: under load the demo showed them deadlocking with the projector's drain.
DRAIN_LOCK = 0x6D677764  # "mgwd"


async def hold_drain(conn: AsyncConnection[Any], *, wait: bool) -> bool:
    """Take the drain lock for the caller's transaction; False if ``wait`` is off and
    another drain has it. Catalog transactions never take it, so waiting cannot deadlock
    with them; the queue rows they lock are still skipped (their own events follow)."""
    if wait:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (DRAIN_LOCK,))
        return True
    rows = await fetch_rows(conn, "SELECT pg_try_advisory_xact_lock(%s)", (DRAIN_LOCK,))
    return bool(rows[0][0])


async def index_queued(
    conn: AsyncConnection[Any], *, half_life_days: float, limit: int = 2000
) -> tuple[int, list[str]]:
    """Rebuild up to ``limit`` queued documents on ``conn`` (the caller's transaction);
    returns (titles dequeued, titles whose document is gone)."""
    # SKIP LOCKED: a title a catalog transaction is queueing right now, or that the other
    # drain (projector or background step) holds, is left for the next round. So a drain
    # never waits on a queue row, and two transactions never wait on each other (deadlock).
    queued = await fetch_rows(
        conn,
        "SELECT content_id, seq FROM search_queue ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    if not queued:
        return 0, []
    ids = [r[0] for r in queued]
    now = datetime.now(UTC)
    rows = await fetch_rows(conn, _SOURCE_SQL, {"ids": ids})
    docs = [document(r, now, half_life_days) for r in rows]
    if docs:
        await _upsert(conn, docs)
    present = {d["content_id"] for d in docs}
    gone = [i for i in ids if i not in present]
    if gone:
        await conn.execute("DELETE FROM search_docs WHERE content_id = ANY(%s)", (gone,))
    await conn.execute(
        "DELETE FROM search_queue q USING unnest(%s::text[], %s::bigint[]) AS t(id, s)"
        " WHERE q.content_id = t.id AND q.seq = t.s",
        (ids, [r[1] for r in queued]),
    )
    return len(ids), gone


async def push_payloads(conn: AsyncConnection[Any], vectors: VectorStore, limit: int) -> int:
    """Push changed filter fields of already-embedded documents to a vector store that
    keeps them beside the vector (Qdrant); marked synced only after it took them, so a
    store that is down gets them later."""
    if vectors.name == "pgvector":  # it filters on the documents' own columns
        cur = await conn.execute(
            "UPDATE search_docs SET payload_synced = TRUE WHERE NOT payload_synced"
            " AND embedded_hash IS NOT NULL"
        )
        return cur.rowcount
    rows = await fetch_rows(
        conn,
        "SELECT content_id, kind, genres, people, year, rating, offer_keys, indexed_at"
        " FROM search_docs WHERE NOT payload_synced AND embedded_hash IS NOT NULL LIMIT %s",
        (limit,),
    )
    if not rows:
        return 0
    fields = ("kind", "genres", "people", "year", "rating", "offer_keys")
    await vectors.set_payloads([(r[0], dict(zip(fields, r[1:7], strict=True))) for r in rows])
    await conn.execute(
        "UPDATE search_docs SET payload_synced = TRUE FROM unnest(%s::text[],"
        " %s::timestamptz[]) AS t(id, at) WHERE content_id = t.id AND indexed_at = t.at",
        ([r[0] for r in rows], [r[7] for r in rows]),
    )
    return len(rows)


# Episodes are reached through their series; only movies and series are documents.
_SOURCE_SQL = """
SELECT c.content_id, c.kind, c.title, c.original_title, c.year, c.genres, c.overview,
       c.imdb_id, c.tmdb_id, c.first_seen, c.updated_at, c.source_count, c.completeness,
       c.agreement,
       (SELECT array_agg(DISTINCT t.title) FROM platform_titles t
         WHERE t.content_id = c.content_id),
       (SELECT array_agg(DISTINCT a.region || '|' || a.platform || '|' || a.offer_type)
          FROM platform_titles t JOIN availability a
            ON a.platform = t.platform AND a.platform_id = t.platform_id
         WHERE t.content_id = c.content_id
           AND (a.available_until IS NULL OR a.available_until > now())
           AND (a.available_from IS NULL OR a.available_from <= now())),
       (SELECT count(*) FROM playback_positions p WHERE p.content_id = c.content_id)::int,
       (SELECT array_agg(DISTINCT x) FROM platform_titles t, unnest(t.people) x
         WHERE t.content_id = c.content_id),
       (SELECT array_agg(DISTINCT x) FROM platform_titles t, unnest(t.keywords) x
         WHERE t.content_id = c.content_id),
       c.rating
  FROM content c
 WHERE c.content_id = ANY(%(ids)s) AND c.kind IN ('movie', 'series')
   -- a title moderation hid has no document: gone from search and recommendations
   AND NOT EXISTS (SELECT 1 FROM moderation_titles m
                    WHERE m.content_id = c.content_id AND m.hidden)
"""


#: the staging table's columns and binary COPY types: the documents' columns, and the
#: three texts only the tsvector reads
_STAGE_TYPES = {
    "content_id": "text", "kind": "text", "title": "text", "title_norm": "text",
    "original_title": "text", "year": "int4", "genres": "text[]", "people": "text[]",
    "rating": "text", "imdb_id": "text", "tmdb_id": "text", "offer_keys": "text[]",
    "platforms": "text[]", "quality": "float4", "popularity": "float4",
    "first_seen": "timestamptz", "alt_titles": "text", "overview": "text", "keywords": "text",
    "embed_text": "text", "text_hash": "text",
}  # fmt: skip
_STAGE_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS search_docs_batch ("
    + ", ".join(f"{c} {t.replace('int4', 'int').replace('float4', 'real')}"
                for c, t in _STAGE_TYPES.items())
    + ") ON COMMIT DELETE ROWS"
)  # fmt: skip


async def _upsert(conn: Any, docs: list[dict[str, Any]]) -> None:
    """Binary COPY into a staging table, then one INSERT ... SELECT that builds the
    tsvectors: the same rows as one INSERT per document (executemany), without psycopg
    quoting every parameter and array element in Python (30 % of the search worker's
    time in the pipelined ingest bench)."""
    cols = [c for c in _DOC_COLS if c not in ("alt_titles", "overview", "keywords")]
    staged = list(_STAGE_TYPES)
    await conn.execute(_STAGE_SQL)
    await conn.execute("DELETE FROM search_docs_batch")  # a retried batch reuses it
    async with conn.cursor().copy(
        f"COPY search_docs_batch ({', '.join(staged)}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(list(_STAGE_TYPES.values()))
        for d in docs:
            await copy.write_row([d[c] for c in staged])
    await conn.execute(
        f"INSERT INTO search_docs ({', '.join(cols)}, tsv, indexed_at)"
        f" SELECT {', '.join(cols)},"
        " setweight(to_tsvector('english', title), 'A')"
        " || setweight(to_tsvector('english', coalesce(original_title, '') || ' '"
        " || alt_titles), 'B')"
        " || setweight(to_tsvector('english', overview || ' ' || keywords), 'C')"
        " || setweight(to_tsvector('english', array_to_string(genres, ' ')"
        " || ' ' || array_to_string(people, ' ')), 'D'), now()"
        " FROM search_docs_batch"
        " ON CONFLICT (content_id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[1:])
        + ", tsv = EXCLUDED.tsv, indexed_at = clock_timestamp(), payload_synced = FALSE"
    )
