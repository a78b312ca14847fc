-- Cluster ownership (issue 13; see the PostgreSQL file). SQLite is never clustered (one process),
-- but has the same table so both backends run the same append program.
CREATE TABLE cluster_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX cluster_leases_holder ON cluster_leases (holder);
