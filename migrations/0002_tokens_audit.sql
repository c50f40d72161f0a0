-- API tokens and the audit log.
--
-- Tokens are stored by the SHA-256 of their secret (hex), never the secret.
-- `token_revision` holds one counter that every create and revoke bumps, so
-- a running service notices changes made by another process (the CLI)
-- without reading every token.

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,          -- comma-separated: read,operate,admin
    created_at INTEGER NOT NULL,   -- Unix ms
    expires_at INTEGER,            -- Unix ms, NULL: never
    revoked_at INTEGER             -- Unix ms, NULL: active
) STRICT;

CREATE TABLE token_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
) STRICT;
INSERT INTO token_revision (id, revision) VALUES (1, 0);

-- One row per mutating request. Query strings are never stored.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,           -- Unix ms
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    request_id TEXT,
    client_ip TEXT
) STRICT;
CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
