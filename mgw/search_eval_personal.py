"""`mgw eval search --personalize`: does ``personalize=true`` help a user find what *they*
mean? nDCG@10, Recall@10 and MRR of ``GET /v1/search`` with and without personalisation.

Protocol. MovieLens tags are personal: a user put the tag on the movies. For each (user,
tag) pair where the user tagged at least one known title with the tag (tags normalised
as in ``domain.discovery.evaluation.tag_queries``: lower case, at least 3 characters
with a letter), the query is the tag and the relevant titles are the ones *that user*
tagged with it. The user's history is their MovieLens ratings, published as finished
plays (``demo.rating_plays``), minus every title they tagged under any eligible pair: a
title the user holds in one query's relevant set is never in their history for another
query, so no answer leaks through the recommender. Pairs whose user keeps fewer than
20 plays after that are dropped; up to ``pairs`` of the rest are sampled with a seed.

The real app runs in-process (``TestClient(create_app(settings))`` over a fresh embedded
database, as ``mgw eval search`` does): the MovieLens titles and the filtered plays are
published through the app's publisher; once every projector has caught up (lag 0) and
search has indexed the titles, the recommender is trained on all of it (``train_once``,
background training off) and the engine is waited on until it serves that version.
Each query is then asked as its user (an access token minted with the app's own keys,
scope ``library playback``), ``/v1/search?q=<tag>&limit=10``, without and with
``personalize=true``. Known-item queries (``known_item_queries``: a typo, a partial
title, the plain title) are asked the same way, each by a random MovieLens user, to
show whether personalisation gets in the way of finding a title by name.

Prints a table to stderr; the last stdout line is one JSON object. Retrieval uses the
settings' embeddings (``MGW_EMBEDDINGS=none``: full text and trigram only; ``minilm``:
also vectors, cached in ``settings.embedding_cache`` or <data dir>/embeddings/); the
report says which.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.settings import Settings
from domain.discovery.evaluation import (
    LabelledQuery,
    known_item_queries,
    ndcg_at,
    summarize,
)
from mgw import demo
from mgw.search_eval import metric_line

TAGS = Path(__file__).parent / "data" / "movielens-tags.csv"
MIN_RATINGS = 20
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True, slots=True)
class PersonalQuery:
    user: str  # "ml-<userId>"
    query: LabelledQuery


def _norm_tag(tag: str) -> str | None:
    t = " ".join(tag.lower().split())
    return t if len(t) >= 3 and _WORD.search(t) else None


def personal_tag_pairs(
    known: set[str], plays: list[Any]
) -> tuple[list[PersonalQuery], set[tuple[str, str]]]:
    """Every eligible (user, tag) query and the (user, content id) plays to withhold;
    ``plays``: ``demo.rating_plays`` before withholding."""
    by_pair: dict[tuple[str, str], set[str]] = defaultdict(set)
    with TAGS.open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            cid = demo.content_id_for(r["movieId"])
            t = _norm_tag(r["tag"])
            if t is not None and cid in known:
                by_pair[(f"ml-{r['userId']}", t)].add(cid)
    withheld = {(u, cid) for (u, _), ids in by_pair.items() for cid in ids}
    kept = _plays_per_user(
        [e for e in plays if (e.payload["user_id"], e.payload["content_id"]) not in withheld]
    )
    out = [
        PersonalQuery(u, LabelledQuery(t, frozenset(ids), "tags"))
        for (u, t), ids in sorted(by_pair.items())
        if kept[u] >= MIN_RATINGS
    ]
    return out, withheld


def _plays_per_user(plays: list[Any]) -> Counter[str]:
    return Counter(e.payload["user_id"] for e in plays)


def _token(ident: Any, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ident.user_token(user, 'library playback')}"}


def _wait_caught_up(c: Any, ctx: Any, timeout: float = 1800) -> None:
    from api.health import projector_lag

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lags = c.portal.call(projector_lag, ctx)
        if all(v["lag"] == 0 for v in lags.values()):
            return
        time.sleep(0.5)
    raise TimeoutError(f"projectors still behind: {lags}")


def _wait_indexed(c: Any, n: int, progress: bool, timeout: float = 3600) -> float:
    started = time.perf_counter()
    with tqdm(total=n, desc="index titles", unit="title", disable=not progress) as bar:
        while time.perf_counter() - started < timeout:
            s = c.get("/v1/search/status").json()
            bar.n = s.get("embedded", 0)
            bar.refresh()
            if s["caught_up"]:
                return time.perf_counter() - started
            time.sleep(0.5)
    raise TimeoutError("search did not catch up")


def _wait_serving(c: Any, ctx: Any, version: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.portal.call(ctx.recs.refresh)
        if ctx.recs.view is not None and ctx.recs.view.version == version:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the engine does not serve {version}")


def _compare(
    plain: list[tuple[LabelledQuery, list[str]]], personal: list[tuple[LabelledQuery, list[str]]]
) -> dict[str, int]:
    """Per query: personalised nDCG@10 better / worse / equal; rankings changed at all."""
    out = {"better": 0, "worse": 0, "same": 0, "changed_top10": 0}
    for (q, a), (_, b) in zip(plain, personal, strict=True):
        d = ndcg_at(b, q.relevant) - ndcg_at(a, q.relevant)
        out["better" if d > 1e-9 else "worse" if d < -1e-9 else "same"] += 1
        out["changed_top10"] += a[:10] != b[:10]
    return out


def run_eval_search_personal(
    settings: Settings,
    *,
    limit_titles: int | None = None,
    pairs: int = 300,
    known: int = 150,
    progress: bool = True,
    seed: int = 17,
    show: int = 0,
) -> int:
    from starlette.testclient import TestClient

    from domain.recs.serving import PERSONALIZE_WEIGHT
    from mgw.app import create_app
    from projections.recs_training import train_once

    t_start = time.perf_counter()
    if settings.embeddings == "none":  # one warning per query that vectors are off
        logging.getLogger("mgw.search").setLevel(logging.ERROR)
    events = list(demo.content_events(limit=limit_titles))
    titles = {e.key: e.payload["title"] for e in events}
    all_plays = list(demo.rating_plays(known=set(titles)))
    eligible, withheld = personal_tag_pairs(set(titles), all_plays)
    rng = random.Random(seed)
    sample = sorted(rng.sample(eligible, min(pairs, len(eligible))), key=lambda p: p.user)
    plays = [
        e for e in all_plays if (e.payload["user_id"], e.payload["content_id"]) not in withheld
    ]
    history = _plays_per_user(plays)
    users = sorted(u for u, n in history.items() if n >= MIN_RATINGS)
    known_q = [PersonalQuery(rng.choice(users), q) for q in known_item_queries(titles, limit=known)]
    queries = sample + known_q

    cache = settings.embedding_cache or settings.data_dir / "embeddings" / "cache.sqlite"
    ranked: dict[str, dict[str, list[tuple[LabelledQuery, list[str]]]]] = {
        s: {"plain": [], "personalized": []} for s in ("tags", "known_item")
    }
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mgw-eval-search-personal-") as tmp:
        s = replace(
            settings, data_dir=Path(tmp), database_url=None, redis_url=None, qdrant_url=None,
            vector_store="edge", embedding_cache=cache, recs_training=False, recs_dir=None,
        )  # fmt: skip
        with TestClient(create_app(s)) as c:
            ctx = c.app.state.mgw  # type: ignore[attr-defined]
            pub = ctx.publisher
            t = time.perf_counter()
            for i in range(0, len(plays), 5000):
                c.portal.call(pub.publish_many, plays[i : i + 5000])  # type: ignore[union-attr]
            for i in range(0, len(events), 2000):
                c.portal.call(pub.publish_many, events[i : i + 2000])  # type: ignore[union-attr]
            timings["index_s"] = round(_wait_indexed(c, len(events), progress), 1)
            _wait_caught_up(c, ctx)
            timings["seed_to_caught_up_s"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            version = c.portal.call(train_once, ctx.stores.pg, s.recs_path)
            if version is None:
                raise RuntimeError("no interactions to train on")
            _wait_serving(c, ctx, version)
            timings["train_to_serving_s"] = round(time.perf_counter() - t, 1)
            heads: dict[str, dict[str, str]] = {}
            not_personal = 0
            for pq in tqdm(queries, desc="queries", disable=not progress):
                h = heads.get(pq.user) or heads.setdefault(pq.user, _token(ctx.identity, pq.user))
                got = {}
                for col, extra in (("plain", {}), ("personalized", {"personalize": "true"})):
                    r = c.get(
                        "/v1/search",
                        params={"q": pq.query.query, "limit": 10, **extra},
                        headers=h,
                    )
                    r.raise_for_status()
                    body = r.json()
                    if extra and not body["personalized"]:
                        not_personal += 1
                    got[col] = [i["id"] for i in body["items"]]
                    group = "tags" if pq.query.set_name == "tags" else "known_item"
                    ranked[group][col].append((pq.query, got[col]))
                if show > 0 and got["plain"] != got["personalized"]:
                    show -= 1
                    want = ", ".join(titles[x] for x in sorted(pq.query.relevant))[:70]
                    a, b = (" | ".join(titles.get(x, x) for x in got[k][:4]) for k in got)
                    print(
                        f"[{pq.query.set_name}] {pq.user} {pq.query.query!r} (want {want}):\n"
                        f"  plain    {a}\n  personal {b}",
                        file=sys.stderr,
                    )
    report: dict[str, Any] = {
        "titles": len(events),
        "embeddings": settings.embeddings,
        "retrievers": "fulltext+trigram+vector"
        if settings.embeddings != "none"
        else "fulltext+trigram",
        "personalize_weight": PERSONALIZE_WEIGHT,
        "model_version": version,
        "plays_published": len(plays),
        "plays_withheld": len(all_plays) - len(plays),
        "eligible_pairs": len(eligible),
        "tag_pairs": len(sample),
        "tag_users": len({p.user for p in sample}),
        "known_item_queries": len(known_q),
        "seed": seed,
        "not_personalized_answers": not_personal,
        **timings,
    }
    for set_name in ("tags", "known_item"):
        cols = ranked[set_name]
        report[set_name] = {col: summarize(cols[col]) for col in ("plain", "personalized")}
        report[set_name]["per_query"] = _compare(cols["plain"], cols["personalized"])
        p, q = report[set_name]["plain"]["ndcg@10"], report[set_name]["personalized"]["ndcg@10"]
        report[set_name]["ndcg_change"] = round(q / p - 1, 4) if p else None
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    if progress:
        print(
            f"personal search: {report['titles']} titles, {report['retrievers']}, "
            f"weight {PERSONALIZE_WEIGHT}, model {version}",
            file=sys.stderr,
        )
        for set_name in ("tags", "known_item"):
            pq_ = report[set_name]["per_query"]
            print(
                f"{set_name} ({report[set_name]['plain']['queries']} queries; personalised "
                f"better {pq_['better']}, worse {pq_['worse']}, same {pq_['same']}; "
                f"top 10 changed {pq_['changed_top10']})",
                file=sys.stderr,
            )
            for col in ("plain", "personalized"):
                print(metric_line(col, report[set_name][col], 12), file=sys.stderr)
    print(json.dumps(report))
    return 0
