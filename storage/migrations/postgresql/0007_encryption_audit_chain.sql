-- Tamper-evident audit log: each entry is chained to the previous one of its workspace by hash
-- (storage/_audit.py). Entries written before this migration are chained at start-up.
ALTER TABLE audit_log ADD COLUMN seq BIGINT;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE INDEX audit_log_chain ON audit_log (workspace_id, seq);

-- One row per chain: its last entry. chain is the workspace id, '' for server-wide entries.
CREATE TABLE audit_heads (
    chain TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

-- Encryption at rest (storage/crypto.py): one data key per workspace, wrapped by the master
-- key (which is never stored here). Deleting a row makes that workspace's sealed values
-- unreadable (crypto-shredding).
CREATE TABLE data_keys (
    workspace_id TEXT PRIMARY KEY,
    wrapped TEXT NOT NULL,
    master_key_id TEXT NOT NULL
);

-- Blind index: message bodies are sealed, so search indexes search_terms instead: the keyed
-- tokens of the body's words (storage/crypto.py). Events stored before this migration are
-- sealed and indexed at the next server start (or `livechat keys migrate`).
ALTER TABLE events DROP COLUMN tsv;
ALTER TABLE events ADD COLUMN search_terms TEXT;
ALTER TABLE events ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', coalesce(search_terms, ''))
) STORED;
CREATE INDEX events_tsv ON events USING gin (tsv);
