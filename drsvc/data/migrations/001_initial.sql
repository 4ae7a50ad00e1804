-- drsvc catalog, migration 1: desktops, jobs, pool snapshots, recovery points and their tiers
-- and artifacts, tier moves, drills, leases.
-- Times are ISO-8601 UTC strings ("2026-11-27T17:30:12.123456Z"): sortable as text.

CREATE TABLE desktops (
    id          TEXT PRIMARY KEY,              -- drsvc.desktop label
    runtime_url TEXT NOT NULL,                 -- podman:///run/podman/podman.sock, crio://...
    container   TEXT NOT NULL,                 -- the runtime's name for the container
    volume      TEXT,                          -- rados://POOL/NAMESPACE
    tenant      TEXT,
    labels      TEXT NOT NULL DEFAULT '{}',    -- JSON object of all container labels
    image       TEXT,
    node        TEXT,                          -- Kubernetes node (crio://)
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    gone_since  TEXT                           -- set when discovery no longer finds it
);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,               -- backup | tier | prune | restore | drill | verify | gc
    policy        TEXT,
    status        TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'partial', 'interrupted')),
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    attempt       INTEGER NOT NULL DEFAULT 1,
    fencing_token INTEGER,
    host          TEXT,
    pid           INTEGER,
    error         TEXT,
    detail        TEXT NOT NULL DEFAULT '{}'   -- JSON
);
CREATE INDEX jobs_kind_started ON jobs (kind, started_at);

CREATE TABLE pool_snapshots (
    id         INTEGER PRIMARY KEY,
    pool       TEXT NOT NULL,
    name       TEXT NOT NULL,                  -- as shown by `rados lssnap`
    snap_id    INTEGER,
    taken_at   TEXT NOT NULL,
    job_id     INTEGER REFERENCES jobs (id),
    removed_at TEXT,
    UNIQUE (pool, name)
);

CREATE TABLE points (
    id               TEXT PRIMARY KEY,
    desktop_id       TEXT NOT NULL REFERENCES desktops (id),
    policy           TEXT,
    taken_at         TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'complete', 'failed', 'expired')),
    consistency      TEXT NOT NULL CHECK (consistency IN ('paired', 'crash')),
    reason           TEXT,                     -- why crash-consistent, or why failed
    pool_snapshot_id INTEGER REFERENCES pool_snapshots (id),
    job_id           INTEGER REFERENCES jobs (id),
    image            TEXT,                     -- base image identity of the container
    bytes            INTEGER NOT NULL DEFAULT 0,
    freeze_ms        REAL,
    checkpoint_ms    REAL,
    created_at       TEXT NOT NULL,
    completed_at     TEXT
);
CREATE INDEX points_desktop_taken ON points (desktop_id, taken_at);
CREATE INDEX points_status ON points (status);

CREATE TABLE point_tiers (
    point_id     TEXT NOT NULL REFERENCES points (id) ON DELETE CASCADE,
    tier         TEXT NOT NULL CHECK (tier IN ('hot', 'cold')),
    store_url    TEXT NOT NULL,
    stored_bytes INTEGER NOT NULL DEFAULT 0,   -- new bytes this point added to the store
    added_at     TEXT NOT NULL,
    retain_until TEXT,                         -- S3 object lock
    PRIMARY KEY (point_id, tier)
);

CREATE TABLE artifacts (
    point_id   TEXT NOT NULL REFERENCES points (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('checkpoint', 'volume', 'image')),
    name       TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    chunks     INTEGER NOT NULL,
    new_chunks INTEGER NOT NULL DEFAULT 0,
    new_bytes  INTEGER NOT NULL DEFAULT 0,
    digest     TEXT,
    PRIMARY KEY (point_id, kind, name)
);

CREATE TABLE tier_moves (
    id              INTEGER PRIMARY KEY,
    point_id        TEXT NOT NULL REFERENCES points (id) ON DELETE CASCADE,
    from_tier       TEXT NOT NULL,
    to_tier         TEXT NOT NULL,
    job_id          INTEGER REFERENCES jobs (id),
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    chunks_uploaded INTEGER NOT NULL DEFAULT 0,
    bytes_uploaded  INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed'))
);

CREATE TABLE drills (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    policy      TEXT,
    selection   TEXT NOT NULL,                 -- how desktops were chosen: sample N, all, list
    parallel    INTEGER NOT NULL DEFAULT 1,
    status      TEXT NOT NULL CHECK (status IN ('running', 'passed', 'failed', 'interrupted'))
);

CREATE TABLE drill_results (
    drill_id       INTEGER NOT NULL REFERENCES drills (id) ON DELETE CASCADE,
    desktop_id     TEXT NOT NULL REFERENCES desktops (id),
    point_id       TEXT REFERENCES points (id),
    tier           TEXT,
    rto_seconds    REAL,
    target_seconds REAL NOT NULL,
    rpo_seconds    REAL,                       -- age of the point when the drill started
    phases         TEXT NOT NULL DEFAULT '{}', -- JSON: phase -> seconds
    verified       INTEGER NOT NULL DEFAULT 0,
    passed         INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    PRIMARY KEY (drill_id, desktop_id)
);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,               -- what is protected, e.g. "scheduler"
    holder     TEXT NOT NULL,                  -- host:pid
    token      INTEGER NOT NULL,               -- fencing token, grows with every acquisition
    expires_at REAL NOT NULL                   -- unix time
);
