-- Containers homeserver knows (stable ids and metadata; the state is always
-- read from the runtime) and the operations that act on them.

CREATE TABLE containers (
    id TEXT PRIMARY KEY NOT NULL,        -- UUID, stable across restarts
    runtime TEXT NOT NULL,               -- docker | lxc
    runtime_id TEXT NOT NULL,            -- Docker id or LXC name
    name TEXT NOT NULL,
    image TEXT,
    template TEXT,
    managed INTEGER NOT NULL,            -- 0/1: created through homeserver
    profiles TEXT NOT NULL,              -- JSON array of profile names
    config TEXT NOT NULL,                -- JSON of the effective config
    created_at INTEGER NOT NULL,         -- Unix ms
    updated_at INTEGER NOT NULL,
    UNIQUE (runtime, runtime_id)
) STRICT;

CREATE TABLE operations (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    progress_percent INTEGER NOT NULL,
    message TEXT NOT NULL,
    containers TEXT NOT NULL,            -- JSON array of container ids
    output TEXT NOT NULL,                -- JSON: null | {"container": id} | {"items": [...]}
    error_code TEXT,
    error_message TEXT,
    may_cancel INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
) STRICT;
CREATE INDEX operations_created ON operations (created_at);
CREATE INDEX operations_status ON operations (status);
