-- Webhooks: subscriptions, a durable outbox of deliveries, a log of attempts, and the
-- dispatcher's cursor over the events table (events are read after commit, never before; see
-- docs/webhooks.md).
--
-- An event's global position: ``pos``, an AUTOINCREMENT alias of the rowid, so a number is never
-- reused after the newest events are deleted (erasure, retention) and a cursor cannot skip a
-- later event. The table is rebuilt with the old rowids kept, so the FTS index stays valid.
CREATE TABLE events_new (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    visibility TEXT NOT NULL,
    author_type TEXT NOT NULL,
    author_id TEXT,
    body TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    client_msg_id TEXT,
    created_at REAL NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, client_msg_id)
);
INSERT INTO events_new (pos, workspace_id, conversation_id, seq, kind, visibility, author_type,
    author_id, body, data, client_msg_id, created_at)
SELECT rowid, workspace_id, conversation_id, seq, kind, visibility, author_type, author_id, body,
    data, client_msg_id, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE TRIGGER events_fts_insert AFTER INSERT ON events
WHEN new.kind IN ('message', 'offline_message', 'note') AND new.body IS NOT NULL
BEGIN
    INSERT INTO events_fts (rowid, body) VALUES (new.rowid, new.body);
END;
CREATE TRIGGER events_fts_delete AFTER DELETE ON events
WHEN old.kind IN ('message', 'offline_message', 'note') AND old.body IS NOT NULL
BEGIN
    INSERT INTO events_fts (events_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
END;

CREATE TABLE webhook_subscriptions (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    url TEXT NOT NULL,
    event_types TEXT NOT NULL DEFAULT '[]',
    description TEXT,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_at REAL,
    enabled INTEGER NOT NULL,
    disabled_reason TEXT,
    consecutive_failures INTEGER NOT NULL,
    from_pos INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX webhook_subscriptions_ws ON webhook_subscriptions (workspace_id);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions (id),
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at REAL,
    last_status INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_sub ON webhook_deliveries (workspace_id, subscription_id, created_at);

CREATE TABLE webhook_attempts (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id),
    attempt INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT,
    latency_ms REAL NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);

CREATE TABLE webhook_cursor (
    name TEXT PRIMARY KEY,
    pos INTEGER NOT NULL
);
-- Start after the events that exist now: a new server delivers only what happens from here.
INSERT INTO webhook_cursor (name, pos) SELECT 'events', COALESCE(MAX(pos), 0) FROM events;
