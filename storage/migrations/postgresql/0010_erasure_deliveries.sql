-- Data protection (issue 15): a webhook delivery names the conversation it is about, so that
-- erasing a visitor also deletes the deliveries still queued or logged for their chats.
-- Deliveries queued before this version: taken from their payload (always JSON until now).
ALTER TABLE webhook_deliveries ADD COLUMN conversation_id TEXT;
UPDATE webhook_deliveries SET conversation_id = payload::jsonb #>> '{data,conversation_id}'
    WHERE payload LIKE '{%';
CREATE INDEX webhook_deliveries_conversation ON webhook_deliveries (workspace_id, conversation_id);
