-- Vectors live in the vector store (Qdrant Edge in-process by default; a Qdrant server; or
-- pgvector's own search_vectors table, opt-in): see projections/search_vectors.py. The
-- embedded PostgreSQL never runs pgvector code, whose build there needs AVX-512.
-- Dropping the column drops its HNSW index; no vector function runs.
ALTER TABLE search_docs DROP COLUMN IF EXISTS embedding;
-- every title gets its vector again, in the store
UPDATE search_docs SET embedded_hash = NULL, payload_synced = FALSE;
