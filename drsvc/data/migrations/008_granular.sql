-- drsvc catalog, migration 8: granular restore (drsvc/granular/). Who looked at or took what from
-- which point, and when: every `points ls|diff`, `dump`, `mount` and single-object restore writes a
-- row to point_access (refusals too); object restores also keep their own record with timing.

CREATE TABLE point_access (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,                 -- ISO-8601 UTC
    actor       TEXT NOT NULL,                 -- the operator (sudo caller first)
    tenant      TEXT,                          -- the --tenant scope given, NULL for fleet scope
    action      TEXT NOT NULL,                 -- ls | diff | dump | mount | restore-objects
    desktop_id  TEXT,                          -- no foreign key: refused requests name unknown ones too
    point_id    TEXT,
    detail      TEXT NOT NULL DEFAULT '{}',    -- JSON: prefix, object names, mount point, ...
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed', 'running'))
);
CREATE INDEX point_access_desktop ON point_access (desktop_id, at);

CREATE TABLE object_restores (
    id           INTEGER PRIMARY KEY,
    desktop_id   TEXT NOT NULL REFERENCES desktops (id),
    point_id     TEXT NOT NULL REFERENCES points (id),
    target       TEXT NOT NULL,                -- rados://POOL/NS (in place) or the --to-dir directory
    mode         TEXT NOT NULL CHECK (mode IN ('keep', 'overwrite', 'to-dir')),
    tier         TEXT,                         -- snapshot | hot | cold: the copy that served the data
    objects      TEXT NOT NULL DEFAULT '[]',   -- JSON: [{name, size, kept_as, status}]
    bytes        INTEGER NOT NULL DEFAULT 0,
    requested_by TEXT NOT NULL,
    tenant       TEXT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    seconds      REAL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed')),
    error        TEXT
);
CREATE INDEX object_restores_desktop ON object_restores (desktop_id, started_at);
