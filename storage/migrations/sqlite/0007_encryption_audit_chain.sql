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
ALTER TABLE events ADD COLUMN search_terms TEXT;
DROP TRIGGER events_fts_insert;
DROP TRIGGER events_fts_delete;
DROP TABLE events_fts;
CREATE VIRTUAL TABLE events_fts USING fts5 (
    search_terms, content = 'events', content_rowid = 'rowid', tokenize = 'unicode61'
);
CREATE TRIGGER events_fts_insert AFTER INSERT ON events
WHEN new.search_terms IS NOT NULL
BEGIN
    INSERT INTO events_fts (rowid, search_terms) VALUES (new.rowid, new.search_terms);
END;
CREATE TRIGGER events_fts_delete AFTER DELETE ON events
WHEN old.search_terms IS NOT NULL
BEGIN
    INSERT INTO events_fts (events_fts, rowid, search_terms)
    VALUES ('delete', old.rowid, old.search_terms);
END;
CREATE TRIGGER events_fts_update AFTER UPDATE OF search_terms ON events
BEGIN
    INSERT INTO events_fts (events_fts, rowid, search_terms)
    SELECT 'delete', old.rowid, old.search_terms WHERE old.search_terms IS NOT NULL;
    INSERT INTO events_fts (rowid, search_terms)
    SELECT new.rowid, new.search_terms WHERE new.search_terms IS NOT NULL;
END;
