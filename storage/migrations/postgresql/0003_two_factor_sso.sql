-- Two-factor login and single sign-on (docs/security.md).
-- One row per agent that started TOTP enrollment; confirmed_at is NULL until the first code is
-- confirmed. totp_secret is the only place the shared secret lives (the column to encrypt at
-- rest); recovery_hashes holds SHA-256 hashes of the unused one-time recovery codes; last_step
-- is the newest TOTP time step accepted (a code is never accepted twice).
CREATE TABLE agent_two_factor (
    agent_id TEXT PRIMARY KEY REFERENCES agents (id),
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    totp_secret TEXT NOT NULL,
    confirmed_at DOUBLE PRECISION,
    recovery_hashes TEXT NOT NULL DEFAULT '[]',
    last_step BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX agent_two_factor_ws ON agent_two_factor (workspace_id);

-- OpenID Connect per workspace; client_secret is the column to encrypt at rest.
CREATE TABLE workspace_sso (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id),
    slug TEXT NOT NULL UNIQUE,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    role_claim TEXT NOT NULL,
    role_map TEXT NOT NULL DEFAULT '{}',
    default_role TEXT,
    sso_only BOOLEAN NOT NULL,
    enabled BOOLEAN NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

-- Which agent an identity provider's subject is (just-in-time agents and linked accounts).
CREATE TABLE sso_identities (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents (id),
    created_at DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX sso_identities_subject ON sso_identities (workspace_id, issuer, subject);
