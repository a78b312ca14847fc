-- Cluster ownership (issue 13): one lease per conversation or workspace router, held by one
-- node at a time. ``epoch`` grows by one at every acquisition and is the fencing token: an
-- append carrying an older epoch is refused inside its transaction (storage/_leases.py), so a
-- paused or partitioned former owner can never commit after a takeover. Times are the
-- database's clock (seconds since the epoch), never a node's.
CREATE TABLE cluster_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX cluster_leases_holder ON cluster_leases (holder);
