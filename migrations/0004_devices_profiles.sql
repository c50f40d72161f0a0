-- The host device registry and container profiles.
--
-- Both tables carry a `revision` that every change bumps: it is the ETag of
-- the record, and writes guarded by `If-Match` only succeed while the stored
-- revision is still the one the writer read (`UPDATE … WHERE revision = ?`),
-- so concurrent writers never lose an update. A device's `last_seen` alone
-- moves without a new revision (every scan moves it; bumping would make
-- every operator's `If-Match` stale once a scan ran).
--
-- Maps (labels, attributes) and the profile's settings are JSON text
-- columns, read and written whole by `crates/homeserver-sqlite`.

CREATE TABLE devices (
    id TEXT PRIMARY KEY NOT NULL,        -- <kind>-<16 hex>, stable for the same hardware
    kind TEXT NOT NULL
        CHECK (kind IN ('disk', 'partition', 'network', 'usb', 'gpu', 'serial', 'input', 'other')),
    name TEXT NOT NULL,                  -- kernel name (sda, eth0, card0)
    alias TEXT,                          -- the operator's name for it
    vendor TEXT,
    model TEXT,
    serial TEXT,
    path TEXT,                           -- device node (/dev/sda)
    enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    present INTEGER NOT NULL CHECK (present IN (0, 1)),
    labels TEXT NOT NULL,                -- JSON object of strings (the operator's)
    attributes TEXT NOT NULL,            -- JSON object of strings (discovery facts)
    first_seen INTEGER NOT NULL,         -- Unix ms
    last_seen INTEGER NOT NULL,          -- Unix ms
    revision INTEGER NOT NULL CHECK (revision >= 1)
) STRICT;

CREATE TABLE profiles (
    name TEXT PRIMARY KEY NOT NULL
        CHECK (length(name) BETWEEN 1 AND 64 AND name GLOB '[a-z0-9]*' AND name NOT GLOB '*[^a-z0-9_-]*'),
    description TEXT NOT NULL,
    config TEXT NOT NULL,                -- JSON of the settings overlay (unset scalars left out)
    is_default INTEGER NOT NULL CHECK (is_default IN (0, 1)),
    created_at INTEGER NOT NULL,         -- Unix ms
    updated_at INTEGER NOT NULL,
    revision INTEGER NOT NULL CHECK (revision >= 0)
) STRICT;

-- At most one default profile, whatever the code does: promoting a second
-- one without demoting the first fails.
CREATE UNIQUE INDEX profiles_one_default ON profiles (is_default) WHERE is_default = 1;
