-- Triggers (issue 16): when each trigger last fired for each visitor, so the per-visitor rate
-- limit (a trigger's cooldown_s) holds across restarts. One row per (visitor, trigger).
CREATE TABLE trigger_firings (
    workspace_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL REFERENCES visitors (id),
    trigger_id TEXT NOT NULL,
    fired_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workspace_id, visitor_id, trigger_id)
);
CREATE INDEX trigger_firings_recent ON trigger_firings (workspace_id, fired_at);
