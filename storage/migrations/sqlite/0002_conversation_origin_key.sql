-- Idempotent conversation starts: a conversation opened by a command that carries a client id
-- (an agent's start_chat, a visitor's offline_message) records that command's key, unique per
-- workspace, so a retry (after a reconnect or a restart) finds the conversation it created.
ALTER TABLE conversations ADD COLUMN origin_key TEXT;
CREATE UNIQUE INDEX conversations_origin ON conversations (workspace_id, origin_key);
