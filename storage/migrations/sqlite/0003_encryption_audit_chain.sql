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
