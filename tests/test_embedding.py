"""core.embedding with the real model: shape, order, meaning, caches, integrity, providers."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from core.embedding import (
    DIMS,
    MODEL_ID,
    TOKENIZER_PATH,
    TOKENIZER_SHA256,
    EmbeddingCache,
    EmbeddingServiceError,
    HttpEmbedder,
    MiniLMEmbedder,
    ModelIntegrityError,
    QueryEmbeddingCache,
    Vectors,
    embed_cached,
    load_embedder,
    shared_embedder,
    text_hash,
    verified_bytes,
)

TOY_STORY = (
    "Led by Woody, Andy's toys live happily in his room until Andy's birthday brings Buzz "
    "Lightyear onto the scene. Afraid of losing his place in Andy's heart, Woody plots against "
    "Buzz."
)
SAVING_PRIVATE_RYAN = (
    "As U.S. troops storm the beaches of Normandy, three brothers lie dead on the battlefield, "
    "with a fourth trapped behind enemy lines. Ranger captain John Miller and seven men are "
    "tasked with penetrating German-held territory and bringing the boy home."
)


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return shared_embedder()


class CountingEmbedder:
    """A real embedder that records what it was asked to encode."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dims = inner.dims
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        return self.inner.encode(texts)


def _cosine_rows(a: Vectors, b: Vectors) -> Vectors:
    result: Vectors = np.sum(a * b, axis=1)
    return result


def test_vectors_have_the_model_dims_and_unit_length(embedder: MiniLMEmbedder) -> None:
    vectors = embedder.encode(["Toy Story", TOY_STORY, ""])
    assert embedder.model_id == MODEL_ID == "all-MiniLM-L6-v2-onnx-int8"
    assert embedder.dims == DIMS == 384
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_input_gives_an_empty_matrix(embedder: MiniLMEmbedder) -> None:
    vectors = embedder.encode([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_rows_come_back_in_the_callers_order_across_batches() -> None:
    small_batches = MiniLMEmbedder(batch_size=2)
    texts = [SAVING_PRIVATE_RYAN, "Jaws", TOY_STORY, "a shark", "war film " * 40, "toys"]
    together = small_batches.encode(texts)
    alone = np.vstack([small_batches.encode([text]) for text in texts])
    # int8 activations are quantised per batch, so padding mates move the last digits only
    assert _cosine_rows(together, alone).min() > 0.99
    # and every row is closest to its own text, not to a neighbour in its length-sorted batch
    assert list(np.argmax(together @ alone.T, axis=1)) == list(range(len(texts)))


def test_similar_texts_are_closer_than_unrelated_ones(embedder: MiniLMEmbedder) -> None:
    query, toys, war = embedder.encode(
        ["toys come alive when nobody is watching", TOY_STORY, SAVING_PRIVATE_RYAN]
    )
    assert float(query @ toys) > float(query @ war) + 0.2


def test_concurrent_callers_get_the_same_vectors(embedder: MiniLMEmbedder) -> None:
    texts = [TOY_STORY, SAVING_PRIVATE_RYAN, "Jaws", "a shark attacks swimmers"]
    expected = embedder.encode(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: embedder.encode(texts), range(8)))
    for result in results:
        assert _cosine_rows(result, expected).min() > 0.9999


def test_longer_token_limit_is_a_different_vector_space_id() -> None:
    assert MiniLMEmbedder(max_tokens=256).model_id == f"{MODEL_ID}:max_tokens=256"
    with pytest.raises(ValueError, match="max_tokens"):
        MiniLMEmbedder(max_tokens=1024)


def test_a_model_file_with_the_wrong_sha256_is_refused(tmp_path: Path) -> None:
    impostor = tmp_path / "model.onnx"
    impostor.write_bytes(b"not the pinned model")
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch") as caught:
        verified_bytes(impostor, "0" * 64)
    assert str(impostor) in str(caught.value)
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        MiniLMEmbedder(model_path=impostor, model_sha256="0" * 64)
    good = hashlib.sha256(impostor.read_bytes()).hexdigest()
    assert verified_bytes(impostor, good) == b"not the pinned model"


def test_the_shipped_tokenizer_matches_its_pinned_sha256() -> None:
    assert verified_bytes(TOKENIZER_PATH, TOKENIZER_SHA256)
    with pytest.raises(ModelIntegrityError, match="tokenizer.json"):
        MiniLMEmbedder(tokenizer_sha256="f" * 64)


def test_load_embedder_names_the_known_providers() -> None:
    with pytest.raises(ValueError, match="nope.*minilm, http"):
        load_embedder("nope")
    assert load_embedder() is shared_embedder() is load_embedder("minilm")


def test_text_hash_is_the_sha256_of_the_exact_text() -> None:
    assert text_hash("Jaws") == hashlib.sha256(b"Jaws").hexdigest()
    assert text_hash("Jaws ") != text_hash("Jaws")


def test_cache_round_trip_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "data" / "embeddings.sqlite3"
    vector = np.arange(384, dtype=np.float32) / 1000
    with EmbeddingCache(path, MODEL_ID, 384) as cache:
        cache.put_many({"h1": vector})
        assert cache.get_many(["h1", "h2"]).keys() == {"h1"}
        with pytest.raises(ValueError, match="shape"):
            cache.put_many({"h3": np.zeros(10, dtype=np.float32)})
    with EmbeddingCache(path, MODEL_ID, 384) as reopened:
        found = reopened.get_many(["h1"])
        np.testing.assert_array_equal(found["h1"], vector)
        assert found["h1"].dtype == np.float32
    with EmbeddingCache(path, "another-model", 384) as other:
        assert other.get_many(["h1"]) == {}


def test_embed_cached_encodes_each_distinct_text_once(
    embedder: MiniLMEmbedder, tmp_path: Path
) -> None:
    counting = CountingEmbedder(embedder)
    texts = ["Jaws", TOY_STORY, "Jaws", SAVING_PRIVATE_RYAN]
    with EmbeddingCache.in_data_dir(tmp_path, counting) as cache:
        first, encoded = embed_cached(counting, cache, texts)
        assert encoded == 3
        assert counting.calls == [["Jaws", TOY_STORY, SAVING_PRIVATE_RYAN]]
        np.testing.assert_array_equal(first[0], first[2])
        second, encoded_again = embed_cached(counting, cache, texts)
        assert encoded_again == 0
        assert len(counting.calls) == 1
        np.testing.assert_array_equal(first, second)
    # a rebuild in a new process opens the same file and still encodes nothing
    with EmbeddingCache.in_data_dir(tmp_path, counting) as cache:
        _, encoded_after_reopen = embed_cached(counting, cache, [*texts, "Alien"])
        assert encoded_after_reopen == 1
        assert counting.calls[-1] == ["Alien"]


def test_embed_cached_without_a_cache_still_deduplicates(embedder: MiniLMEmbedder) -> None:
    counting = CountingEmbedder(embedder)
    vectors, encoded = embed_cached(counting, None, ["a", "b", "a"])
    assert (vectors.shape, encoded) == ((3, 384), 2)
    empty, none = embed_cached(counting, None, [])
    assert (empty.shape, none) == ((0, 384), 0)


def test_embed_cached_refuses_a_cache_of_another_model(
    embedder: MiniLMEmbedder, tmp_path: Path
) -> None:
    with (
        EmbeddingCache(tmp_path / "e.sqlite3", "other-model", 384) as cache,
        pytest.raises(ValueError, match="other-model"),
    ):
        embed_cached(embedder, cache, ["Jaws"])


def test_query_cache_skips_the_model_for_repeated_queries(embedder: MiniLMEmbedder) -> None:
    counting = CountingEmbedder(embedder)
    queries = QueryEmbeddingCache(counting, maxsize=2)
    first = queries.embed("shark movie")
    again = queries.embed("shark movie")
    np.testing.assert_array_equal(first, again)
    assert first.shape == (384,)
    assert (queries.hits, queries.misses, len(counting.calls)) == (1, 1, 1)
    queries.encode(["toys", "war"])  # evicts "shark movie"
    queries.embed("shark movie")
    assert counting.calls[-1] == ["shark movie"]


class _FakeOpenAIHandler(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible /embeddings service: answers in reverse index order."""

    seen: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        data = [
            {"index": i, "embedding": [float(len(text)), 1.0, 0.0]}
            for i, text in enumerate(body["input"])
        ]
        payload = json.dumps({"data": data[::-1], "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def embeddings_service() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAIHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeOpenAIHandler.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_provider_speaks_the_openai_embeddings_api(embeddings_service: str) -> None:
    remote = load_embedder(
        "http", base_url=embeddings_service, api_key="k-123", model="emb-small", dims=3
    )
    vectors = remote.encode(["abc", "a"])
    assert remote.model_id == "emb-small"
    assert _FakeOpenAIHandler.seen == [
        {
            "path": "/v1/embeddings",
            "auth": "Bearer k-123",
            "body": {"model": "emb-small", "input": ["abc", "a"]},
        }
    ]
    np.testing.assert_allclose(vectors[0], np.array([3, 1, 0]) / np.sqrt(10), rtol=1e-6)
    np.testing.assert_allclose(vectors[1], np.array([1, 1, 0]) / np.sqrt(2), rtol=1e-6)
    with pytest.raises(EmbeddingServiceError, match="expected 1 vectors of 5 dims"):
        HttpEmbedder(base_url=embeddings_service, model="m", dims=5).encode(["x"])


def test_http_provider_only_accepts_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        load_embedder("http", base_url="file:///etc", model="m", dims=3)
