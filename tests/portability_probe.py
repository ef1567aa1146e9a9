"""Exercise every native library on the default (embedded) path, for real.

tests/test_portability.py runs this script under ``qemu-x86_64 -cpu Haswell`` (AVX2, no
AVX-512; see tests/portability.py): a library with unconditional AVX-512 code kills the
process with SIGILL, one that dispatches at run time takes its AVX2 path and must still
compute right answers. Each check announces itself on stderr first, so a crash names the
library that caused it; at the end one JSON line on stdout says what was checked:
``{"ok": bool, "checks": {name: {"ok": bool, "seconds": float, ...details or "error"}}}``.
The exit status is 0 only if every check passed.

A native binary added to the default path gets a check here (docs/portability.md).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Check = Callable[[], dict[str, Any]]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


@check
def check_qdrant_edge() -> dict[str, Any]:
    """A shard on disk: payload indexes, 3,000 x 384 points, HNSW built, a filtered
    nearest-neighbour query whose scores match numpy's, reloaded from disk."""
    import numpy as np
    import qdrant_edge as qe

    n, dims, limit = 3000, 384, 60
    genres = ["Comedy", "Drama", "Horror", "Action", "Romance"]
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((n, dims)).astype(np.float32)
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dims, distance=qe.Distance.Cosine),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=100, default_segment_number=1),
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=64, full_scan_threshold=10),
    )
    with tempfile.TemporaryDirectory(prefix="qdrant-edge-") as tmp:
        path = str(Path(tmp) / "shard")
        Path(path).mkdir()
        shard = qe.EdgeShard.create(path, config)
        shard.update(qe.UpdateOperation.create_field_index("genres", qe.PayloadSchemaType.Keyword))
        shard.update(qe.UpdateOperation.create_field_index("year", qe.PayloadSchemaType.Integer))
        meta = [([genres[i % 5], genres[(i * 7 + 1) % 5]], 1950 + i % 70) for i in range(n)]
        for start in range(0, n, 500):
            points = [
                qe.Point(i, vectors[i].tolist(), {"genres": meta[i][0], "year": meta[i][1]})
                for i in range(start, min(n, start + 500))
            ]
            shard.update(qe.UpdateOperation.upsert_points(points))
        shard.flush()
        optimized = bool(shard.optimize())

        query = rng.standard_normal(dims).astype(np.float32)
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query.tolist()),
            filter=qe.Filter(
                must=[
                    qe.FieldCondition("genres", match=qe.MatchAny(["Comedy"])),
                    qe.FieldCondition("year", range=qe.RangeFloat(gte=1990, lte=1999)),
                ]
            ),
            with_payload=True,
        )
        hits = shard.query(request)
        matching = [i for i, (g, y) in enumerate(meta) if "Comedy" in g and 1990 <= y <= 1999]
        assert len(hits) == min(limit, len(matching)), (len(hits), len(matching))
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        q = query / np.linalg.norm(query)
        for hit in hits:
            payload = hit.payload or {}
            assert "Comedy" in payload["genres"] and 1990 <= payload["year"] <= 1999, payload
            expected = float(unit[int(hit.id)] @ q)
            assert abs(hit.score - expected) < 1e-3, (hit.id, hit.score, expected)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True), "scores not in descending order"
        exact = sorted(matching, key=lambda i: -float(unit[i] @ q))[:limit]
        recall = len({int(h.id) for h in hits} & set(exact)) / len(exact)
        assert recall >= 0.8, f"recall {recall:.2f} against exact search"
        shard.close()

        reloaded = qe.EdgeShard.load(path)
        count = int(reloaded.count(qe.CountRequest()))
        assert count == n, count
        again = reloaded.query(request)
        assert [int(h.id) for h in again] == [int(h.id) for h in hits]
        reloaded.close()
    return {"points": n, "optimized": optimized, "hits": len(hits), "recall": recall}


@check
def check_embedder() -> dict[str, Any]:
    """The MiniLM model on onnxruntime, through the project's embedder."""
    import numpy as np

    from core.embedding import DIMS, shared_embedder

    texts = ["a heist comedy set in 1990s Paris", "astronauts stranded on a distant planet"]
    vectors = shared_embedder().encode(texts)
    assert vectors.shape == (2, DIMS) == (2, 384), vectors.shape
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    norms = np.linalg.norm(vectors, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4), norms
    return {"shape": list(vectors.shape), "cosine": float(vectors[0] @ vectors[1])}


@check
def check_onnxruntime() -> dict[str, Any]:
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    assert "CPUExecutionProvider" in providers, providers
    return {"version": onnxruntime.__version__}


@check
def check_tokenizers() -> dict[str, Any]:
    from tokenizers import Tokenizer

    from core.embedding import TOKENIZER_PATH

    tok = Tokenizer.from_file(str(TOKENIZER_PATH))
    enc = tok.encode("The Grand Budapest Hotel")
    assert enc.tokens[0] == "[CLS]", enc.tokens[:3]
    assert "budapest" in enc.tokens, enc.tokens
    return {"tokens": len(enc.ids)}


@check
def check_numpy_scipy() -> dict[str, Any]:
    import numpy as np
    import scipy.linalg
    import scipy.sparse

    rng = np.random.default_rng(1)
    a = rng.standard_normal((200, 200))
    b = rng.standard_normal((200, 50))
    x = np.linalg.solve(a, b)  # LAPACK through numpy's OpenBLAS
    assert np.allclose(a @ x, b, atol=1e-8)
    u, s, vt = np.linalg.svd(b, full_matrices=False)
    assert np.allclose((u * s) @ vt, b, atol=1e-8)
    lu, piv = scipy.linalg.lu_factor(a)  # scipy's own OpenBLAS
    assert np.allclose(scipy.linalg.lu_solve((lu, piv), b), x, atol=1e-6)
    m = scipy.sparse.random(500, 400, density=0.02, format="csr", random_state=3)
    v = rng.standard_normal(400)
    assert np.allclose(m @ v, m.toarray() @ v)
    assert np.allclose((m @ m.T).toarray(), m.toarray() @ m.toarray().T)
    f32 = rng.standard_normal((1000, 384)).astype(np.float32)
    assert (
        abs(
            float(np.dot(f32[0], f32[1]))
            - sum(float(p) * float(q) for p, q in zip(f32[0], f32[1], strict=True))
        )
        < 1e-3
    )
    return {"numpy": np.__version__, "nnz": int(m.nnz)}


@check
def check_rapidfuzz() -> dict[str, Any]:
    from rapidfuzz import fuzz, process
    from rapidfuzz.distance import Levenshtein

    ratio = fuzz.ratio("the matrix reloaded", "matrix reloaded, the")
    assert 60 < ratio < 100, ratio
    assert Levenshtein.distance("kitten", "sitting") == 3
    titles = [f"title number {i}" for i in range(200)] + ["the grand budapest hotel"]
    best = process.extractOne("grand budapest hotel", titles, scorer=fuzz.token_sort_ratio)
    assert best is not None and best[0] == "the grand budapest hotel", best
    # the bulk scorer has SIMD variants (dispatched on the CPU at run time)
    matrix = process.cdist(titles[:50], titles[:50], scorer=Levenshtein.distance)
    assert all(matrix[i][i] == 0 for i in range(50))
    assert matrix[1][2] == Levenshtein.distance(titles[1], titles[2])
    return {"ratio": round(ratio, 2)}


@check
def check_argon2() -> dict[str, Any]:
    from domain.identity.passwords import Argon2Params, Passwords

    passwords = Passwords(Argon2Params(time_cost=1, memory_kib=8192, parallelism=1))
    phc = passwords.hash("correct horse battery staple")
    assert phc.startswith("$argon2id$"), phc
    assert passwords.verify(phc, "correct horse battery staple")
    assert not passwords.verify(phc, "wrong horse battery staple")
    return {}


@check
def check_codec() -> dict[str, Any]:
    """fastavro through the project's Avro single-object codec: one real event."""
    from datetime import UTC, datetime

    import fastavro

    from core.codec import MARKER, AvroCodec

    codec = AvroCodec()
    payload = {
        "user_id": "u1",
        "content_id": "c1",
        "device_id": "tv",
        "position_s": 61.5,
        "duration_s": 5400.0,
        "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    }
    data = codec.encode("PlaybackProgressed", payload)
    assert data[:2] == MARKER
    event_type, decoded = codec.decode(data)
    assert event_type == "PlaybackProgressed", event_type
    assert {k: decoded[k] for k in payload} == payload, decoded
    return {"fastavro": fastavro.__version__, "bytes": len(data)}


@check
def check_psycopg() -> dict[str, Any]:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    assert psycopg.pq.__impl__ == "binary", psycopg.pq.__impl__
    version = psycopg.pq.version()
    assert version >= 170000, version
    # parsed by libpq (PQconninfoParse)
    parsed = conninfo_to_dict("host=/tmp port=5433 dbname=mgw application_name=probe")
    assert parsed["port"] == "5433", parsed
    return {"libpq": version, "impl": psycopg.pq.__impl__}


@check
def check_hiredis() -> dict[str, Any]:
    import hiredis

    reader = hiredis.Reader()
    reader.feed(b"*3\r\n$5\r\nhello\r\n:42\r\n*2\r\n+OK\r\n$-1\r\n")
    assert reader.gets() == [b"hello", 42, [b"OK", None]]
    assert reader.gets() is False
    return {"version": hiredis.__version__}


@check
def check_httptools() -> dict[str, Any]:
    # uvicorn parses every request with it (llhttp, C) when it is installed
    import httptools

    seen: dict[str, Any] = {"body": b""}

    class Sink:
        def on_url(self, url: bytes) -> None:
            seen["url"] = url

        def on_header(self, name: bytes, value: bytes) -> None:
            seen[name.decode().lower()] = value

        def on_body(self, body: bytes) -> None:
            seen["body"] += body

    parser = httptools.HttpRequestParser(Sink())
    parser.feed_data(
        b"POST /v1/playback/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 13\r\n\r\n" + b'{"kind":"go"}'
    )
    assert seen["url"] == b"/v1/playback/events" and seen["body"] == b'{"kind":"go"}'
    assert parser.get_method() == b"POST" and parser.should_keep_alive()
    return {"version": httptools.__version__}


@check
def check_uuid_utils() -> dict[str, Any]:
    import uuid

    import uuid_utils

    from core.ids import new_id

    ids = [new_id() for _ in range(100)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(ids)) == 100
    assert uuid_utils.uuid4().version == 4
    return {}


@check
def check_cryptography() -> dict[str, Any]:
    import jwt
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from domain.identity.sealing import derive_key, seal, unseal

    key = ec.generate_private_key(ec.SECP256R1())
    signature = key.sign(b"payload", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(signature, b"payload", ec.ECDSA(hashes.SHA256()))
    try:
        key.public_key().verify(signature, b"tampered", ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        pass
    else:
        raise AssertionError("a tampered message verified")
    token = jwt.encode({"sub": "u1"}, key, algorithm="ES256")
    assert jwt.decode(token, key.public_key(), algorithms=["ES256"]) == {"sub": "u1"}
    sealing_key = derive_key(b"a server secret of 32 bytes.....", "probe")
    assert unseal(sealing_key, seal(sealing_key, "secret", aad="a"), aad="a") == "secret"
    return {}


@check
def check_confluent_kafka() -> dict[str, Any]:
    import confluent_kafka

    version, _ = confluent_kafka.libversion()
    assert version, version
    return {"librdkafka": version}


# Also loaded on the default path (imported by `mgw up`, or by uvicorn's defaults):


@check
def check_pydantic_core() -> dict[str, Any]:
    import pydantic

    class Model(pydantic.BaseModel):
        name: str
        year: int
        tags: list[str] = []

    m = Model.model_validate_json('{"name": "x", "year": "1999", "tags": ["a"]}')
    assert m.year == 1999 and m.tags == ["a"]
    return {"version": pydantic.VERSION}


@check
def check_uvloop() -> dict[str, Any]:
    """uvicorn's default loop ("auto") is uvloop when it is installed."""
    import asyncio

    import uvloop

    async def echo() -> bytes:
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.readline())
            await w.drain()
            w.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        line = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        return line

    assert uvloop.run(echo()) == b"ping\n"
    return {"version": uvloop.__version__}


@check
def check_cramjam() -> dict[str, Any]:
    """lz4 for aiokafka, imported with it."""
    import cramjam

    data = b"media gateway " * 1000
    packed = cramjam.lz4.compress(data)
    assert len(packed) < len(data)
    assert bytes(cramjam.lz4.decompress(packed)) == data
    return {}


@check
def check_stdlib_native() -> dict[str, Any]:
    import hashlib
    import ssl
    import zlib

    assert (
        hashlib.sha256(b"abc").hexdigest()
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert zlib.decompress(zlib.compress(b"x" * 1000)) == b"x" * 1000
    ssl.create_default_context()
    assert math.isclose(math.fsum([0.1] * 10), 1.0)
    return {"openssl": ssl.OPENSSL_VERSION}


@check
def check_psutil() -> dict[str, Any]:
    """pgserver uses it to find its server processes."""
    import os

    import psutil

    proc = psutil.Process(os.getpid())
    assert proc.memory_info().rss > 0
    return {}


def main() -> int:
    results: dict[str, dict[str, Any]] = {}
    for name, fn in CHECKS.items():
        print(f"probe: {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            details = fn()
            result: dict[str, Any] = {"ok": True, **details}
        except Exception as exc:
            traceback.print_exc()
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.perf_counter() - started, 2)
        results[name] = result
    ok = all(r["ok"] for r in results.values())
    print(json.dumps({"ok": ok, "checks": results}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
