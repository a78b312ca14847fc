-- Files sent in chats (issue 14). The bytes live in the blob store (files_dir), named by id;
-- this row says whose they are. visitor_id is the visitor whose chat the file belongs to (the
-- uploader, or the visitor of the agent's chat), so erasure finds every file of a visitor.
-- conversation_id is set when the file is attached to a message (sent_at) or, for an agent's
-- upload, at upload time; an upload never sent is deleted by housekeeping.
CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    uploader_type TEXT NOT NULL,
    uploader_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    conversation_id TEXT,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION
);
CREATE INDEX attachments_workspace ON attachments (workspace_id, visitor_id);
CREATE INDEX attachments_conversation ON attachments (conversation_id);
