-- Outgoing mail (web/mail.py): a durable outbox the mail worker drains with retries and
-- backoff; rows stay as the delivery log. dedupe_key makes enqueueing idempotent (one notice per
-- offline message however often it is retried or rescanned).
CREATE TABLE mail_outbox (
    id TEXT PRIMARY KEY,
    workspace_id TEXT,
    conversation_id TEXT,
    kind TEXT NOT NULL,
    dedupe_key TEXT UNIQUE,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION
);
CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_at);
CREATE INDEX mail_outbox_ws ON mail_outbox (workspace_id, created_at DESC, id DESC);

-- Single-use links mailed to agents: password reset and invitation (only the SHA-256 of the
-- token is stored).
CREATE TABLE agent_tokens (
    token_hash TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    agent_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION
);
CREATE INDEX agent_tokens_agent ON agent_tokens (workspace_id, agent_id);

-- The offline-message inbox: one row per offline message or unanswered chat, made by the mail
-- worker's scan of closed conversations.
CREATE TABLE inbox_items (
    conversation_id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    assignee_id TEXT,
    replies INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX inbox_items_ws ON inbox_items (workspace_id, status, created_at DESC);

-- The mail worker's scan for new offline messages and missed chats (every mail_poll_interval_s).
CREATE INDEX conversations_inbox ON conversations (closed_at)
    WHERE close_reason IN ('offline', 'missed');
