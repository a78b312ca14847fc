-- Initial schema. Every tenant table carries workspace_id; JSON is stored as TEXT so exports
-- round-trip byte-exactly; times are UTC Unix seconds.
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    widget_key TEXT NOT NULL UNIQUE,
    identity_secret TEXT NOT NULL,
    allowed_origins TEXT NOT NULL DEFAULT '[]',
    settings TEXT NOT NULL DEFAULT '{}',
    agent_seats INTEGER NOT NULL,
    max_concurrent_chats INTEGER NOT NULL,
    retention_days INTEGER,
    status TEXT NOT NULL,
    terminated_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE agent_groups (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name TEXT NOT NULL,
    fallback_group_id TEXT
);
CREATE INDEX agent_groups_ws ON agent_groups (workspace_id);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    email TEXT,
    role TEXT NOT NULL,
    password_hash TEXT,
    enabled BOOLEAN NOT NULL,
    max_chats INTEGER NOT NULL,
    group_ids TEXT NOT NULL DEFAULT '[]',
    avatar_url TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    password_changed_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX agents_ws ON agents (workspace_id);

CREATE TABLE visitors (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    token_hash TEXT,
    external_id TEXT,
    name TEXT,
    email TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    user_agent TEXT,
    ip TEXT,
    visits INTEGER NOT NULL,
    first_seen_at DOUBLE PRECISION NOT NULL,
    last_seen_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX visitors_token ON visitors (workspace_id, token_hash);
CREATE INDEX visitors_external ON visitors (workspace_id, external_id);

CREATE TABLE page_views (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL REFERENCES visitors (id),
    url TEXT NOT NULL,
    title TEXT,
    referrer TEXT,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX page_views_visitor ON page_views (workspace_id, visitor_id, at);

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    visitor_id TEXT NOT NULL REFERENCES visitors (id),
    state TEXT NOT NULL,
    close_reason TEXT,
    group_id TEXT,
    assignee_id TEXT,
    previous_assignee_id TEXT,
    participant_ids TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    rating INTEGER,
    rating_comment TEXT,
    last_seq BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    first_response_at DOUBLE PRECISION,
    closed_at DOUBLE PRECISION,
    last_activity_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX conversations_ws_created ON conversations (workspace_id, created_at DESC, id DESC);
CREATE INDEX conversations_ws_visitor ON conversations (workspace_id, visitor_id);
CREATE INDEX conversations_ws_state ON conversations (workspace_id, state);
CREATE INDEX conversations_ws_activity ON conversations (workspace_id, last_activity_at);

CREATE TABLE events (
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    visibility TEXT NOT NULL,
    author_type TEXT NOT NULL,
    author_id TEXT,
    body TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    client_msg_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, client_msg_id)
);

-- Full-text search over message-like events: a generated tsvector with a GIN index ('simple'
-- configuration: chats are multilingual, so no language-specific stemming).
ALTER TABLE events ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    CASE WHEN kind IN ('message', 'offline_message', 'note')
    THEN to_tsvector('simple', coalesce(body, '')) END
) STORED;
CREATE INDEX events_tsv ON events USING gin (tsv);
CREATE INDEX events_ws_created ON events (workspace_id, created_at DESC);

CREATE TABLE canned_responses (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    shortcut TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX canned_responses_ws ON canned_responses (workspace_id);

CREATE TABLE routing_decisions (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    agent_id TEXT,
    reason TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX routing_decisions_conv ON routing_decisions (workspace_id, conversation_id, at);

CREATE TABLE bans (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION
);
CREATE INDEX bans_value ON bans (workspace_id, kind, value);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    workspace_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    ip TEXT,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX audit_log_ws ON audit_log (workspace_id, at DESC, id DESC);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    agent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL DEFAULT '[]',
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION
);
CREATE INDEX api_tokens_ws ON api_tokens (workspace_id);

CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    last_seen_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_agent ON sessions (agent_id);

CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
